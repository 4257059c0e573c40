"""Joint scaling law L(N, D) = E + A/N^α + B/D^β in model size N and training tokens D, fitted the way Besiroglu et
al. 2024 ("Chinchilla Scaling: A replication attempt") refit Hoffmann et al. 2022's approach 3, with bootstrap
intervals and the compute-optimal allocation under C = 6·N·D.

With E = exp(e), A = exp(a), B = exp(b) the predicted log-loss is logsumexp(a - α·log N, b - β·log D, e); the fit
minimises the summed Huber loss (δ = 1e-3) between predicted and observed log-loss with L-BFGS-B from a grid of
starts and keeps the best converged solution.
"""

from __future__ import annotations

import itertools
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from abcmusic.scaling.fit import json_safe

MIN_POINTS = 5
HUBER_DELTA = 1e-3
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
# The grid of Hoffmann et al. 2022 (appendix D.2), which the replication reuses: 5·6·6·5·5 = 4500 starts, in the
# order (e, a, b, α, β) of the internal parameter vector.
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_A = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
GRID_B = GRID_A
GRID_ALPHA = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_BETA = GRID_ALPHA
START_GRID = np.array(list(itertools.product(GRID_E, GRID_A, GRID_B, GRID_ALPHA, GRID_BETA)), dtype=float)
# Optimising from every grid start costs ~40 CPU seconds on the 240 Chinchilla points; the starts with the lowest
# Huber objective before optimising are the ones that reach the optimum (there the 10 lowest all do), so by default
# only the best DEFAULT_STARTS are optimised. max_starts=len(START_GRID) runs the replication's full procedure.
DEFAULT_STARTS = 100
# A resample starts from the full-data optimum and, in case it moved basin, from the best few grid starts of the
# full data. On the Chinchilla points 4 such starts never beat the optimum's start in 60 resamples, and cost 8×.
BOOTSTRAP_GRID_STARTS = 2
DEFAULT_BOOTSTRAP = 200
CI_PERCENTILES = (2.5, 97.5)
# Compute budgets (FLOP) at which the allocation is reported, two decades apart around Chinchilla's 5.8e23.
REPORT_BUDGETS = (1e21, 1e23, 1e25)
# scipy compares ftol with the change in f divided by max(|f|, 1); the Huber sum is ~1e-3, so the default ftol stops
# at a relative change of ~2e-6, where B still differs by ±3 between starts on the Chinchilla points. With these
# the starts that reach the optimum agree to ~1e-6 relative.
OPTIMIZER_OPTIONS = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000}
# Grid starts are screened this many at a time, which bounds memory at a few (chunk × points) arrays.
SCREEN_CHUNK = 256


@dataclass(frozen=True)
class JointParams:
    E: float
    A: float
    B: float
    alpha: float
    beta: float


@dataclass(frozen=True)
class ParamInterval:
    """A bootstrap 95% percentile interval and the bootstrap standard error (nan when no resample was fitted)."""

    name: str
    estimate: float
    ci_low: float
    ci_high: float
    std_error: float


@dataclass(frozen=True)
class JointFit:
    """The best converged solution over `n_starts` optimised starts (`converged` is False when none converged and
    `params` is the lowest objective reached), with one interval per parameter over `n_bootstrap_used` resamples."""

    params: JointParams
    intervals: tuple[ParamInterval, ...]
    n_points: int
    huber_objective: float
    huber_delta: float
    converged: bool
    n_starts: int
    n_starts_converged: int
    n_bootstrap_used: int
    # Every converged resample's solution, for intervals of derived quantities (derived_interval).
    bootstrap_params: tuple[JointParams, ...] = field(repr=False)

    def interval(self, name: str) -> ParamInterval:
        for interval in self.intervals:
            if interval.name == name:
                return interval
        raise KeyError(name)

    def to_dict(self) -> dict:
        """Plain JSON types without the bootstrap solutions; nan and inf become None."""
        return json_safe({
            "params": {name: getattr(self.params, name) for name in PARAM_NAMES},
            "intervals": {interval.name: _interval_dict(interval) for interval in self.intervals},
            "n_points": self.n_points,
            "huber_objective": self.huber_objective,
            "huber_delta": self.huber_delta,
            "converged": self.converged,
            "n_starts": self.n_starts,
            "n_starts_converged": self.n_starts_converged,
            "n_bootstrap_used": self.n_bootstrap_used,
        })


