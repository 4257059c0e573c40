"""The joint fit L(N, D) = E + A/N^α + B/D^β: recovery of known laws, the Chinchilla replication's estimates,
the compute-optimal allocation, and `python -m abcmusic.scaling` end to end, with and without a ladder."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abcmusic.cli import run_cli
from abcmusic.scaling.__main__ import PROGRAM, main
from abcmusic.scaling.joint import (PARAM_NAMES, JointParams, compute_optimal, derived_interval, drop_highest_losses,
                                    fit_joint, predict_loss, summarize_allocation)
from abcmusic.testing import SHARED_DATA, cli_env

TRUE = JointParams(E=1.7, A=400.0, B=1500.0, alpha=0.34, beta=0.28)
CHINCHILLA_CSV = SHARED_DATA / "chinchilla" / "svg_extracted_data.csv"
# Besiroglu et al. 2024, table 1: the estimates and their standard errors.
PUBLISHED = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}
PUBLISHED_STD_ERROR = {"E": 0.03, "A": 125.0, "B": 1293.0, "alpha": 0.02, "beta": 0.02}
# Few resamples keep the file fast; the standard errors then move by ~20%.
N_BOOTSTRAP = 20


def synthetic_runs(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TRUE on an 8×8 grid of N in [5e7, 1e10] and D in [1e9, 3e11], each loss times exp(noise·standard normal)."""
    rng = np.random.default_rng(seed)
    n, d = (grid.ravel() for grid in np.meshgrid(np.geomspace(5e7, 1e10, 8), np.geomspace(1e9, 3e11, 8)))
    loss = predict_loss(TRUE, n, d) * np.exp(noise * rng.standard_normal(n.size))
    return n, d, loss


def chinchilla_runs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not CHINCHILLA_CSV.is_file():
        pytest.skip(f"Chinchilla points not found at {CHINCHILLA_CSV}")
    frame = pd.read_csv(CHINCHILLA_CSV)
    n = frame["Model Size"].to_numpy(dtype=float)
    return n, frame["Training FLOP"].to_numpy(dtype=float) / (6.0 * n), frame["loss"].to_numpy(dtype=float)


def test_exact_law_is_recovered_exactly() -> None:
    fit = fit_joint(*synthetic_runs(noise=0.0), n_bootstrap=0)
    assert fit.converged and fit.n_points == 64
    for name in PARAM_NAMES:
        assert getattr(fit.params, name) == pytest.approx(getattr(TRUE, name), rel=1e-4), name
    assert fit.huber_objective < 1e-12


def test_noisy_law_is_recovered_within_its_spread() -> None:
    fit = fit_joint(*synthetic_runs(noise=0.005), n_bootstrap=30, seed=1)
    # Over 20 noise seeds of this design the estimates scatter with standard deviations E 0.03, A 116, B 118,
    # alpha 0.015, beta 0.004 (A is the least determined: N spans only 2.3 decades); the bounds are ~3 of them.
    tolerance = {"E": 0.09, "A": 350.0, "B": 350.0, "alpha": 0.045, "beta": 0.012}
    assert fit.converged and fit.n_bootstrap_used == 30
    for name in PARAM_NAMES:
        interval = fit.interval(name)
        assert interval.estimate == pytest.approx(getattr(TRUE, name), abs=tolerance[name]), name
        assert interval.ci_low <= getattr(TRUE, name) <= interval.ci_high, name
        assert interval.ci_low <= interval.estimate <= interval.ci_high and interval.std_error > 0, name


def test_chinchilla_estimates_match_the_replication() -> None:
    n, d, loss = drop_highest_losses(*chinchilla_runs(), 5)
    fit = fit_joint(n, d, loss, n_bootstrap=N_BOOTSTRAP)
    assert fit.converged and fit.n_points == 240
    # Within one published standard error of each published estimate: the points and the procedure are the
    # replication's, so only the optimiser differs (we get 1.817, 478, 2143, 0.347, 0.367, as a plain scipy re-fit).
    for name in PARAM_NAMES:
        interval = fit.interval(name)
        assert interval.estimate == pytest.approx(PUBLISHED[name], abs=PUBLISHED_STD_ERROR[name]), name
        # 20 resamples estimate a standard error to ~±30%; a factor of 2 catches a broken bootstrap.
        assert 0.5 < interval.std_error / PUBLISHED_STD_ERROR[name] < 2.0, name
    # Their headline: ~20 tokens per parameter at Chinchilla's budget, exponents near 0.5.
    allocation = summarize_allocation(fit, budgets=(5.76e23,))
    assert allocation.n_exponent.estimate == pytest.approx(0.514, abs=0.005)
    assert 15 < allocation.budgets[0].tokens_per_parameter.estimate < 25


def test_leaving_out_the_highest_losses_changes_the_chinchilla_fit() -> None:
    # Keeping the 5 earliest, least-trained runs pulls B to ~12,800 and beta to 0.45 (data README).
    fit = fit_joint(*chinchilla_runs(), n_bootstrap=0)
    assert fit.params.B > 8000 and fit.params.beta > 0.42


