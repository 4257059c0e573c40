"""Whether cells that saw their training tokens more than once fall off the law fitted to cells that did not,
and how much a repeated token is worth under Muennighoff et al. 2023 ("Scaling Data-Constrained Language Models").

Their effective data is D' = U + U·R*·(1 − exp(−R/R*)) for U unique tokens seen 1 + R times: the first repetitions
count almost as fresh tokens and later ones ever less, with the worth of repeated data saturating at R*·U. Here
the law L(N, D) fitted to the single-epoch cells is kept fixed and only R* is fitted, on the repeated cells with D
replaced by D'. Their 8.7B-token runs found R* ≈ 15 for the data term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from abcmusic.scaling.cell import Cell, columns
from abcmusic.scaling.joint import JointParams, predict_loss
from abcmusic.scaling.prediction import (PREDICTION_PERCENTILES, FitSettings, fit_cells, identification_warning,
                                         predictive_draws, scatter_about, too_few_reason, usable_solutions)

# R* is searched between worthless repeats (D' ≈ U) and repeats as good as fresh tokens over any realistic count.
R_STAR_BOUNDS = (1e-2, 1e4)
# A fitted R* within this factor of a bound is reported as the bound: the loss no longer tells R* apart from it.
BOUND_FACTOR = 1.05
NOT_ASSESSED = "no multi-epoch cells: repetition not assessed"


@dataclass(frozen=True)
class RepeatedCell:
    """A multi-epoch cell against the single-epoch law: `predicted` at its D as if every token were fresh,
    `residual_percent` = (loss − predicted)/predicted·100, and `effective_d` its D' at the fitted R*."""

    size: str
    n: float
    d: float
    epochs: float
    loss: float
    predicted: float
    residual_percent: float
    effective_d: float


@dataclass(frozen=True)
class RepetitionStudy:
    """`assessed` is False with the reason in `message` when there are no repeated cells or too few single-epoch
    cells to fit the law. The noise band is the 95% range of the mean residual if the repeated cells followed the
    law (parameter uncertainty and the cells' scatter), nan when no solution of the law predicts every repeated
    cell; `beyond_noise` when the mean lies outside it. `r_star` is nan when not fitted; its interval comes from
    refitting R* under each bootstrap solution of the law that predicts every repeated cell."""

    assessed: bool
    message: str
    n_single_epoch_cells: int
    cells: tuple[RepeatedCell, ...]
    mean_residual_percent: float
    noise_low_percent: float
    noise_high_percent: float
    beyond_noise: bool
    r_star: float
    r_star_ci_low: float
    r_star_ci_high: float


def effective_tokens(unique: np.ndarray, repetitions: np.ndarray, r_star: float) -> np.ndarray:
    """Muennighoff et al.'s D' for `unique` tokens each seen 1 + `repetitions` times (repetitions may be fractional)."""
    return unique + unique * r_star * (1.0 - np.exp(-repetitions / r_star))