@dataclass(frozen=True)
class ComputeOptimal:
    """The loss-minimising split of a compute budget C = 6·N·D: N_opt = G·(C/6)^n_exponent and
    D_opt = (C/6)^d_exponent / G, with n_exponent = β/(α+β), d_exponent = α/(α+β), G = (αA/(βB))^(1/(α+β))."""

    n_exponent: float
    d_exponent: float
    g: float

    def n_opt(self, flop: float | np.ndarray) -> float | np.ndarray:
        return _scalar_or_array(self.g * np.power(np.asarray(flop, dtype=float) / 6.0, self.n_exponent))

    def d_opt(self, flop: float | np.ndarray) -> float | np.ndarray:
        return _scalar_or_array(np.power(np.asarray(flop, dtype=float) / 6.0, self.d_exponent) / self.g)

    def tokens_per_parameter(self, flop: float | np.ndarray) -> float | np.ndarray:
        return _scalar_or_array(np.asarray(self.d_opt(flop)) / np.asarray(self.n_opt(flop)))


@dataclass(frozen=True)
class BudgetAllocation:
    """The compute-optimal split of one budget, with the bootstrap interval of its tokens per parameter."""

    flop: float
    n_opt: float
    d_opt: float
    tokens_per_parameter: ParamInterval


@dataclass(frozen=True)
class AllocationSummary:
    """The compute-optimal exponents with their bootstrap intervals, and the split of a few budgets."""

    optimal: ComputeOptimal
    n_exponent: ParamInterval
    d_exponent: ParamInterval
    budgets: tuple[BudgetAllocation, ...]

    def to_dict(self) -> dict:
        return json_safe({
            "g": self.optimal.g,
            "n_exponent": _interval_dict(self.n_exponent),
            "d_exponent": _interval_dict(self.d_exponent),
            "budgets": [{"flop": budget.flop, "n_opt": budget.n_opt, "d_opt": budget.d_opt,
                         "tokens_per_parameter": _interval_dict(budget.tokens_per_parameter)}
                        for budget in self.budgets],
        })


def fit_joint(n: np.ndarray, d: np.ndarray, loss: np.ndarray, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              max_starts: int = DEFAULT_STARTS, huber_delta: float = HUBER_DELTA) -> JointFit:
    """Fit L(N, D) to runs with parameter counts n, training tokens d and final losses loss (one value per run)."""
    log_n, log_d, log_loss = _log_points(n, d, loss)
    if max_starts < 1:
        raise ValueError("max_starts must be at least 1")
    if n_bootstrap < 0:
        raise ValueError("n_bootstrap must not be negative")

    with _single_threaded_blas():
        starts = _screened_starts(log_n, log_d, log_loss, huber_delta, max_starts)
        best, n_converged = _best_solution(log_n, log_d, log_loss, huber_delta, starts)
        if best is None:
            raise ValueError("the fit failed from every start: no finite objective")
        best_x, best_objective, converged = best

        rng = np.random.default_rng(seed)
        resample_starts = np.vstack([best_x, starts[:BOOTSTRAP_GRID_STARTS]])
        bootstrap_params = []
        for _ in range(n_bootstrap):
            indices = rng.integers(len(log_n), size=len(log_n))
            sub = log_n[indices], log_d[indices], log_loss[indices]
            resample_best, _ = _best_solution(*sub, huber_delta, resample_starts)
            if resample_best is not None and resample_best[2]:
                bootstrap_params.append(_params(resample_best[0]))

    params = _params(best_x)
    samples = tuple(bootstrap_params)
    return JointFit(
        params=params,
        intervals=tuple(_interval(name, getattr(params, name), [getattr(p, name) for p in samples])
                        for name in PARAM_NAMES),
        n_points=len(log_n),
        huber_objective=best_objective,
        huber_delta=huber_delta,
        converged=converged,
        n_starts=len(starts),
        n_starts_converged=n_converged,
        n_bootstrap_used=len(samples),
        bootstrap_params=samples,
    )


