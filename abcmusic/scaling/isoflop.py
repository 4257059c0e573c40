"""IsoFLOP profiles (Hoffmann et al. 2022, approach 2) from the cells of a ladder: at fixed training compute C,
the loss of each size that reaches C, and the loss-optimal size from a parabola in log N through them.

A size reaches C when its cells bracket C; its loss there is the log-log interpolation of its L(C) between the
two neighbouring cells, never an extrapolation. Each size's compute is its cells' own FLOPs, so the profiles
hold whatever the FLOPs per token of each size are.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from abcmusic.scaling.cell import Cell, distinct

MIN_SIZES_PER_LEVEL = 3
DEFAULT_LEVELS = 8
# Equal compute levels from different cells differ in the last bits of their FLOP counts.
LOG_FLOP_TOLERANCE = 1e-9
CONFIDENCE = 0.95


@dataclass(frozen=True)
class IsoFlopProfile:
    """The sizes that reach `flop`, their interpolated losses, and the parabola's minimum: `n_opt` and `loss_min`
    are nan and `reason` says why when the minimum was not found."""

    flop: float
    sizes: tuple[str, ...]
    n: tuple[float, ...]
    loss: tuple[float, ...]
    n_opt: float
    loss_min: float
    reason: str | None

    @property
    def found(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class IsoFlopStudy:
    """The profiles and N_opt ∝ C^exponent fitted through their minima by least squares in log-log; the interval is
    the t interval of the slope (nan below 3 minima). `reason` says why no exponent was fitted."""

    profiles: tuple[IsoFlopProfile, ...]
    exponent: float
    exponent_ci_low: float
    exponent_ci_high: float
    reason: str | None

    @property
    def minima(self) -> tuple[IsoFlopProfile, ...]:
        return tuple(profile for profile in self.profiles if profile.found)


@dataclass(frozen=True)
class _SizeCurve:
    """One size's log loss against log compute at its distinct budgets, seeds averaged in log."""

    size: str
    n: float
    log_flop: np.ndarray
    log_loss: np.ndarray


def isoflop_study(cells: Sequence[Cell], n_levels: int = DEFAULT_LEVELS) -> IsoFlopStudy:
    """Profiles at up to n_levels log-spaced compute levels inside the range that at least 3 sizes reach."""
    curves = _size_curves(cells)
    levels = _levels(curves, n_levels)
    if not levels:
        return IsoFlopStudy(profiles=(), exponent=math.nan, exponent_ci_low=math.nan, exponent_ci_high=math.nan,
                            reason=f"no compute level is reached by {MIN_SIZES_PER_LEVEL} sizes: each size's "
                            "budgets must overlap in compute with two others'")
    profiles = tuple(_profile(curves, level) for level in levels)
    return _exponent(profiles)


def _size_curves(cells: Sequence[Cell]) -> list[_SizeCurve]:
    by_size: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        by_size[cell.size].append(cell)
    curves = []
    for size, size_cells in by_size.items():
        log_flop, log_loss = [], []
        for d in distinct([cell.d for cell in size_cells]):
            at_budget = [cell for cell in size_cells if math.isclose(cell.d, d, rel_tol=1e-9)]
            log_flop.append(float(np.mean([math.log(cell.flops) for cell in at_budget])))
            log_loss.append(float(np.mean([math.log(cell.loss) for cell in at_budget])))
        curves.append(_SizeCurve(size=size, n=size_cells[0].n, log_flop=np.array(log_flop),
                                 log_loss=np.array(log_loss)))
    return sorted(curves, key=lambda curve: curve.n)


def _reaches(curve: _SizeCurve, log_flop: float) -> bool:
    return (curve.log_flop[0] - LOG_FLOP_TOLERANCE <= log_flop <= curve.log_flop[-1] + LOG_FLOP_TOLERANCE)


def _levels(curves: list[_SizeCurve], n_levels: int) -> list[float]:
    """Log-spaced levels between the lowest and highest compute that 3 sizes reach, less any level in a gap of
    that range. The count of sizes changes only at the ends of their ranges, so those are the candidates."""
    ends = sorted({curve.log_flop[i] for curve in curves for i in (0, -1)})
    covered = [end for end in ends if sum(_reaches(curve, end) for curve in curves) >= MIN_SIZES_PER_LEVEL]
    if not covered:
        return []
    candidates = np.linspace(covered[0], covered[-1], n_levels) if covered[-1] > covered[0] else [covered[0]]
    return [float(math.exp(level)) for level in candidates
            if sum(_reaches(curve, level) for curve in curves) >= MIN_SIZES_PER_LEVEL]


def _profile(curves: list[_SizeCurve], flop: float) -> IsoFlopProfile:
    log_flop = math.log(flop)
    reached = [curve for curve in curves if _reaches(curve, log_flop)]
    losses = [math.exp(float(np.interp(log_flop, curve.log_flop, curve.log_loss))) for curve in reached]
    log_n = np.log([curve.n for curve in reached])
    curvature, slope, intercept = np.polyfit(log_n, losses, 2)
    n_opt = loss_min = math.nan
    reason = None
    vertex = -slope / (2.0 * curvature) if curvature != 0 else math.nan
    if not curvature > 0:
        reason = "minimum at the edge: the profile is not convex"
    elif vertex < log_n.min():
        reason = "minimum at the edge: below the smallest size"
    elif vertex > log_n.max():
        reason = "minimum at the edge: above the largest size"
    else:
        n_opt = math.exp(vertex)
        loss_min = intercept - slope**2 / (4.0 * curvature)
    return IsoFlopProfile(flop=flop, sizes=tuple(curve.size for curve in reached),
                          n=tuple(curve.n for curve in reached), loss=tuple(losses), n_opt=n_opt,
                          loss_min=loss_min, reason=reason)


def _exponent(profiles: tuple[IsoFlopProfile, ...]) -> IsoFlopStudy:
    minima = [profile for profile in profiles if profile.found]
    if len(minima) < 2:
        return IsoFlopStudy(profiles=profiles, exponent=math.nan, exponent_ci_low=math.nan,
                            exponent_ci_high=math.nan,
                            reason=f"{len(minima)} of {len(profiles)} profiles have a minimum inside the sizes; "
                            "an exponent needs 2")
    log_flop = np.log([profile.flop for profile in minima])
    log_n_opt = np.log([profile.n_opt for profile in minima])
    fit = stats.linregress(log_flop, log_n_opt)
    low = high = math.nan
    if len(minima) >= 3:
        half_width = stats.t.ppf(0.5 + CONFIDENCE / 2, len(minima) - 2) * fit.stderr
        low, high = fit.slope - half_width, fit.slope + half_width
    return IsoFlopStudy(profiles=profiles, exponent=float(fit.slope), exponent_ci_low=float(low),
                        exponent_ci_high=float(high), reason=None)
