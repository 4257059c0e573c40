"""The scaling law of one architecture from its ladder of cells, each a size trained to one token budget: first
how well the law predicts cells it was not fitted to, then the joint fit L(N, D) = E + A/N^α + B/D^β on every
cell, its compute-optimal frontier, IsoFLOP profiles as an independent estimate of that frontier, L(N) at each
budget, and whether repeated epochs fall off the law.

Prediction comes first because it is what tells whether to trust the rest: the law is refitted without the
largest size, and separately without the largest budget, and asked for the cells it did not see.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from abcmusic.scaling.cell import EPOCH_TOLERANCE, Cell, check_cells, distinct
from abcmusic.scaling.fit import ScalingFit, fit_power_law, json_safe
from abcmusic.scaling.isoflop import IsoFlopStudy, isoflop_study
from abcmusic.scaling.joint import (DEFAULT_BOOTSTRAP, DEFAULT_STARTS, PARAM_NAMES, BudgetAllocation, JointFit,
                                    ParamInterval, predict_loss, summarize_allocation)
from abcmusic.scaling.prediction import (DrawSource, FitSettings, Scatter, fit_cells, identification_warning,
                                         prediction_interval, predictive_draws, scatter_about, too_few_reason)
from abcmusic.scaling.repetition import RepetitionStudy, repetition_study

# The frontier's report budgets: the smallest, the geometric middle and the largest compute of the cells.
REPORT_BUDGET_COUNT = 3


@dataclass(frozen=True)
class HeldOutCell:
    """One cell the law did not see: `predicted` is the law's point prediction and [interval_low, interval_high]
    its 95% prediction interval (nan, and `inside` False, when its test has none); `error_percent` =
    (predicted − actual)/actual·100. The law counts every token as fresh, so a cell with more than one epoch can
    miss by repetition rather than by extrapolation."""

    size: str
    n: float
    d: float
    epochs: float
    predicted: float
    interval_low: float
    interval_high: float
    actual: float
    error_percent: float
    inside: bool


@dataclass(frozen=True)
class HeldOutTest:
    """The law fitted to every cell but those at the largest N (or D), predicting those. `skipped_reason` says why
    it was not run; `warning` when the remaining cells cannot separate the law's terms. `draw_source` says which
    of the fit's parameter solutions the prediction intervals come from, and why there are none if so."""

    name: str
    held_out_value: float
    n_fitted: int
    skipped_reason: str | None
    warning: str | None
    scatter: Scatter | None
    draw_source: DrawSource | None
    cells: tuple[HeldOutCell, ...]

    @property
    def has_intervals(self) -> bool:
        return self.draw_source is not None and self.draw_source.reason is None

    @property
    def n_inside(self) -> int:
        return sum(cell.inside for cell in self.cells)


@dataclass(frozen=True)
class ComputeFrontier:
    """The surface's loss-minimising split of C = k·N·D, with k the cells' median FLOPs per parameter and token:
    N_opt = g·(C/k)^n_exponent, D_opt = (C/k)^d_exponent / g. The budgets are in the same C."""

    flops_per_parameter_token: float
    g: float
    n_exponent: ParamInterval
    d_exponent: ParamInterval
    budgets: tuple[BudgetAllocation, ...]

    def n_opt(self, flop: float | np.ndarray) -> float | np.ndarray:
        return self.g * np.power(np.asarray(flop, dtype=float) / self.flops_per_parameter_token,
                                 self.n_exponent.estimate)

    def d_opt(self, flop: float | np.ndarray) -> float | np.ndarray:
        return np.power(np.asarray(flop, dtype=float) / self.flops_per_parameter_token,
                        self.d_exponent.estimate) / self.g


@dataclass(frozen=True)
class BudgetLaw:
    """L(N) = a·N^-α (+ c) over the cells at one token budget d; `fit` is None with `skipped_reason` when fewer than
    2 sizes reached it."""

    d: float
    n_sizes: int
    fit: ScalingFit | None
    skipped_reason: str | None


