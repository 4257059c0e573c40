"""The ladder analysis on synthetic cells from a known law L(N, D) = E + A/N^α + B/D^β: recovery of the law,
coverage of its bootstrap and prediction intervals, held-out prediction, IsoFLOP minima, the compute frontier
under C = k·N·D, repetition, the report and the plots."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from abcmusic.scaling.joint import PARAM_NAMES, JointParams, compute_optimal, predict_loss, summarize_allocation
from abcmusic.scaling.isoflop import isoflop_study
from abcmusic.scaling.ladder import (ArchitectureLaw, Cell, analyze_architecture, compute_frontier, held_out_test,
                                     predict_cells)
from abcmusic.scaling.ladder_plot import plot_frontier, plot_held_out, plot_loss_against_d, plot_loss_against_n
from abcmusic.scaling.prediction import DrawSource, FitSettings, fit_cells, scatter_about
from abcmusic.scaling.repetition import NOT_ASSESSED, effective_tokens, repetition_study

TRUE = JointParams(E=1.0, A=30.0, B=200.0, alpha=0.35, beta=0.3)
TRUE_N_EXPONENT = TRUE.beta / (TRUE.alpha + TRUE.beta)
NOISE = 0.003
# Five sizes over two decades; four budgets spanning 8x, as a sweep's warmup-stable-decay budgets do.
SIZES = tuple(np.geomspace(5e4, 5e6, 5))
BUDGETS = tuple(2e7 * 2.0 ** np.arange(4))
# Few resamples and starts keep the file fast; the fits still converge to the same optimum on these designs.
QUICK = FitSettings(n_bootstrap=10, max_starts=3, seed=0)
COVERAGE_DRAWS = 30
COVERAGE_BOOTSTRAP = 12


def make_cells(sizes, budgets, noise: float, seed: int = 0, k: float = 6.0, unique_tokens: float = 1e12,
               r_star: float = math.inf, loss_se: float = math.nan) -> list[Cell]:
    """TRUE at every (N, D) times exp(noise·standard normal). Cells beyond `unique_tokens` are multi-epoch and,
    with a finite r_star, reach only the loss of Muennighoff et al.'s effective data."""
    rng = np.random.default_rng(seed)
    cells = []
    for n in sizes:
        for d in budgets:
            epochs = d / unique_tokens
            effective_d = d
            if epochs > 1 and math.isfinite(r_star):
                effective_d = float(effective_tokens(np.array(unique_tokens), np.array(epochs - 1.0), r_star))
            loss = predict_loss(TRUE, n, effective_d) * math.exp(noise * rng.standard_normal())
            cells.append(Cell(size=f"{n / 1e3:.0f}k", n=float(n), d=float(d), loss=loss, loss_se=loss_se,
                              flops=k * n * d, epochs=epochs, seed=0))
    return cells


def is_largest_n(cells: list[Cell]):
    largest = max(cell.n for cell in cells)
    return lambda cell: cell.n == largest


def test_joint_fit_recovers_known_parameters() -> None:
    # Budgets over two decades here, because at 8x B is barely determined (its estimate scatters by ±50% over noise
    # draws). Over 40 noise draws of this design the estimates scatter with standard deviations E 0.021, A 3.1,
    # B 22, alpha 0.011, beta 0.008; the tolerances are ~3.3 of them.
    cells = make_cells(SIZES, np.geomspace(1e7, 1e9, 4), NOISE, seed=3)
    fit = fit_cells(cells, FitSettings(n_bootstrap=0, max_starts=5))
    tolerance = {"E": 0.07, "A": 10.0, "B": 70.0, "alpha": 0.035, "beta": 0.025}
    assert fit.converged and fit.n_points == 20
    for name in PARAM_NAMES:
        assert getattr(fit.params, name) == pytest.approx(getattr(TRUE, name), abs=tolerance[name]), name


