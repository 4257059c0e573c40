"""The joint law L(N, D) fitted to cells and asked about others: how every fit of a ladder is made, whether a set
of cells can carry the law, and predictive distributions for cells it was not fitted to, which combine the
uncertainty of the parameters (the fit's bootstrap resamples) with the scatter of single cells about the law.

A cell's predicted log-loss is drawn as log L(N, D; θ_b) + σ·t, where θ_b is a bootstrap solution drawn at random
and t a Student-t variate with the fit's residual degrees of freedom m − 5. σ² is the residual variance
SSR/(m − 5): dividing by the degrees of freedom rather than m undoes the shrinkage of residuals by the 5 fitted
parameters, and the t variate widens the tails for σ itself being estimated from few cells, as in the prediction
interval of a linear regression. The residuals of the fitted cells already contain their own measurement noise
(the standard error of the validation loss), so σ² is split into the law's scatter, σ² minus the fitted cells'
mean squared relative standard error, and the measurement noise, which is replaced by the target cell's own where
it is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from abcmusic.scaling.cell import Cell, columns, distinct
from abcmusic.scaling.joint import DEFAULT_BOOTSTRAP, DEFAULT_STARTS, PARAM_NAMES, JointFit, fit_joint, predict_loss

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
    dof is 0); `measurement_variance` is the mean squared relative standard error of the cells' losses, over the
    cells where it is known (0 when none is)."""

    rms: float
    dof: int
    measurement_variance: float

    @property
    def law_variance(self) -> float:
        """The part of the scatter that is not the measurement noise of the validation loss."""
        return max(self.rms**2 - self.measurement_variance, 0.0)


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
    rms = math.sqrt(float(residuals @ residuals) / dof) if dof > 0 else math.nan
    variances = [cell.relative_se**2 for cell in cells if math.isfinite(cell.relative_se)]
    return Scatter(rms=rms, dof=dof, measurement_variance=float(np.mean(variances)) if variances else 0.0)


def predictive_log_samples(fit: JointFit, scatter: Scatter, targets: Sequence[Cell], seed: int,
                           draws: int = DRAWS) -> np.ndarray:
    """Draws of the targets' log-losses under the law, shape (draws, targets). One parameter draw is shared by all
    targets of a row, so sums over targets keep the correlation the parameters give them."""
    if scatter.dof < 1:
        raise ValueError("the scatter of the law needs more fitted cells than its 5 parameters")
    rng = np.random.default_rng(seed)
    n, d, _ = columns(targets)
    solutions = fit.bootstrap_params or (fit.params,)
    chosen = rng.integers(len(solutions), size=draws)
    log_predictions = np.log(np.array([predict_loss(solutions[i], n, d) for i in range(len(solutions))]))[chosen]
    target_variances = np.array([cell.relative_se**2 if math.isfinite(cell.relative_se)
                                 else scatter.measurement_variance for cell in targets])
    sigma = np.sqrt(scatter.law_variance + target_variances)
    return log_predictions + sigma * rng.standard_t(scatter.dof, size=(draws, len(targets)))


def prediction_interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% interval of each target's loss from predictive_log_samples."""
    low, high = np.percentile(samples, PREDICTION_PERCENTILES, axis=0)
    return np.exp(low), np.exp(high)