@dataclass(frozen=True)
class ArchitectureLaw:
    """Every study of one architecture's cells. `held_out` are the prediction tests (largest N, largest D); `fit`
    is the joint law on all cells with bootstrap intervals and `scatter` its residual scatter; `warning` says when
    the cells cannot separate the law's terms; `frontier` is the surface's compute-optimal allocation, `isoflop`
    the independent estimate of its N_opt exponent and `isoflop_comparison` the line comparing the two;
    `per_budget` is L(N) at each budget, smallest first; `repetition` the multi-epoch check."""

    n_cells: int
    n_sizes: int
    budgets: tuple[float, ...]
    held_out: tuple[HeldOutTest, ...]
    fit: JointFit
    scatter: Scatter
    warning: str | None
    frontier: ComputeFrontier
    isoflop: IsoFlopStudy
    isoflop_comparison: str
    per_budget: tuple[BudgetLaw, ...]
    repetition: RepetitionStudy

    @property
    def largest_budget(self) -> BudgetLaw:
        """The L(N) fit at the largest budget, whose α is the number a single-budget seed study reports."""
        return self.per_budget[-1]

    def to_dict(self) -> dict:
        """Plain JSON types, every number of the analysis; nan and inf become None."""
        return json_safe({
            "n_cells": self.n_cells,
            "n_sizes": self.n_sizes,
            "budgets": list(self.budgets),
            "held_out": [_held_out_dict(test) for test in self.held_out],
            "fit": self.fit.to_dict(),
            "scatter": asdict(self.scatter),
            "warning": self.warning,
            "frontier": {
                "flops_per_parameter_token": self.frontier.flops_per_parameter_token,
                "g": self.frontier.g,
                "n_exponent": asdict(self.frontier.n_exponent),
                "d_exponent": asdict(self.frontier.d_exponent),
                "budgets": [asdict(budget) for budget in self.frontier.budgets],
            },
            "isoflop": asdict(self.isoflop),
            "isoflop_comparison": self.isoflop_comparison,
            "per_budget": [{"d": law.d, "n_sizes": law.n_sizes, "skipped_reason": law.skipped_reason,
                            "fit": law.fit.to_dict() if law.fit is not None else None} for law in self.per_budget],
            "alpha_at_largest_d": _alpha_dict(self.largest_budget),
            "repetition": asdict(self.repetition),
        })

    def report_lines(self) -> list[str]:
        """The console report, held-out predictions first."""
        return _report_lines(self)


def analyze_architecture(cells: Sequence[Cell], n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                         max_starts: int = DEFAULT_STARTS) -> ArchitectureLaw:
    """Every study of the ladder. Raises ValueError when the cells cannot carry the joint law at all."""
    check_cells(cells)
    reason = too_few_reason(cells)
    if reason is not None:
        raise ValueError(f"cannot fit L(N, D): {reason}")
    settings = FitSettings(n_bootstrap=n_bootstrap, max_starts=max_starts, seed=seed)
    largest_n = max(cell.n for cell in cells)
    largest_d = max(cell.d for cell in cells)
    held_out = (
        held_out_test("largest N", largest_n, cells, lambda cell: math.isclose(cell.n, largest_n, rel_tol=1e-9),
                      settings),
        held_out_test("largest D", largest_d, cells, lambda cell: math.isclose(cell.d, largest_d, rel_tol=1e-9),
                      settings),
    )
    fit = fit_cells(cells, settings)
    frontier = compute_frontier(fit, cells)
    isoflop = isoflop_study(cells)
    return ArchitectureLaw(
        n_cells=len(cells),
        n_sizes=len(distinct([cell.n for cell in cells])),
        budgets=tuple(distinct([cell.d for cell in cells])),
        held_out=held_out,
        fit=fit,
        scatter=scatter_about(fit, cells),
        warning=identification_warning(cells),
        frontier=frontier,
        isoflop=isoflop,
        isoflop_comparison=compare_exponents(isoflop, frontier.n_exponent),
        per_budget=per_budget_laws(cells, n_bootstrap, seed),
        repetition=repetition_study(cells, settings),
    )