@dataclasses.dataclass(frozen=True)
class CoverageDraw:
    """One noise draw of the 5×4 ladder, the law fitted without its largest size: whether each parameter's
    bootstrap interval holds the true value, whether each held-out cell's prediction interval holds its loss, the
    width of the α interval and the log-widths of the prediction intervals."""

    parameters_covered: list[bool]
    cells_inside: list[bool]
    alpha_width: float
    prediction_log_widths: list[float]


@pytest.fixture(scope="module")
def coverage_draws() -> list[CoverageDraw]:
    draws = []
    for draw in range(COVERAGE_DRAWS):
        cells = make_cells(SIZES, BUDGETS, NOISE, seed=1000 + draw)
        held = is_largest_n(cells)
        rest = [cell for cell in cells if not held(cell)]
        fit = fit_cells(rest, FitSettings(n_bootstrap=COVERAGE_BOOTSTRAP, max_starts=3, seed=draw))
        predictions, _ = predict_cells(fit, scatter_about(fit, rest), [cell for cell in cells if held(cell)],
                                       seed=draw)
        alpha = fit.interval("alpha")
        draws.append(CoverageDraw(
            parameters_covered=[fit.interval(name).ci_low <= getattr(TRUE, name) <= fit.interval(name).ci_high
                                for name in PARAM_NAMES],
            cells_inside=[cell.inside for cell in predictions],
            alpha_width=alpha.ci_high - alpha.ci_low,
            prediction_log_widths=[math.log(cell.interval_high / cell.interval_low) for cell in predictions]))
    return draws


def percentile_interval_rate(resamples: int) -> float:
    """The coverage of a 95% percentile interval over `resamples` draws from the estimate's true distribution:
    numpy's 2.5th percentile of B values lies at order statistic 1 + 0.025·(B − 1), which falls on average at that
    over B + 1 of the distribution (80% for 12 resamples, 94% for 200)."""
    return 1.0 - 2.0 * (1.0 + 0.025 * (resamples - 1)) / (resamples + 1)


# Over 100 draws of this design the share of a draw's 5 parameter intervals that cover varies by a standard
# deviation of 0.25 between draws, of its 4 prediction intervals by 0.12; the draws are the independent units, as
# the events within one share its fit. The tolerances are 3 standard errors of a mean over the draws. Those 100
# draws covered 84% of the parameters, for a nominal 80%, and 95.5% of the held-out cells. Too low a rate is the
# failure that misleads; too wide intervals are caught by their widths instead, against ~2x what they are here.
PARAMETER_TOLERANCE = 3.0 * 0.25 / math.sqrt(COVERAGE_DRAWS)
PREDICTION_TOLERANCE = 3.0 * 0.12 / math.sqrt(COVERAGE_DRAWS)


def test_bootstrap_intervals_cover_the_true_parameters(coverage_draws: list[CoverageDraw]) -> None:
    coverage = np.mean([draw.parameters_covered for draw in coverage_draws])
    assert coverage >= percentile_interval_rate(COVERAGE_BOOTSTRAP) - PARAMETER_TOLERANCE, coverage
    # The α intervals are ~0.09 wide here (16 cells over 4 sizes).
    assert np.median([draw.alpha_width for draw in coverage_draws]) < 0.18


def test_prediction_intervals_cover_held_out_cells(coverage_draws: list[CoverageDraw]) -> None:
    coverage = np.mean([inside for draw in coverage_draws for inside in draw.cells_inside])
    assert coverage >= 0.95 - PREDICTION_TOLERANCE, coverage
    # The intervals are ~±1% here, for 0.3% noise and the extrapolation of the law.
    assert np.median([width for draw in coverage_draws for width in draw.prediction_log_widths]) < 0.04


