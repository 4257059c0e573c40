"""The joint law L(N, D) fitted to cells and asked about others: how every fit of a ladder is made, whether a set
of cells can carry the law, and predictive distributions for cells it was not fitted to, which combine the
uncertainty of the parameters (the fit's bootstrap resamples) with the scatter of single cells about the law.

A cell's predicted log-loss is drawn as log L(N, D; θ_b) + σ·t, where θ_b is a bootstrap solution drawn at random
and t a Student-t variate with the fit's residual degrees of freedom m − 5. σ² is the residual variance
SSR/(m − 5): dividing by the degrees of freedom rather than m undoes the shrinkage of residuals by the 5 fitted
parameters, and the t variate widens the tails for σ itself being estimated from few cells, as in the prediction
interval of a linear regression.

The cells' standard errors (`Cell.loss_se`) do not enter σ. Every cell is evaluated on the same validation tokens,
so the sampling error of that split is common to all of them: it shifts every cell's loss alike, which the law's
E absorbs and which the predicted cell shares, rather than scattering cells about the law one by one. Whatever
does scatter them is already in the residuals.

A resample of few cells can drive the fit to a degenerate solution, with A or B overflowed to inf or a term that
overflows at the predicted N and D, which predicts no finite loss there. The draws use only the solutions that
predict a finite loss at every target and count them; when none does, there is no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from abcmusic.scaling.cell import Cell, columns, distinct
from abcmusic.scaling.joint import (DEFAULT_BOOTSTRAP, DEFAULT_STARTS, PARAM_NAMES, JointFit, JointParams, fit_joint,
                                    predict_loss)

DRAWS = 4000
PREDICTION_PERCENTILES = (2.5, 97.5)
# A fit that predicts needs one residual degree of freedom beyond the 5 parameters to know its scatter, and two
# levels of N and of D to separate the terms at all.
MIN_CELLS = len(PARAM_NAMES) + 1
MIN_LEVELS = 2
# The law's D term (E, B, β) is only separated from its N term when D takes 3 values, and likewise for N.
IDENTIFYING_LEVELS = 3


@dataclass(frozen=True)
class FitSettings:
    """How every joint fit of a ladder is made: bootstrap resamples, optimised grid starts and the seed of both
    the resampling and the predictive draws."""

    n_bootstrap: int = DEFAULT_BOOTSTRAP
    max_starts: int = DEFAULT_STARTS
    seed: int = 0


@dataclass(frozen=True)
class Scatter:
    """The log-space scatter of fitted cells about the law: `rms` is sqrt(SSR/dof) with dof = cells − 5 (nan when
    dof is 0)."""

    rms: float
    dof: int


@dataclass(frozen=True)
class DrawSource:
    """The parameter solutions predictive draws come from: the `n_usable` of the fit's `n_solutions` that predict a
    finite loss at every target. Those are its bootstrap solutions, or its point estimate alone when it has none
    (`from_bootstrap` False), which leaves the parameters' uncertainty out. `reason` says why there are no draws
    when no solution is usable."""

    n_usable: int
    n_solutions: int
    from_bootstrap: bool
    reason: str | None

    def text(self) -> str:
        if not self.from_bootstrap:
            return "the point estimate alone (no bootstrap resamples), without the parameters' uncertainty"
        return f"{self.n_usable} of {self.n_solutions} bootstrap solutions"


@dataclass(frozen=True)
class PredictiveDraws:
    """Draws of the targets' log-losses, shape (draws, targets); None when `source` has no usable solution."""

    log_losses: np.ndarray | None
    source: DrawSource


def fit_cells(cells: Sequence[Cell], settings: FitSettings) -> JointFit:
    n, d, loss = columns(cells)
    return fit_joint(n, d, loss, n_bootstrap=settings.n_bootstrap, seed=settings.seed,
                     max_starts=settings.max_starts)