def test_drop_highest_losses_keeps_the_order_of_the_rest() -> None:
    n, d, loss = np.arange(1.0, 7.0), np.arange(11.0, 17.0), np.array([3.0, 9.0, 1.0, 8.0, 2.0, 4.0])
    kept_n, kept_d, kept_loss = drop_highest_losses(n, d, loss, 2)
    assert kept_loss.tolist() == [3.0, 1.0, 2.0, 4.0]
    assert kept_n.tolist() == [1.0, 3.0, 5.0, 6.0] and kept_d.tolist() == [11.0, 13.0, 15.0, 16.0]
    assert drop_highest_losses(n, d, loss, 0)[2].tolist() == loss.tolist()


@pytest.mark.parametrize("params", [TRUE, JointParams(E=1.82, A=482.0, B=2085.0, alpha=0.348, beta=0.366)])
def test_compute_optimal_allocation_spends_the_budget_at_the_minimum(params: JointParams) -> None:
    optimal = compute_optimal(params)
    assert optimal.n_exponent == pytest.approx(params.beta / (params.alpha + params.beta), rel=1e-12)
    assert optimal.d_exponent == pytest.approx(params.alpha / (params.alpha + params.beta), rel=1e-12)
    for flop in (1e19, 1e21, 1e23, 1e25):
        n_opt, d_opt = optimal.n_opt(flop), optimal.d_opt(flop)
        assert 6.0 * n_opt * d_opt == pytest.approx(flop, rel=1e-9)
        assert optimal.tokens_per_parameter(flop) == pytest.approx(d_opt / n_opt, rel=1e-12)
        # Along the budget's curve D = C/(6N), the loss is lowest at N_opt.
        sizes = n_opt * np.geomspace(0.5, 2.0, 41)
        assert np.argmin(predict_loss(params, sizes, flop / (6.0 * sizes))) == 20


def test_compute_optimal_is_undefined_without_positive_exponents() -> None:
    optimal = compute_optimal(JointParams(E=1.0, A=1.0, B=1.0, alpha=-0.1, beta=0.3))
    assert np.isnan(optimal.n_exponent) and np.isnan(optimal.n_opt(1e21))


def test_degenerate_resamples_leave_the_intervals_finite_and_quiet() -> None:
    # Resamples of few points can overflow A or B to inf, underflow them to 0, or reach values whose squares
    # overflow; their derived quantities are left out of the intervals, without numpy warnings.
    fit = fit_joint(*synthetic_runs(noise=0.005), n_bootstrap=5)
    degenerate = (JointParams(E=1.7, A=math.inf, B=1500.0, alpha=0.34, beta=0.28),
                  JointParams(E=1.7, A=400.0, B=0.0, alpha=0.34, beta=0.28),
                  JointParams(E=1.7, A=1e300, B=1e-300, alpha=0.01, beta=0.01))
    widened = dataclasses.replace(fit, bootstrap_params=fit.bootstrap_params + degenerate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        allocation = summarize_allocation(widened)
        a_interval = derived_interval(widened, "A", lambda params: params.A)
    for interval in (allocation.n_exponent, *(budget.tokens_per_parameter for budget in allocation.budgets)):
        assert math.isfinite(interval.ci_low) and math.isfinite(interval.ci_high), interval
    # A's finite values are 6 near 400 and one 1e300, whose sample standard deviation is 1e300/√7.
    assert a_interval.std_error == pytest.approx(1e300 / math.sqrt(7), rel=1e-9)


def test_fit_rejects_bad_points() -> None:
    n, d, loss = synthetic_runs(noise=0.0)
    with pytest.raises(ValueError, match="at least 5"):
        fit_joint(n[:4], d[:4], loss[:4])
    with pytest.raises(ValueError, match="positive"):
        fit_joint(n, -d, loss)


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    home = cwd / ".home"
    home.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "abcmusic.scaling", *args], cwd=cwd, env=cli_env(home),
                          capture_output=True, text=True, timeout=300)