def test_held_out_prediction_is_exact_on_a_noiseless_ladder_whatever_the_cells_standard_errors() -> None:
    # Losses exactly on the law: the fit is exact, so the interval is the ~1e-9 spread of the bootstrap solutions
    # and the residual scatter. The cells' standard errors are shared by every cell (one validation split), so
    # they leave the intervals as they are, even at 1% of the loss.
    cells = make_cells(SIZES, BUDGETS, noise=0.0, loss_se=math.nan)
    measured = [dataclasses.replace(cell, loss_se=0.01 * cell.loss) for cell in cells]
    largest_d = max(BUDGETS)
    for name, value, is_held_out in (("largest N", max(SIZES), is_largest_n(cells)),
                                     ("largest D", largest_d, lambda cell: cell.d == largest_d)):
        test = held_out_test(name, value, cells, is_held_out, QUICK)
        assert test.skipped_reason is None and test.warning is None and test.has_intervals
        assert test.draw_source == DrawSource(n_usable=10, n_solutions=10, from_bootstrap=True, reason=None)
        assert len(test.cells) == (4 if name == "largest N" else 5) and test.n_fitted == 20 - len(test.cells)
        assert test.scatter.rms < 1e-8
        for cell in test.cells:
            assert abs(cell.error_percent) < 1e-5, (name, cell)
            assert cell.interval_low < cell.predicted < cell.interval_high, (name, cell)
            assert cell.interval_high < cell.interval_low * (1 + 1e-7), (name, cell)
        assert held_out_test(name, value, measured, is_held_out, QUICK).cells == test.cells


def test_isoflop_minima_recover_the_compute_optimal_exponent() -> None:
    # Dense enough that 3 to 9 sizes reach each level and the optimum lies inside them. The profile is not a
    # parabola in log N and the losses are interpolated between budgets, which biases each minimum a little;
    # on this grid the exponent comes out 0.4605 for a true 0.4615.
    cells = make_cells(np.geomspace(1e4, 1e6, 9), np.geomspace(1e7, 1e10, 13), noise=0.0)
    study = isoflop_study(cells)
    assert study.reason is None and len(study.minima) >= 6
    assert all(len(profile.sizes) >= 3 for profile in study.profiles)
    assert study.exponent == pytest.approx(TRUE_N_EXPONENT, abs=0.01)
    assert study.exponent_ci_low <= TRUE_N_EXPONENT <= study.exponent_ci_high
    # Each minimum is where the law's own optimum is, to the interpolation's few percent.
    optimal = compute_optimal(TRUE)
    for profile in study.minima:
        assert profile.n_opt == pytest.approx(optimal.n_opt(profile.flop), rel=0.05)


def test_isoflop_reports_minima_at_the_edge() -> None:
    # Budgets far beyond the optimum for every size: the profiles fall towards the largest size.
    study = isoflop_study(make_cells(np.geomspace(1e4, 1e5, 6), np.geomspace(1e10, 1e11, 5), noise=0.0))
    assert study.profiles and not study.minima
    assert all(profile.reason == "minimum at the edge: above the largest size" for profile in study.profiles)
    assert math.isnan(study.exponent) and "an exponent needs 2" in study.reason


@pytest.mark.parametrize("k", [6.0, 8.0])
def test_frontier_uses_the_cells_flops_per_parameter_token(k: float) -> None:
    cells = make_cells(SIZES, BUDGETS, noise=NOISE, k=k)
    fit = fit_cells(cells, QUICK)
    frontier = compute_frontier(fit, cells)
    assert frontier.flops_per_parameter_token == pytest.approx(k)
    flops = [cell.flops for cell in cells]
    assert [budget.flop for budget in frontier.budgets] == pytest.approx(
        [min(flops), math.sqrt(min(flops) * max(flops)), max(flops)])
    if k == 6.0:
        reference = summarize_allocation(fit, budgets=[budget.flop for budget in frontier.budgets])
        assert frontier.n_exponent == reference.n_exponent and frontier.d_exponent == reference.d_exponent
        assert frontier.budgets == reference.budgets
    for budget in frontier.budgets:
        assert k * budget.n_opt * budget.d_opt == pytest.approx(budget.flop, rel=1e-9)
        assert frontier.n_opt(budget.flop) == pytest.approx(budget.n_opt, rel=1e-9)
        # Along C = k·N·D the loss is lowest at N_opt.
        sizes = budget.n_opt * np.geomspace(0.5, 2.0, 41)
        assert np.argmin(predict_loss(fit.params, sizes, budget.flop / (k * sizes))) == 20


