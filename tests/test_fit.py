"""The power-law fit on synthetic losses from known laws, and the scaling plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from abcmusic.scaling.fit import ScalingFit, fit_power_law, predict
from abcmusic.scaling.plot import plot_scaling

TRUE_ALPHA = 0.07
TRUE_A = 5.0
# Fewer resamples than the default keep the file fast; the intervals move in the third decimal.
N_BOOTSTRAP = 200


def synthetic_points(c: float, decades: float, noise: float, seeds_per_size: int, n_sizes: int = 8,
                     alpha: float = TRUE_ALPHA, a: float = TRUE_A, rng_seed: int = 0) -> list[tuple[float, float]]:
    """L = a·N^-α + c at log-spaced N from 1e5, each measurement times exp(noise·standard normal)."""
    rng = np.random.default_rng(rng_seed)
    sizes = np.geomspace(1e5, 1e5 * 10**decades, n_sizes)
    return [(float(n), float((a * n**-alpha + c) * np.exp(noise * rng.standard_normal())))
            for n in sizes for _ in range(seeds_per_size)]


@pytest.mark.parametrize("decades", [1.5, 3.0])
@pytest.mark.parametrize("seeds_per_size", [1, 3])
def test_pure_law_alpha_inside_a_narrow_interval(decades: float, seeds_per_size: int) -> None:
    points = synthetic_points(c=0.0, decades=decades, noise=0.01, seeds_per_size=seeds_per_size)
    fit = fit_power_law(points, n_bootstrap=N_BOOTSTRAP)
    pure = fit.pure
    assert fit.n_points == 8 * seeds_per_size and fit.n_sizes == 8
    assert pure.alpha_ci_low <= TRUE_ALPHA <= pure.alpha_ci_high
    assert pure.alpha_ci_high - pure.alpha_ci_low < 0.05
    assert pure.alpha_ci_low <= pure.alpha <= pure.alpha_ci_high
    assert pure.r2 > 0.97
    assert pure.c == 0.0 and pure.converged
    assert pure.a == pytest.approx(TRUE_A, rel=0.3)
    assert predict(pure, 1e6) == pytest.approx(TRUE_A * 1e6**-TRUE_ALPHA, rel=0.01)


@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_pure_law_with_seeds_is_not_reported_as_an_offset_law(rng_seed: int) -> None:
    # Without a margin, leave-one-out error picked the offset form here and reported alpha 0.08-0.17.
    points = synthetic_points(c=0.0, decades=1.5, noise=0.01, seeds_per_size=3, rng_seed=rng_seed)
    fit = fit_power_law(points, n_bootstrap=N_BOOTSTRAP)
    assert fit.chosen == "pure"
    assert fit.chosen_fit.alpha_ci_low <= TRUE_ALPHA <= fit.chosen_fit.alpha_ci_high


@pytest.mark.parametrize("seeds_per_size", [1, 3])
def test_offset_chosen_when_the_law_has_an_offset(seeds_per_size: int) -> None:
    points = synthetic_points(c=0.8, decades=3.0, noise=0.005, seeds_per_size=seeds_per_size)
    fit = fit_power_law(points, n_bootstrap=N_BOOTSTRAP)
    assert fit.offset is not None and fit.offset.converged
    assert fit.chosen == "offset"
    assert fit.offset.loo_rmse < fit.pure.loo_rmse
    assert fit.offset.alpha_ci_low <= TRUE_ALPHA <= fit.offset.alpha_ci_high
    assert fit.offset.r2 > 0.99
    assert 0.0 <= fit.offset.c < min(loss for _, loss in points)
    assert not fit.offset_near_min_loss
    # The pure form, fitted to a curve that flattens, underestimates α.
    assert fit.pure.alpha < TRUE_ALPHA


def test_offset_near_the_smallest_loss_is_flagged() -> None:
    # A steep law that has all but reached its floor: every loss is within 0.1% of c.
    points = synthetic_points(c=2.0, decades=3.0, noise=0.0002, seeds_per_size=1, alpha=0.5)
    fit = fit_power_law(points, n_bootstrap=50)
    assert fit.offset is not None
    assert fit.offset.c > 0.95 * min(loss for _, loss in points)
    assert fit.offset_near_min_loss
    assert fit.to_dict()["offset_near_min_loss"] is True


def test_fewer_than_four_sizes_skip_the_offset_form() -> None:
    points = synthetic_points(c=0.0, decades=1.5, noise=0.01, seeds_per_size=2, n_sizes=3)
    fit = fit_power_law(points, n_bootstrap=100)
    assert fit.offset is None
    assert fit.chosen == "pure"
    assert fit.offset_skipped_reason is not None and "3 distinct model sizes" in fit.offset_skipped_reason
    assert not fit.offset_near_min_loss
    assert np.isfinite(fit.pure.loo_rmse)


def test_two_sizes_fit_without_interval_or_loo() -> None:
    fit = fit_power_law([(1e6, 3.0), (1e7, 2.5)], n_bootstrap=50)
    assert fit.pure.alpha == pytest.approx(np.log10(3.0 / 2.5))
    assert np.isnan(fit.pure.loo_rmse) and np.isnan(fit.pure.alpha_ci_low)
    assert fit.pure.n_bootstrap_used == 0
    assert json.loads(json.dumps(fit.to_dict(), allow_nan=False))["pure"]["loo_rmse"] is None


@pytest.mark.parametrize("points", [[], [(1e6, 3.0)], [(1e6, 3.0), (1e6, 3.1), (1e6, 2.9)]])
def test_fewer_than_two_sizes_raise(points: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError, match="need at least 2 model sizes to fit a power law"):
        fit_power_law(points)


@pytest.mark.parametrize("bad_point", [(0.0, 3.0), (1e6, -1.0), (1e6, float("nan"))])
def test_invalid_points_raise(bad_point: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="N > 0"):
        fit_power_law([(1e5, 3.2), (1e7, 2.8), bad_point])


def test_same_inputs_and_seed_give_the_same_fit() -> None:
    points = synthetic_points(c=0.8, decades=3.0, noise=0.01, seeds_per_size=2, n_sizes=6)
    first = fit_power_law(points, n_bootstrap=100, seed=7)
    second = fit_power_law(list(points), n_bootstrap=100, seed=7)
    other_seed = fit_power_law(points, n_bootstrap=100, seed=8)
    assert first.to_dict() == second.to_dict()
    assert first.pure.alpha == other_seed.pure.alpha
    assert first.pure.alpha_ci_low != other_seed.pure.alpha_ci_low


def test_to_dict_is_strict_json() -> None:
    fit = fit_power_law(synthetic_points(c=0.8, decades=3.0, noise=0.01, seeds_per_size=1), n_bootstrap=50)
    loaded = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert loaded["chosen"] in ("pure", "offset")
    assert set(loaded["pure"]) == {"alpha", "a", "c", "alpha_ci_low", "alpha_ci_high", "r2", "loo_rmse",
                                   "converged", "n_bootstrap_used"}
    assert all(type(value) in (float, int, bool) for value in loaded["offset"].values())


def test_plot_writes_a_png_for_two_architectures(tmp_path) -> None:
    points = {
        "gpt": synthetic_points(c=0.0, decades=2.0, noise=0.01, seeds_per_size=3),
        "lstm": synthetic_points(c=0.8, decades=2.0, noise=0.01, seeds_per_size=1, alpha=0.05, rng_seed=1),
    }
    fits: dict[str, ScalingFit] = {name: fit_power_law(arch_points, n_bootstrap=50)
                                   for name, arch_points in points.items()}
    path = plot_scaling(fits, points, tmp_path / "scaling.png")
    assert path == tmp_path / "scaling.png"
    content = path.read_bytes()
    assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) > 1000


def test_offset_that_does_not_converge_is_reported_not_raised(monkeypatch) -> None:
    import abcmusic.scaling.fit as fit_module

    real_least_squares = fit_module.least_squares

    def never_converges(*args, **kwargs):
        result = real_least_squares(*args, **{**kwargs, "max_nfev": 1})
        result.success = False
        return result

    monkeypatch.setattr(fit_module, "least_squares", never_converges)
    fit = fit_power_law(synthetic_points(c=0.8, decades=3.0, noise=0.005, seeds_per_size=1), n_bootstrap=50)
    assert fit.offset is not None and not fit.offset.converged
    assert fit.offset.n_bootstrap_used == 0 and np.isnan(fit.offset.loo_rmse)
    assert fit.chosen == "pure"
    json.dumps(fit.to_dict(), allow_nan=False)
