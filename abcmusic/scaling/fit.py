"""Power-law fits of final validation loss L against model size N: pure L = a·N^-α and offset L = a·N^-α + c."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import least_squares

MIN_SIZES = 2
MIN_SIZES_OFFSET = 4
MIN_SIZES_BOOTSTRAP = 3
ALPHA_MIN = 1e-6
ALPHA_MAX = 3.0
NEAR_MIN_LOSS_FRACTION = 0.95
OFFSET_MIN_LOO_GAIN = 0.10
OFFSET_START_FRACTIONS = (0.0, 0.5, 0.8, 0.95)
CI_PERCENTILES = (2.5, 97.5)
# exp(b) is the reducible loss at the reference size; ±40 in log keeps exp finite and is far beyond any real fit.
LOG_REDUCIBLE_SPAN = 40.0


@dataclass(frozen=True)
class FormFit:
    """One fitted form. `loo_rmse` and `r2` are in log-loss space; the α interval is a bootstrap percentile interval
    over `n_bootstrap_used` resamples (nan when none could be fitted)."""

    alpha: float
    a: float
    c: float
    alpha_ci_low: float
    alpha_ci_high: float
    r2: float
    loo_rmse: float
    converged: bool
    n_bootstrap_used: int


@dataclass(frozen=True)
class ScalingFit:
    n_points: int
    n_sizes: int
    pure: FormFit
    offset: FormFit | None
    offset_skipped_reason: str | None
    chosen: str
    offset_near_min_loss: bool

    @property
    def chosen_fit(self) -> FormFit:
        return self.offset if self.chosen == "offset" and self.offset is not None else self.pure

    def to_dict(self) -> dict:
        """Plain JSON types; nan and inf become None so that strict JSON parsers accept the result."""
        return json_safe(asdict(self))


@dataclass(frozen=True)
class _Params:
    alpha: float
    a: float
    c: float
    converged: bool


def fit_power_law(points: Sequence[tuple[float, float]], n_bootstrap: int = 1000, seed: int = 0) -> ScalingFit:
    """Fit both forms to (N, L) points, where repeated N are separate seed measurements, and choose the form with
    the lower leave-one-size-out RMSE."""
    log_n, log_loss = _log_points(points)
    n_sizes = len(np.unique(log_n))
    if n_sizes < MIN_SIZES:
        raise ValueError("need at least 2 model sizes to fit a power law")
    resamples = _bootstrap_resamples(log_n, n_bootstrap, seed)

    pure_full = _fit_pure(log_n, log_loss)
    pure = _form_fit(pure_full, _fit_pure, _fit_pure, log_n, log_loss, resamples, MIN_SIZES_BOOTSTRAP)

    offset: FormFit | None = None
    skipped_reason: str | None = None
    if n_sizes < MIN_SIZES_OFFSET:
        skipped_reason = (f"only {n_sizes} distinct model sizes; the offset form has 3 parameters and needs at least "
                          f"{MIN_SIZES_OFFSET}")
    else:
        offset_full = _fit_offset(log_n, log_loss)

        def fit_offset_warm(sub_log_n: np.ndarray, sub_log_loss: np.ndarray) -> _Params:
            # From the full-data solution the solver needs ~10 steps; from the pure fit it crawls ~100 along the
            # α–c valley, so the cold starts are only the fallback.
            warm = _fit_offset(sub_log_n, sub_log_loss, warm_starts=(offset_full,), start_fractions=())
            return warm if warm.converged else _fit_offset(sub_log_n, sub_log_loss)

        # Leave-one-out refits start cold so that the held-out size cannot steer them. A resample with 3 sizes fits
        # the 3 offset parameters exactly, so its α says nothing: the bootstrap skips those too.
        offset = _form_fit(offset_full, _fit_offset, fit_offset_warm, log_n, log_loss, resamples, MIN_SIZES_OFFSET)

    min_loss = math.exp(float(log_loss.min()))
    return ScalingFit(
        n_points=len(log_n),
        n_sizes=n_sizes,
        pure=pure,
        offset=offset,
        offset_skipped_reason=skipped_reason,
        chosen=_choose(pure, offset),
        offset_near_min_loss=offset is not None and offset.c > NEAR_MIN_LOSS_FRACTION * min_loss,
    )


def predict(form: FormFit, n: float | np.ndarray) -> float | np.ndarray:
    """Loss the form predicts at size n (a scalar or an array)."""
    loss = form.a * np.power(np.asarray(n, dtype=float), -form.alpha) + form.c
    return float(loss) if np.ndim(loss) == 0 else loss


def _log_points(points: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(points, dtype=float).reshape(-1, 2) if len(points) else np.empty((0, 2))
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("every point needs a finite parameter count N > 0 and a finite loss L > 0")
    return np.log(values[:, 0]), np.log(values[:, 1])


def _choose(pure: FormFit, offset: FormFit | None) -> str:
    """The pure form unless the offset form predicts held-out sizes clearly better.

    The offset form contains the pure one, so leave-one-out error barely penalises it: on pure power-law data with
    several seeds per size it won by ~5% and reported alpha 0.08-0.17 for a true 0.07. It must lower the
    leave-one-out error by OFFSET_MIN_LOO_GAIN to be chosen."""
    if offset is None or not offset.converged or not math.isfinite(offset.loo_rmse):
        return "pure"
    if math.isfinite(pure.loo_rmse) and offset.loo_rmse > (1 - OFFSET_MIN_LOO_GAIN) * pure.loo_rmse:
        return "pure"
    return "offset"


def _form_fit(full: _Params, loo_fit: Callable[[np.ndarray, np.ndarray], _Params],
              bootstrap_fit: Callable[[np.ndarray, np.ndarray], _Params], log_n: np.ndarray, log_loss: np.ndarray,
              resamples: list[np.ndarray], min_bootstrap_sizes: int) -> FormFit:
    alphas = _bootstrap_alphas(bootstrap_fit, log_n, log_loss, resamples, min_bootstrap_sizes)
    low, high = (np.percentile(alphas, CI_PERCENTILES) if len(alphas) else (math.nan, math.nan))
    return FormFit(
        alpha=full.alpha,
        a=full.a,
        c=full.c,
        alpha_ci_low=float(low),
        alpha_ci_high=float(high),
        r2=_r2(full, log_n, log_loss),
        loo_rmse=_loo_rmse(loo_fit, log_n, log_loss),
        converged=full.converged,
        n_bootstrap_used=len(alphas),
    )


def _fit_pure(log_n: np.ndarray, log_loss: np.ndarray) -> _Params:
    """Ordinary least squares of log L on log N."""
    centered_n = log_n - log_n.mean()
    slope = float(np.dot(centered_n, log_loss - log_loss.mean()) / np.dot(centered_n, centered_n))
    log_a = float(log_loss.mean() - slope * log_n.mean())
    return _Params(alpha=-slope, a=math.exp(log_a), c=0.0, converged=True)


def _fit_offset(log_n: np.ndarray, log_loss: np.ndarray, warm_starts: Sequence[_Params] = (),
                start_fractions: Sequence[float] = OFFSET_START_FRACTIONS) -> _Params:
    """Minimise Σ (log L - log(a·N^-α + c))² from several starts and keep the lowest converged cost.

    Internally a = exp(b)·N_ref^α with N_ref the geometric mean of the sizes, because (log a, α) are strongly
    correlated when N is far from 1 and the solver converges poorly in them."""
    log_n_ref = float(np.unique(log_n).mean())
    x = log_n - log_n_ref
    min_loss = math.exp(float(log_loss.min()))
    max_log_loss = float(log_loss.max())
    lower = np.array([max_log_loss - LOG_REDUCIBLE_SPAN, ALPHA_MIN, 0.0])
    # c must stay strictly below the smallest observed loss.
    upper = np.array([max_log_loss + LOG_REDUCIBLE_SPAN, ALPHA_MAX, min_loss * (1.0 - 1e-9)])

    def residuals(params: np.ndarray) -> np.ndarray:
        b, alpha, c = params
        return log_loss - np.log(np.exp(b - alpha * x) + c)

    def jacobian(params: np.ndarray) -> np.ndarray:
        b, alpha, c = params
        reducible = np.exp(b - alpha * x)
        model = reducible + c
        return np.column_stack([-reducible / model, x * reducible / model, -1.0 / model])

    starts = [_offset_start_from_pure(_fit_pure(log_n, log_loss), log_n_ref, fraction * min_loss)
              for fraction in start_fractions]
    starts += [np.array([math.log(p.a) - p.alpha * log_n_ref, p.alpha, p.c]) for p in warm_starts
               if p.a > 0 and math.isfinite(p.alpha)]

    best_converged = None
    best_any = None
    for start in starts:
        start = np.clip(start, lower, upper)
        try:
            result = least_squares(residuals, start, jac=jacobian, bounds=(lower, upper), method="trf",
                                   x_scale="jac")
        except (ValueError, np.linalg.LinAlgError):
            continue
        if not np.isfinite(result.cost):
            continue
        if best_any is None or result.cost < best_any.cost:
            best_any = result
        if result.success and (best_converged is None or result.cost < best_converged.cost):
            best_converged = result

    best = best_converged if best_converged is not None else best_any
    if best is None:
        return _Params(alpha=math.nan, a=math.nan, c=math.nan, converged=False)
    b, alpha, c = (float(value) for value in best.x)
    return _Params(alpha=alpha, a=math.exp(b + alpha * log_n_ref), c=c, converged=best_converged is not None)


def _offset_start_from_pure(pure: _Params, log_n_ref: float, c_start: float) -> np.ndarray:
    """With an offset c the reducible part r = L - c is steeper: the pure slope α_pure ≈ α·r/(r + c)."""
    loss_ref = pure.a * math.exp(-pure.alpha * log_n_ref)
    reducible_ref = max(loss_ref - c_start, 1e-3 * loss_ref)
    alpha_start = min(max(pure.alpha, 0.01) * loss_ref / reducible_ref, ALPHA_MAX)
    return np.array([math.log(reducible_ref), alpha_start, c_start])


def _predict_log(params: _Params, log_n: np.ndarray) -> np.ndarray:
    return np.log(params.a * np.exp(-params.alpha * log_n) + params.c)


def _r2(params: _Params, log_n: np.ndarray, log_loss: np.ndarray) -> float:
    total = float(np.sum((log_loss - log_loss.mean()) ** 2))
    if total == 0.0 or not params.converged:
        return math.nan
    return 1.0 - float(np.sum((log_loss - _predict_log(params, log_n)) ** 2)) / total


def _loo_rmse(fit: Callable[[np.ndarray, np.ndarray], _Params], log_n: np.ndarray, log_loss: np.ndarray) -> float:
    """Leave out one size (all its seeds) at a time, refit, and predict it; nan when a fold cannot be fitted."""
    sizes = np.unique(log_n)
    if len(sizes) < MIN_SIZES + 1:
        return math.nan
    squared_errors = []
    for size in sizes:
        held_out = log_n == size
        params = fit(log_n[~held_out], log_loss[~held_out])
        if not params.converged:
            return math.nan
        squared_errors.append((log_loss[held_out] - _predict_log(params, log_n[held_out])) ** 2)
    return float(np.sqrt(np.concatenate(squared_errors).mean()))


def _bootstrap_resamples(log_n: np.ndarray, n_bootstrap: int, seed: int) -> list[np.ndarray]:
    """Two-stage resampling: sizes with replacement, then each drawn size's seed measurements with replacement.
    With one measurement per size this is the ordinary resampling of points; with seeds the interval also carries
    the seed-to-seed noise."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(log_n == size) for size in np.unique(log_n)]
    resamples = []
    for _ in range(n_bootstrap):
        drawn = rng.integers(len(groups), size=len(groups))
        resamples.append(np.concatenate([rng.choice(groups[g], size=len(groups[g])) for g in drawn]))
    return resamples


def _bootstrap_alphas(fit: Callable[[np.ndarray, np.ndarray], _Params], log_n: np.ndarray, log_loss: np.ndarray,
                      resamples: list[np.ndarray], min_sizes: int) -> np.ndarray:
    alphas = []
    for indices in resamples:
        if len(np.unique(log_n[indices])) < min_sizes:
            continue
        params = fit(log_n[indices], log_loss[indices])
        if params.converged:
            alphas.append(params.alpha)
    return np.asarray(alphas)


def json_safe(value: object) -> object:
    """Plain JSON types: nan and inf become None, numpy numbers Python ones."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")