def too_few_reason(cells: Sequence[Cell]) -> str | None:
    """Why the cells cannot carry a predicting fit, or None when they can."""
    n_levels, d_levels = len(distinct([cell.n for cell in cells])), len(distinct([cell.d for cell in cells]))
    if len(cells) < MIN_CELLS:
        return (f"{len(cells)} cells: the law's 5 parameters and its scatter need at least {MIN_CELLS}")
    if n_levels < MIN_LEVELS or d_levels < MIN_LEVELS:
        return f"{n_levels} distinct N and {d_levels} distinct D: the law needs at least {MIN_LEVELS} of each"
    return None


def identification_warning(cells: Sequence[Cell]) -> str | None:
    """With 2 levels of D the law's E, B and β meet 2 equations (likewise A, α and E in N), so the fit picks one
    point of a curve of equally good solutions and its bootstrap intervals understate the uncertainty."""
    n_levels, d_levels = len(distinct([cell.n for cell in cells])), len(distinct([cell.d for cell in cells]))
    short = [f"{count} distinct {axis}" for axis, count in (("N", n_levels), ("D", d_levels))
             if count < IDENTIFYING_LEVELS]
    if not short:
        return None
    return (f"only {' and '.join(short)}: the law's terms are not all identified (each needs "
            f"{IDENTIFYING_LEVELS} levels), so its extrapolation and intervals are not to be trusted")


def scatter_about(fit: JointFit, cells: Sequence[Cell]) -> Scatter:
    """The scatter of the cells the fit was fitted to."""
    n, d, loss = columns(cells)
    residuals = np.log(loss) - np.log(predict_loss(fit.params, n, d))
    dof = len(cells) - len(PARAM_NAMES)
    return Scatter(rms=math.sqrt(float(residuals @ residuals) / dof) if dof > 0 else math.nan, dof=dof)


def usable_solutions(solutions: Sequence[JointParams], n: np.ndarray,
                     d: np.ndarray) -> tuple[tuple[JointParams, ...], np.ndarray]:
    """The solutions that predict a finite loss at every (n, d), and their log predictions, (solutions, points)."""
    # A degenerate solution predicts inf, or nan where inf·N^-α underflows to inf·0; such solutions are expected
    # and dropped here, so numpy's warnings about them are noise.
    with np.errstate(over="ignore", invalid="ignore"):
        predictions = np.array([predict_loss(params, n, d) for params in solutions],
                               dtype=float).reshape(len(solutions), len(n))
    keep = np.all(np.isfinite(predictions) & (predictions > 0), axis=1)
    return tuple(params for params, kept in zip(solutions, keep) if kept), np.log(predictions[keep])


def predictive_draws(fit: JointFit, scatter: Scatter, targets: Sequence[Cell], seed: int,
                     draws: int = DRAWS) -> PredictiveDraws:
    """Draws of the targets' log-losses under the law. One parameter solution is shared by all targets of a row,
    so sums over targets keep the correlation the parameters give them."""
    if scatter.dof < 1:
        raise ValueError("the scatter of the law needs more fitted cells than its 5 parameters")
    from_bootstrap = bool(fit.bootstrap_params)
    solutions = fit.bootstrap_params if from_bootstrap else (fit.params,)
    n, d, _ = columns(targets)
    usable, log_predictions = usable_solutions(solutions, n, d)
    kind = f"the {len(solutions)} bootstrap solutions" if from_bootstrap else "the point estimate"
    source = DrawSource(n_usable=len(usable), n_solutions=len(solutions), from_bootstrap=from_bootstrap,
                        reason=None if usable else f"none of {kind} predicts a finite loss at every target")
    if not usable:
        return PredictiveDraws(log_losses=None, source=source)
    rng = np.random.default_rng(seed)
    chosen = rng.integers(len(usable), size=draws)
    log_losses = log_predictions[chosen] + scatter.rms * rng.standard_t(scatter.dof, size=(draws, len(targets)))
    return PredictiveDraws(log_losses=log_losses, source=source)


def prediction_interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% interval of each target's loss from the log-loss draws of predictive_draws."""
    low, high = np.percentile(samples, PREDICTION_PERCENTILES, axis=0)
    return np.exp(low), np.exp(high)