def repetition_study(cells: Sequence[Cell], settings: FitSettings) -> RepetitionStudy:
    repeated = [cell for cell in cells if cell.repeated]
    single = [cell for cell in cells if not cell.repeated]
    if not repeated:
        return _not_assessed(NOT_ASSESSED, len(single))
    reason = too_few_reason(single)
    if reason is not None:
        return _not_assessed(f"{len(repeated)} multi-epoch cells, but the single-epoch cells cannot carry the law "
                             f"({reason}): repetition not assessed", len(single))

    law = fit_cells(single, settings)
    n, d, loss = columns(repeated)
    log_residuals = np.log(loss) - np.log(predict_loss(law.params, n, d))
    mean_residual = float(log_residuals.mean())
    draws = predictive_draws(law, scatter_about(law, single), repeated, seed=settings.seed)
    if draws.log_losses is None:
        noise_low = noise_high = math.nan
        beyond_noise = False
        verdict = f"with no noise band to compare ({draws.source.reason})"
    else:
        simulated_means = (draws.log_losses - np.log(predict_loss(law.params, n, d))).mean(axis=1)
        noise_low, noise_high = np.percentile(simulated_means, PREDICTION_PERCENTILES)
        beyond_noise = bool(not noise_low <= mean_residual <= noise_high)
        verdict = ("worse than the law beyond its noise" if beyond_noise and mean_residual > 0
                   else "better than the law beyond its noise" if beyond_noise else "within the law's noise")
        verdict += (f" (95% band [{_percent(noise_low):+.2f}%, {_percent(noise_high):+.2f}%] from "
                    f"{draws.source.text()})")

    unique, repetitions = _unique_and_repetitions(repeated)
    r_star = _fit_r_star(law.params, repeated)
    # D' lies between the unique tokens and D, where the law is monotone, so a solution that predicts both predicts
    # the repeated cells at any R*.
    solutions, _ = usable_solutions(law.bootstrap_params, np.concatenate([n, n]), np.concatenate([d, unique]))
    rng = np.random.default_rng(settings.seed)
    resampled = [_fit_r_star(params, [repeated[i] for i in rng.integers(len(repeated), size=len(repeated))])
                 for params in solutions]
    r_low, r_high = np.percentile(resampled, PREDICTION_PERCENTILES) if resampled else (math.nan, math.nan)
    if resampled:
        r_interval = (f"95% interval [{r_low:.3g}, {r_high:.3g}] from {len(solutions)} of "
                      f"{len(law.bootstrap_params)} bootstrap solutions")
    elif law.bootstrap_params:
        r_interval = f"no interval: none of the {len(law.bootstrap_params)} bootstrap solutions predicts these cells"
    else:
        r_interval = "no interval without bootstrap resamples"

    effective = effective_tokens(unique, repetitions, r_star)
    mean_percent = _percent(mean_residual)
    warning = identification_warning(single)
    return RepetitionStudy(
        assessed=True,
        message=(f"{len(repeated)} multi-epoch cells are {mean_percent:+.2f}% off the single-epoch law on average, "
                 f"{verdict}; {_r_star_text(r_star)}, {r_interval}"
                 + (f"; warning: the single-epoch cells have {warning}" if warning else "")),
        n_single_epoch_cells=len(single),
        cells=tuple(RepeatedCell(size=cell.size, n=cell.n, d=cell.d, epochs=cell.epochs, loss=cell.loss,
                                 predicted=float(math.exp(math.log(cell.loss) - residual)),
                                 residual_percent=_percent(residual), effective_d=float(d_prime))
                    for cell, residual, d_prime in zip(repeated, log_residuals, effective)),
        mean_residual_percent=mean_percent,
        noise_low_percent=_percent(noise_low),
        noise_high_percent=_percent(noise_high),
        beyond_noise=beyond_noise,
        r_star=r_star,
        r_star_ci_low=float(r_low),
        r_star_ci_high=float(r_high),
    )


def _fit_r_star(params: JointParams, repeated: Sequence[Cell]) -> float:
    """The R* whose effective data brings the law closest to the repeated cells (least squares in log-loss)."""
    n, _, loss = columns(repeated)
    unique, repetitions = _unique_and_repetitions(repeated)

    def objective(log_r_star: float) -> float:
        predicted = predict_loss(params, n, effective_tokens(unique, repetitions, math.exp(log_r_star)))
        return float(np.sum((np.log(loss) - np.log(predicted)) ** 2))

    low, high = (math.log(bound) for bound in R_STAR_BOUNDS)
    result = minimize_scalar(objective, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return math.exp(float(result.x))


def _unique_and_repetitions(cells: Sequence[Cell]) -> tuple[np.ndarray, np.ndarray]:
    unique = np.array([cell.unique_tokens for cell in cells])
    return unique, np.array([cell.epochs for cell in cells]) - 1.0


def _r_star_text(r_star: float) -> str:
    if r_star >= R_STAR_BOUNDS[1] / BOUND_FACTOR:
        return "fitted R* at its upper bound: repeated tokens count as fresh ones, no bend"
    if r_star <= R_STAR_BOUNDS[0] * BOUND_FACTOR:
        return "fitted R* at its lower bound: repeated tokens add nothing"
    return f"fitted R* = {r_star:.3g}: repeating U unique tokens adds at most {r_star:.3g}·U effective ones"


def _percent(log_ratio: float) -> float:
    return float(math.expm1(log_ratio) * 100.0)


def _not_assessed(message: str, n_single: int) -> RepetitionStudy:
    return RepetitionStudy(assessed=False, message=message, n_single_epoch_cells=n_single, cells=(),
                           mean_residual_percent=math.nan, noise_low_percent=math.nan, noise_high_percent=math.nan,
                           beyond_noise=False, r_star=math.nan, r_star_ci_low=math.nan, r_star_ci_high=math.nan)