def test_too_few_cells_are_reasons_not_errors() -> None:
    # 2 sizes × 3 budgets: without the largest size 3 cells are left, without the largest budget 4.
    cells = make_cells(SIZES[:2], BUDGETS[:3], noise=NOISE)
    law = analyze_architecture(cells, n_bootstrap=5, max_starts=3)
    by_name = {test.name: test for test in law.held_out}
    assert by_name["largest N"].skipped_reason.startswith("the other cells are too few: 3 cells")
    assert by_name["largest D"].skipped_reason.startswith("the other cells are too few: 4 cells")
    assert not by_name["largest N"].cells
    assert "2 distinct N" in law.warning
    assert law.isoflop.reason.startswith("no compute level is reached by 3 sizes")
    assert "not compared" in law.isoflop_comparison
    assert law.repetition.message == NOT_ASSESSED and not law.repetition.assessed
    assert any("skipped" in line for line in law.report_lines()[:3])
    with pytest.raises(ValueError, match="at least 6"):
        analyze_architecture(cells[:5])


def test_one_budget_level_left_is_a_reason() -> None:
    # 7 sizes × 2 budgets: without the largest budget the 7 cells left all have the same D.
    cells = make_cells(np.geomspace(5e4, 5e6, 7), BUDGETS[:2], noise=NOISE)
    test = held_out_test("largest D", BUDGETS[1], cells, lambda cell: cell.d == BUDGETS[1], QUICK)
    assert test.skipped_reason == ("the other cells are too few: 7 distinct N and 1 distinct D: the law needs at "
                                   "least 2 of each")
    assert test.n_fitted == 7 and not test.cells


def test_repetition_detects_repeated_cells_worse_than_the_law() -> None:
    # 1, 2 and 4 epochs beyond 3 single-epoch budgets; with R* = 2 the 4-epoch cells are ~7% worse than fresh data.
    budgets = 1e7 * 2.0 ** np.arange(5)
    bent = repetition_study(make_cells(SIZES, budgets, NOISE, unique_tokens=4e7, r_star=2.0), QUICK)
    assert bent.assessed and bent.n_single_epoch_cells == 15 and len(bent.cells) == 10
    assert bent.beyond_noise and bent.mean_residual_percent > 2.0
    assert "worse than the law beyond its noise" in bent.message
    assert bent.r_star == pytest.approx(2.0, rel=0.3)
    assert bent.r_star_ci_low <= 2.0 <= bent.r_star_ci_high
    for cell in bent.cells:
        assert cell.epochs > 1 and cell.effective_d < cell.d

    fresh = repetition_study(make_cells(SIZES, budgets, NOISE, unique_tokens=4e7), QUICK)
    assert fresh.assessed and not fresh.beyond_noise
    assert "within the law's noise" in fresh.message


def test_repetition_needs_single_epoch_cells_to_fit_the_law() -> None:
    study = repetition_study(make_cells(SIZES, BUDGETS, NOISE, unique_tokens=BUDGETS[0]), QUICK)
    assert not study.assessed and "single-epoch cells cannot carry the law" in study.message


@pytest.fixture(scope="module")
def ladder() -> tuple[ArchitectureLaw, list[Cell]]:
    """A sweep-like ladder: 7 sizes, 4 budgets over 8x of which the largest repeats data, FLOPs 6.5·N·D and
    known standard errors; dense enough in N for IsoFLOP minima."""
    cells = make_cells(np.geomspace(3e4, 1e6, 7), np.geomspace(1e8, 8e8, 4), NOISE, k=6.5, unique_tokens=5e8,
                       r_star=5.0, loss_se=0.002)
    return analyze_architecture(cells, n_bootstrap=10, max_starts=3), cells