def held_out_test(name: str, held_out_value: float, cells: Sequence[Cell],
                  is_held_out: Callable[[Cell], bool], settings: FitSettings) -> HeldOutTest:
    """Fit the law to the cells `is_held_out` rejects and predict the others with 95% prediction intervals."""
    held = [cell for cell in cells if is_held_out(cell)]
    rest = [cell for cell in cells if not is_held_out(cell)]
    reason = too_few_reason(rest)
    if reason is not None:
        return HeldOutTest(name=name, held_out_value=held_out_value, n_fitted=len(rest),
                           skipped_reason=f"the other cells are too few: {reason}", warning=None, scatter=None,
                           draw_source=None, cells=())
    fit = fit_cells(rest, settings)
    scatter = scatter_about(fit, rest)
    predictions, draw_source = predict_cells(fit, scatter, held, seed=settings.seed)
    return HeldOutTest(name=name, held_out_value=held_out_value, n_fitted=len(rest), skipped_reason=None,
                       warning=identification_warning(rest), scatter=scatter, draw_source=draw_source,
                       cells=predictions)


def predict_cells(fit: JointFit, scatter: Scatter, cells: Sequence[Cell],
                  seed: int) -> tuple[tuple[HeldOutCell, ...], DrawSource]:
    """The fit's predictions of cells it was not fitted to, with 95% prediction intervals, and the solutions those
    come from; the intervals are nan when no solution predicts every cell."""
    draws = predictive_draws(fit, scatter, cells, seed=seed)
    if draws.log_losses is None:
        low = high = np.full(len(cells), math.nan)
    else:
        low, high = prediction_interval(draws.log_losses)
    predicted = [predict_loss(fit.params, cell.n, cell.d) for cell in cells]
    return tuple(HeldOutCell(size=cell.size, n=cell.n, d=cell.d, epochs=cell.epochs, predicted=float(prediction),
                             interval_low=float(lo), interval_high=float(hi), actual=cell.loss,
                             error_percent=(prediction - cell.loss) / cell.loss * 100.0,
                             inside=bool(lo <= cell.loss <= hi))
                 for cell, prediction, lo, hi in zip(cells, predicted, low, high)), draws.source


def compute_frontier(fit: JointFit, cells: Sequence[Cell]) -> ComputeFrontier:
    """The allocation under C = k·N·D. Along C = k·N·D the optimum is that of C = 6·N·D at the budget 6·C/k, so
    summarize_allocation gives it at rescaled budgets."""
    k = float(np.median([cell.flops / (cell.n * cell.d) for cell in cells]))
    flops = [cell.flops for cell in cells]
    budgets = np.geomspace(min(flops), max(flops), REPORT_BUDGET_COUNT)
    allocation = summarize_allocation(fit, budgets=tuple(6.0 * budgets / k))
    return ComputeFrontier(
        flops_per_parameter_token=k,
        g=allocation.optimal.g,
        n_exponent=allocation.n_exponent,
        d_exponent=allocation.d_exponent,
        budgets=tuple(BudgetAllocation(flop=float(flop), n_opt=entry.n_opt, d_opt=entry.d_opt,
                                       tokens_per_parameter=entry.tokens_per_parameter)
                      for flop, entry in zip(budgets, allocation.budgets)),
    )