def predict_loss(params: JointParams, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
    """Loss the law predicts for n parameters trained on d tokens (scalars or arrays that broadcast)."""
    n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
    return _scalar_or_array(params.E + params.A * np.power(n, -params.alpha) + params.B * np.power(d, -params.beta))


def compute_optimal(params: JointParams) -> ComputeOptimal:
    """All nan unless α > 0 and β > 0: otherwise the loss does not fall in N or D and no budget has an optimum.
    A solution whose A or B overflowed to inf or underflowed to 0 has an infinite, zero or nan g."""
    if not (params.alpha > 0 and params.beta > 0):
        return ComputeOptimal(n_exponent=math.nan, d_exponent=math.nan, g=math.nan)
    exponent_sum = params.alpha + params.beta
    # In numpy rather than Python floats, whose division by 0 and overflowing powers raise instead of giving inf.
    with np.errstate(all="ignore"):
        g = np.power(np.float64(params.alpha) * params.A / (np.float64(params.beta) * params.B), 1.0 / exponent_sum)
    return ComputeOptimal(n_exponent=params.beta / exponent_sum, d_exponent=params.alpha / exponent_sum, g=float(g))


def summarize_allocation(fit: JointFit, budgets: Sequence[float] = REPORT_BUDGETS) -> AllocationSummary:
    """The compute-optimal allocation of the fit, with bootstrap intervals from the fit's resamples."""
    optimal = compute_optimal(fit.params)

    def tokens_per_parameter(flop: float) -> ParamInterval:
        return derived_interval(fit, "tokens_per_parameter",
                                lambda params: compute_optimal(params).tokens_per_parameter(flop))

    return AllocationSummary(
        optimal=optimal,
        n_exponent=derived_interval(fit, "n_exponent", lambda params: compute_optimal(params).n_exponent),
        d_exponent=derived_interval(fit, "d_exponent", lambda params: compute_optimal(params).d_exponent),
        budgets=tuple(BudgetAllocation(flop=float(flop), n_opt=optimal.n_opt(flop), d_opt=optimal.d_opt(flop),
                                       tokens_per_parameter=tokens_per_parameter(flop)) for flop in budgets),
    )


def drop_highest_losses(n: np.ndarray, d: np.ndarray, loss: np.ndarray,
                        count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points without the `count` highest losses, in their original order. The replication leaves out the 5
    highest Chinchilla losses: the earliest, least-trained runs, far off the law."""
    n, d, loss = (np.asarray(values, dtype=float) for values in (n, d, loss))
    keep = without_highest_losses(loss, count)
    return n[keep], d[keep], loss[keep]


def without_highest_losses(loss: np.ndarray, count: int) -> np.ndarray:
    """The indices of the points without the `count` highest losses, in their original order."""
    if count < 0:
        raise ValueError("the number of points to drop must not be negative")
    loss = np.asarray(loss, dtype=float)
    return np.sort(np.argsort(loss, kind="stable")[:max(len(loss) - count, 0)])


def derived_interval(fit: JointFit, name: str, value_of: Callable[[JointParams], float]) -> ParamInterval:
    """The bootstrap interval of a quantity computed from the parameters, e.g. a compute-optimal exponent."""
    # A degenerate resample's quantity can overflow or be undefined; the interval leaves out non-finite values, so
    # numpy's warnings about them are noise.
    with np.errstate(all="ignore"):
        resampled = [value_of(p) for p in fit.bootstrap_params]
    return _interval(name, value_of(fit.params), resampled)


def _log_points(n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    columns = [np.asarray(values, dtype=float).reshape(-1) for values in (n, d, loss)]
    if len({len(column) for column in columns}) != 1:
        raise ValueError("N, D and loss need one value per run each")
    if len(columns[0]) < MIN_POINTS:
        raise ValueError(f"need at least {MIN_POINTS} points to fit the 5 parameters, got {len(columns[0])}")
    for name, column in zip(("N", "D", "loss"), columns):
        if not np.all(np.isfinite(column)) or np.any(column <= 0):
            raise ValueError(f"every {name} must be finite and positive")
    return tuple(np.log(column) for column in columns)


def _log_predictions(x: np.ndarray, log_n: np.ndarray,
                     log_d: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Predicted log-loss for parameter rows x = (e, a, b, α, β) of shape (5,) or (starts, 5), and the softmax
    weights of the three terms, which are the derivatives of the prediction by e, a and b."""
    # For both shapes .T puts the parameter axis first; it is cheaper than np.moveaxis, and this runs once per
    # optimiser step.
    e, a, b, alpha, beta = x.T[..., None]
    n_term = a - alpha * log_n
    d_term = b - beta * log_d
    top = np.maximum(np.maximum(n_term, d_term), e)
    e_weight, n_weight, d_weight = np.exp(e - top), np.exp(n_term - top), np.exp(d_term - top)
    total = e_weight + n_weight + d_weight
    return top + np.log(total), (e_weight / total, n_weight / total, d_weight / total)


def _huber(residual: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """The Huber loss of each residual r and its derivative s, r clipped to ±δ: the loss is s·(r − s/2), which is
    r²/2 inside ±δ and δ·|r| − δ²/2 outside."""
    slope = np.minimum(np.maximum(residual, -delta), delta)
    return slope * (residual - 0.5 * slope), slope


def _objective(x: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
               delta: float) -> tuple[float, np.ndarray]:
    """The summed Huber loss of the log-loss residuals and its gradient by (e, a, b, α, β)."""
    prediction, (e_weight, n_weight, d_weight) = _log_predictions(x, log_n, log_d)
    losses, slope = _huber(prediction - log_loss, delta)
    n_slope, d_slope = slope * n_weight, slope * d_weight
    gradient = np.array([slope @ e_weight, n_slope.sum(), d_slope.sum(), -(n_slope @ log_n), -(d_slope @ log_d)])
    return float(losses.sum()), gradient


def _screened_starts(log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float,
                     count: int) -> np.ndarray:
    """The `count` grid starts with the lowest objective before optimising, best first."""
    if count >= len(START_GRID):
        return START_GRID
    objectives = np.concatenate([
        _huber(_log_predictions(START_GRID[i:i + SCREEN_CHUNK], log_n, log_d)[0] - log_loss, delta)[0].sum(axis=1)
        for i in range(0, len(START_GRID), SCREEN_CHUNK)])
    return START_GRID[np.argsort(objectives, kind="stable")[:count]]


def _best_solution(log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float,
                   starts: np.ndarray) -> tuple[tuple[np.ndarray, float, bool] | None, int]:
    """(x, objective, converged) of the lowest converged objective over the starts, else of the lowest finite one
    with converged False, else None; and the number of starts that converged."""
    best_converged = best_any = None
    n_converged = 0
    for start in starts:
        result = minimize(_objective, start, args=(log_n, log_d, log_loss, delta), jac=True, method="L-BFGS-B",
                          options=OPTIMIZER_OPTIONS)
        if not (np.isfinite(result.fun) and np.all(np.isfinite(result.x))):
            continue
        if best_any is None or result.fun < best_any.fun:
            best_any = result
        if result.success:
            n_converged += 1
            if best_converged is None or result.fun < best_converged.fun:
                best_converged = result
    best = best_converged if best_converged is not None else best_any
    if best is None:
        return None, 0
    return (best.x, float(best.fun), best_converged is not None), n_converged


def _single_threaded_blas() -> AbstractContextManager:
    """scipy >= 1.15's L-BFGS-B makes many tiny BLAS/LAPACK calls, which a multi-threaded OpenBLAS slows 3-30× (most
    on a busy machine; scipy issue 22438); one thread removes that."""
    return threadpool_limits(limits=1, user_api="blas")


def _params(x: np.ndarray) -> JointParams:
    e, a, b, alpha, beta = (float(value) for value in x)
    return JointParams(E=_exp_or_inf(e), A=_exp_or_inf(a), B=_exp_or_inf(b), alpha=alpha, beta=beta)


def _exp_or_inf(value: float) -> float:
    return math.exp(value) if value < 709.0 else math.inf


def _interval(name: str, estimate: float, samples: list[float]) -> ParamInterval:
    """The percentile interval and standard deviation of the finite samples."""
    values = np.asarray(samples, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return ParamInterval(name, estimate, math.nan, math.nan, math.nan)
    low, high = np.percentile(values, CI_PERCENTILES)
    return ParamInterval(name, estimate, float(low), float(high), _std(values))


def _std(values: np.ndarray) -> float:
    """The sample standard deviation, nan for one value. Scaled by the largest magnitude first, as squares of
    values beyond ~1e154 (A or B of a degenerate resample) overflow; the product with the scale is a Python float,
    which gives inf rather than a warning where the deviation itself is beyond the largest float."""
    if len(values) < 2:
        return math.nan
    scale = float(np.max(np.abs(values)))
    return float(np.std(values / scale, ddof=1)) * scale if scale > 0 else 0.0


def _interval_dict(interval: ParamInterval) -> dict:
    return {"estimate": interval.estimate, "ci_low": interval.ci_low, "ci_high": interval.ci_high,
            "std_error": interval.std_error}


def _scalar_or_array(values: np.ndarray) -> float | np.ndarray:
    return float(values) if np.ndim(values) == 0 else values