def test_report_starts_with_the_held_out_predictions(ladder) -> None:
    law, cells = ladder
    lines = law.report_lines()
    assert lines[0].startswith("held-out predictions")
    assert lines[1].startswith("  largest N") and "from 24 cells" in lines[1]
    assert len([line for line in lines[:16] if "%" in line and "[" in line]) == 7 + 4
    assert law.n_cells == 28 and law.n_sizes == 7 and len(law.per_budget) == 4
    assert law.frontier.flops_per_parameter_token == pytest.approx(6.5)
    assert law.isoflop.minima and "surface" in law.isoflop_comparison
    assert law.repetition.assessed and len(law.repetition.cells) == 7
    assert any(line.startswith("  alpha at the largest budget") for line in lines)


def test_degenerate_bootstrap_solutions_are_left_out_of_the_intervals(ladder, tmp_path: Path) -> None:
    # A resample can overflow A to inf; where N^-α underflows too the law is inf·0 there. Such solutions are
    # dropped without numpy warnings, and with none left the intervals are absent with the reason why.
    cells = make_cells(SIZES, BUDGETS, NOISE)
    held = is_largest_n(cells)
    rest, targets = [cell for cell in cells if not held(cell)], [cell for cell in cells if held(cell)]
    fit = fit_cells(rest, QUICK)
    scatter = scatter_about(fit, rest)
    degenerate = (JointParams(E=1.0, A=math.inf, B=200.0, alpha=100.0, beta=0.3),
                  JointParams(E=1.0, A=math.inf, B=200.0, alpha=0.35, beta=0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixed, source = predict_cells(dataclasses.replace(fit, bootstrap_params=fit.bootstrap_params + degenerate),
                                      scatter, targets, seed=0)
        assert source == DrawSource(n_usable=10, n_solutions=12, from_bootstrap=True, reason=None)
        assert all(math.isfinite(cell.interval_low) and math.isfinite(cell.interval_high) for cell in mixed)
        none, source = predict_cells(dataclasses.replace(fit, bootstrap_params=degenerate), scatter, targets, seed=0)
    assert source.n_usable == 0 and source.reason == ("none of the 2 bootstrap solutions predicts a finite loss at "
                                                      "every target")
    assert all(math.isnan(cell.interval_low) and not cell.inside for cell in none)

    law, _ = ladder
    without = dataclasses.replace(law.held_out[0], draw_source=source, cells=none)
    law = dataclasses.replace(law, held_out=(without, law.held_out[1]))
    lines = law.report_lines()
    assert lines[1].endswith(f"dof: no prediction intervals: {source.reason}")
    assert not any("nan" in line or "OUTSIDE" in line for line in lines[3:3 + len(none)])
    assert "intervals from 10 of 10 bootstrap solutions" in lines[3 + len(none)]
    assert plot_held_out(law, tmp_path / "held_out.png").stat().st_size > 10_000


def test_to_dict_is_strict_json_with_every_study(ladder) -> None:
    law, _ = ladder
    payload = json.loads(json.dumps(law.to_dict(), allow_nan=False))
    assert [test["name"] for test in payload["held_out"]] == ["largest N", "largest D"]
    assert len(payload["held_out"][0]["cells"]) == 4
    assert set(payload["held_out"][0]["cells"][0]) == {"size", "n", "d", "epochs", "predicted", "interval_low",
                                                         "interval_high", "actual", "error_percent", "inside"}
    assert payload["held_out"][0]["has_intervals"] and payload["held_out"][0]["draw_source"]["n_solutions"] == 10
    assert payload["fit"]["n_bootstrap_used"] > 0
    assert payload["frontier"]["flops_per_parameter_token"] == pytest.approx(6.5)
    assert payload["alpha_at_largest_d"]["d"] == pytest.approx(8e8)
    assert payload["repetition"]["assessed"] and payload["isoflop"]["profiles"]


def test_plots_write_non_empty_pngs(ladder, tmp_path: Path) -> None:
    law, cells = ladder
    paths = [plot_loss_against_n(law, cells, tmp_path / "loss_n.png"),
             plot_loss_against_d(law, cells, tmp_path / "loss_d.png"),
             plot_frontier(law, cells, tmp_path / "frontier.png"),
             plot_held_out(law, tmp_path / "held_out.png")]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000, path