def compare_exponents(isoflop: IsoFlopStudy, surface: ParamInterval) -> str:
    """One line on whether the IsoFLOP minima and the surface give the same N_opt exponent."""
    if isoflop.reason is not None:
        return f"IsoFLOP: {isoflop.reason}; not compared with the surface's N_opt exponent"
    iso_text = (f"IsoFLOP N_opt ∝ C^{isoflop.exponent:.3f} "
                f"{_range_text(isoflop.exponent_ci_low, isoflop.exponent_ci_high)}")
    surface_text = f"the surface's C^{surface.estimate:.3f} {_range_text(surface.ci_low, surface.ci_high)}"
    iso_known = math.isfinite(isoflop.exponent_ci_low)
    surface_known = math.isfinite(surface.ci_low)
    if iso_known and surface_known:
        overlap = isoflop.exponent_ci_low <= surface.ci_high and surface.ci_low <= isoflop.exponent_ci_high
        verdict = "agree: the intervals overlap" if overlap else (
            f"disagree: the intervals do not overlap, the IsoFLOP exponent is "
            f"{'larger' if isoflop.exponent > surface.estimate else 'smaller'}")
    elif surface_known:
        inside = surface.ci_low <= isoflop.exponent <= surface.ci_high
        verdict = (f"{len(isoflop.minima)} minima give no IsoFLOP interval; its exponent is "
                   f"{'inside' if inside else 'outside'} the surface's interval")
    elif iso_known:
        inside = isoflop.exponent_ci_low <= surface.estimate <= isoflop.exponent_ci_high
        verdict = f"the surface has no interval; its exponent is {'inside' if inside else 'outside'} the IsoFLOP one"
    else:
        verdict = "neither has an interval to compare"
    return f"{iso_text} and {surface_text}: {verdict}"


def per_budget_laws(cells: Sequence[Cell], n_bootstrap: int, seed: int) -> tuple[BudgetLaw, ...]:
    """fit_power_law on the cells at each budget, smallest budget first."""
    laws = []
    for d in distinct([cell.d for cell in cells]):
        at_budget = [cell for cell in cells if math.isclose(cell.d, d, rel_tol=1e-9)]
        n_sizes = len(distinct([cell.n for cell in at_budget]))
        try:
            fit = fit_power_law([(cell.n, cell.loss) for cell in at_budget], n_bootstrap=n_bootstrap, seed=seed)
            laws.append(BudgetLaw(d=d, n_sizes=n_sizes, fit=fit, skipped_reason=None))
        except ValueError as error:
            laws.append(BudgetLaw(d=d, n_sizes=n_sizes, fit=None, skipped_reason=str(error)))
    return tuple(laws)


def _held_out_dict(test: HeldOutTest) -> dict:
    return {"name": test.name, "held_out_value": test.held_out_value, "n_fitted": test.n_fitted,
            "skipped_reason": test.skipped_reason, "warning": test.warning,
            "scatter": asdict(test.scatter) if test.scatter is not None else None,
            "draw_source": asdict(test.draw_source) if test.draw_source is not None else None,
            "has_intervals": test.has_intervals, "n_inside": test.n_inside,
            "cells": [asdict(cell) for cell in test.cells]}


def _alpha_dict(law: BudgetLaw) -> dict:
    if law.fit is None:
        return {"d": law.d, "alpha": math.nan, "ci_low": math.nan, "ci_high": math.nan, "form": None}
    form = law.fit.chosen_fit
    return {"d": law.d, "alpha": form.alpha, "ci_low": form.alpha_ci_low, "ci_high": form.alpha_ci_high,
            "form": law.fit.chosen}


def _range_text(low: float, high: float, spec: str = ".3f") -> str:
    return f"[{low:{spec}}, {high:{spec}}]" if math.isfinite(low) and math.isfinite(high) else "(no interval)"


def _report_lines(law: ArchitectureLaw) -> list[str]:
    return [*_held_out_lines(law.held_out), *_fit_lines(law), *_frontier_lines(law.frontier),
            f"IsoFLOP: {len(law.isoflop.minima)} of {len(law.isoflop.profiles)} profiles have an inner minimum; "
            f"{law.isoflop_comparison}",
            *(f"  C {profile.flop:.3g}: {len(profile.sizes)} sizes, "
              + (f"N_opt {profile.n_opt:.3g}" if profile.found else profile.reason)
              for profile in law.isoflop.profiles),
            *_budget_lines(law),
            f"repetition: {law.repetition.message}"]