def test_cli_fits_the_chinchilla_csv(tmp_path: Path) -> None:
    chinchilla_runs()  # skips without the data
    out = tmp_path / "fit.json"
    result = run_module(str(CHINCHILLA_CSV), "--n-col", "Model Size", "--flops-col", "Training FLOP",
                        "--drop-highest", "5", "--bootstrap", str(N_BOOTSTRAP), "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    for name, expected in {"E": 1.817, "A": 477.8, "B": 2143, "alpha": 0.3473, "beta": 0.3672}.items():
        assert float(rows[name][1]) == pytest.approx(expected, rel=1e-3), name
    assert "240 of the 245 runs" in result.stdout and "1e+23" in rows
    # Every run has its own token count: not a ladder, so the tool says so rather than print a line per run.
    assert result.stdout.splitlines()[-2].startswith("ladder analysis not run: 240 distinct token counts")
    written = json.loads(out.read_text())
    assert written["fit"]["params"]["E"] == pytest.approx(1.817, abs=0.001)
    assert written["fit"]["n_bootstrap_used"] == N_BOOTSTRAP
    assert [budget["flop"] for budget in written["compute_optimal"]["budgets"]] == [1e21, 1e23, 1e25]
    assert written["ladder"] is None and written["ladder_not_run"].startswith("240 distinct token counts")


def write_ladder_csv(path: Path) -> None:
    """5 sizes × 4 budgets of TRUE with 0.3% noise, FLOPs 6.5·N·D, the largest budget at 2 epochs."""
    rng = np.random.default_rng(0)
    rows = ["size,N,D,F,epochs,loss"]
    for index, n in enumerate(np.geomspace(5e7, 1e10, 5)):
        for epochs, d in zip((0.125, 0.25, 0.5, 2.0), np.geomspace(1e9, 3e11, 4)):
            loss = predict_loss(TRUE, n, d) * math.exp(0.003 * rng.standard_normal())
            rows.append(f"m{index},{n:.6g},{d:.6g},{6.5 * n * d:.6g},{epochs},{loss:.6f}")
    path.write_text("\n".join(rows) + "\n")


def test_cli_runs_the_ladder_analysis_on_a_ladder(tmp_path: Path) -> None:
    write_ladder_csv(tmp_path / "ladder.csv")
    out = tmp_path / "fit.json"
    result = run_module("ladder.csv", "--size-col", "size", "--d-col", "D", "--flops-col", "F", "--epochs-col",
                        "epochs", "--bootstrap", "10", "--starts", "5", "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The joint fit's report first, then the ladder's, held-out predictions first.
    assert lines[0].startswith("L(N, D) = E + A/N^alpha + B/D^beta fitted to 20 of the 20 runs in ladder.csv; "
                               "D: column 'D'")
    start = lines.index("ladder analysis of the 20 runs (5 sizes from column 'size', 4 budgets; FLOP: column 'F'):")
    assert lines[start + 1].startswith("  held-out predictions")
    assert lines[start + 2].startswith("    largest N (1e+10) from 16 cells") and "of 4 inside" in lines[start + 2]
    assert lines[start + 7].endswith("(2 epochs)")
    written = json.loads(out.read_text())
    ladder = written["ladder"]
    assert written["ladder_not_run"] is None and written["input"]["size_source"] == "column 'size'"
    assert ladder["n_cells"] == 20 and ladder["n_sizes"] == 5 and len(ladder["budgets"]) == 4
    assert [test["name"] for test in ladder["held_out"]] == ["largest N", "largest D"]
    assert all(test["has_intervals"] for test in ladder["held_out"])
    assert ladder["frontier"]["flops_per_parameter_token"] == pytest.approx(6.5, rel=1e-5)
    assert ladder["fit"]["params"] == pytest.approx(written["fit"]["params"], rel=1e-9)
    assert ladder["repetition"]["assessed"] and len(ladder["repetition"]["cells"]) == 5


def test_cli_ladder_can_be_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    write_ladder_csv(tmp_path / "ladder.csv")
    monkeypatch.chdir(tmp_path)
    assert run_cli(PROGRAM, main, ["ladder.csv", "--bootstrap", "0", "--starts", "3", "--no-ladder"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ladder analysis not run: --no-ladder"


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "runs.csv").write_text("N,D,loss\n" + "".join(f"{i}e8,{i}e9,{4 - i / 4}\n" for i in range(1, 7)))
    result = run_module("runs.csv", "--loss-col", "final_loss", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "python -m abcmusic.scaling: error: runs.csv has no column 'final_loss'; its columns are 'N', 'D', 'loss'"]


@pytest.mark.parametrize("args, message", [
    (["missing.csv"], "no such file"),
    (["runs.csv", "--drop-highest", "2"], "needs at least 5"),
    (["bad.csv"], "must be positive"),
    (["text.csv"], "non-numeric"),
    (["runs.csv", "--size-col", "size"], "runs.csv has no column 'size'"),
    (["sizes.csv", "--size-col", "size"], "size 'a' of column 'size' has N 1e+08 in data row 1 and 2e+08 in data "
                                          "row 2"),
    (["sizes.csv", "--size-col", "blank"], "column 'blank' has 1 empty values (the first in data row 2)"),
    (["sizes.csv", "--epochs-col", "epochs"], "column 'epochs' must be positive; data row 3 has 0"),
    (["runs.csv", "--json", "no-such-folder/fit.json"], "folder does not exist"),
])
def test_cli_rejects_bad_input_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    # In-process, as the subprocess test above shows the module's entry point does the same.
    (tmp_path / "runs.csv").write_text("N,D,loss\n" + "".join(f"{i}e8,{i}e9,{4 - i / 4}\n" for i in range(1, 7)))
    (tmp_path / "bad.csv").write_text("N,D,loss\n1e8,1e9,3\n2e8,0,3\n")
    (tmp_path / "text.csv").write_text("N,D,loss\n1e8,1e9,3\n2e8,n/a,3\n")
    (tmp_path / "sizes.csv").write_text("N,D,loss,size,blank,epochs\n1e8,1e9,3,a,x,1\n2e8,1e9,3,a,,1\n"
                                        "3e8,1e9,3,b,y,0\n")
    monkeypatch.chdir(tmp_path)
    assert run_cli(PROGRAM, main, args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1 and message in captured.err, captured.err