def _held_out_lines(tests: Sequence[HeldOutTest]) -> list[str]:
    lines = ["held-out predictions (the law refitted without the held-out cells; 95% prediction intervals):"]
    for test in tests:
        if test.skipped_reason is not None:
            lines.append(f"  {test.name}: skipped: {test.skipped_reason}")
            continue
        coverage = (f"{test.n_inside} of {len(test.cells)} inside, intervals from {test.draw_source.text()}"
                    if test.has_intervals else f"no prediction intervals: {test.draw_source.reason}")
        lines += [f"  {test.name} ({test.held_out_value:.4g}) from {test.n_fitted} cells, scatter "
                  f"{test.scatter.rms * 100:.2f}% on {test.scatter.dof} dof: {coverage}",
                  f"    {'size':<8} {'N':>9} {'D':>9} {'predicted':>9}  {'95% interval':<16} {'actual':>7} "
                  f"{'error':>7}"]
        for cell in test.cells:
            interval = f"[{cell.interval_low:.4f}, {cell.interval_high:.4f}]" if test.has_intervals else "-"
            outside = "  OUTSIDE" if test.has_intervals and not cell.inside else ""
            epochs = f"  ({cell.epochs:.2g} epochs)" if cell.epochs > 1 + EPOCH_TOLERANCE else ""
            lines.append(f"    {cell.size:<8} {cell.n:>9.3g} {cell.d:>9.3g} {cell.predicted:>9.4f}  {interval:<16} "
                         f"{cell.actual:>7.4f} {cell.error_percent:>+6.2f}%{outside}{epochs}")
        if test.warning:
            lines.append(f"    warning: {test.warning}")
    return lines


def _fit_lines(law: ArchitectureLaw) -> list[str]:
    fit = law.fit

    def parameter(name: str) -> str:
        interval = fit.interval(name)
        return f"{name} {interval.estimate:.4g} {_range_text(interval.ci_low, interval.ci_high, '.4g')}"

    lines = [f"joint fit L = E + A/N^alpha + B/D^beta on all {law.n_cells} cells ({law.n_sizes} sizes × "
             f"{len(law.budgets)} budgets), scatter {law.scatter.rms * 100:.2f}%, {fit.n_bootstrap_used} bootstrap "
             f"resamples{'' if fit.converged else ', NOT converged'}:",
             "  " + ", ".join(parameter(name) for name in PARAM_NAMES)]
    if law.warning:
        lines.append(f"  warning: {law.warning}")
    return lines


def _frontier_lines(frontier: ComputeFrontier) -> list[str]:
    n_exponent, d_exponent = frontier.n_exponent, frontier.d_exponent
    lines = [f"compute-optimal under C = k·N·D, k = {frontier.flops_per_parameter_token:.3g} (median FLOPs per "
             f"parameter and token): N_opt ∝ C^{n_exponent.estimate:.3f} "
             f"{_range_text(n_exponent.ci_low, n_exponent.ci_high)}, D_opt ∝ C^{d_exponent.estimate:.3f} "
             f"{_range_text(d_exponent.ci_low, d_exponent.ci_high)}"]
    for budget in frontier.budgets:
        tokens = budget.tokens_per_parameter
        lines.append(f"  C {budget.flop:.3g}: N_opt {budget.n_opt:.3g}, D_opt {budget.d_opt:.3g}, "
                     f"{tokens.estimate:.3g} tokens per parameter {_range_text(tokens.ci_low, tokens.ci_high, '.3g')}")
    return lines


def _budget_lines(law: ArchitectureLaw) -> list[str]:
    lines = ["L(N) at each budget:"]
    for budget_law in law.per_budget:
        if budget_law.fit is None:
            lines.append(f"  D {budget_law.d:.3g}: skipped: {budget_law.skipped_reason}")
            continue
        form = budget_law.fit.chosen_fit
        lines.append(f"  D {budget_law.d:.3g}: alpha {form.alpha:.4f} "
                     f"{_range_text(form.alpha_ci_low, form.alpha_ci_high, '.4f')} ({budget_law.fit.chosen} form, "
                     f"{budget_law.n_sizes} sizes)")
    largest = _alpha_dict(law.largest_budget)
    lines.append(f"  alpha at the largest budget D {largest['d']:.3g}: {largest['alpha']:.4f} "
                 f"{_range_text(largest['ci_low'], largest['ci_high'], '.4f')}")
    return lines
