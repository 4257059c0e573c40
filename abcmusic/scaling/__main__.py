"""Fit the joint scaling law L(N, D) = E + A/N^alpha + B/D^beta to a CSV of runs, one row per run, the way
Besiroglu et al. 2024 refit Chinchilla, and print every parameter with its bootstrap interval and the
compute-optimal allocation under C = 6·N·D."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from abcmusic.cli import run_cli
from abcmusic.errors import UserError, first_line
from abcmusic.publish import write_file_atomically
from abcmusic.scaling.joint import (DEFAULT_BOOTSTRAP, DEFAULT_STARTS, MIN_POINTS, PARAM_NAMES, START_GRID,
                                    AllocationSummary, JointFit, ParamInterval, drop_highest_losses, fit_joint,
                                    summarize_allocation)

PROGRAM = "python -m abcmusic.scaling"
DEFAULT_D_COL = "D"


@dataclass(frozen=True)
class Runs:
    """One value per run; `d_source` says where the token counts came from."""

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    d_source: str


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__)
    parser.add_argument("csv", help="CSV file with a header row and one row per run")
    parser.add_argument("--n-col", default="N", help="column of parameter counts (default: %(default)s)")
    parser.add_argument("--d-col", help=f"column of training tokens (default: {DEFAULT_D_COL!r}, unless --flops-col "
                        "is given)")
    parser.add_argument("--loss-col", default="loss", help="column of final losses (default: %(default)s)")
    parser.add_argument("--flops-col", help="column of training FLOP; the tokens are then FLOP / (6 N)")
    parser.add_argument("--drop-highest", type=int, default=0, metavar="K",
                        help="leave out the K runs with the highest loss, as the Chinchilla replication leaves out 5 "
                        "(default: %(default)s)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP,
                        help="bootstrap resamples for the intervals; 0 for none (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: %(default)s)")
    parser.add_argument("--starts", type=int, default=DEFAULT_STARTS,
                        help=f"optimise from this many of the {len(START_GRID)} grid starts, those with the lowest "
                        f"loss before optimising; {len(START_GRID)} is the replication's full procedure, ~40 s on "
                        "240 runs (default: %(default)s)")
    parser.add_argument("--json", help="also write the fit to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.drop_highest < 0 or args.bootstrap < 0:
        raise UserError("--drop-highest and --bootstrap must not be negative")
    if args.starts < 1:
        raise UserError("--starts must be at least 1")
    if args.d_col is not None and args.flops_col is not None:
        raise UserError("give the tokens as --d-col or as --flops-col, not both")
    if args.json is not None and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f"--json {args.json}: its folder does not exist")

    path = Path(args.csv)
    runs = read_runs(path, args.n_col, args.d_col, args.loss_col, args.flops_col)
    n, d, loss = drop_highest_losses(runs.n, runs.d, runs.loss, args.drop_highest)
    if len(n) < MIN_POINTS:
        left = f"{len(n)} runs left after leaving out {args.drop_highest}" if args.drop_highest else f"{len(n)} runs"
        raise UserError(f"{path} has {left}; the fit of 5 parameters needs at least {MIN_POINTS}")
    try:
        fit = fit_joint(n, d, loss, n_bootstrap=args.bootstrap, seed=args.seed, max_starts=args.starts)
    except ValueError as error:
        raise UserError(f"cannot fit {path}: {error}") from None
    allocation = summarize_allocation(fit)
    print(report(fit, allocation, path, runs, args.drop_highest))

    if args.json is not None:
        payload = {
            "input": {"csv": str(path), "n_rows": len(runs.n), "n_dropped_highest": args.drop_highest,
                      "n_col": args.n_col, "loss_col": args.loss_col, "d_source": runs.d_source,
                      "bootstrap_seed": args.seed},
            "fit": fit.to_dict(),
            "compute_optimal": allocation.to_dict(),
        }
        try:
            write_file_atomically(Path(args.json), (json.dumps(payload, indent=2) + "\n").encode())
        except OSError as error:
            raise UserError(f"cannot write {args.json}: {first_line(error)}") from None
        print(f"written: {args.json}")
    return 0


def read_runs(path: Path, n_col: str, d_col: str | None, loss_col: str, flops_col: str | None) -> Runs:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise UserError(f"cannot read {path} as CSV: {first_line(error)}") from None

    def column(name: str) -> np.ndarray:
        if name not in frame.columns:
            raise UserError(f"{path} has no column {name!r}; its columns are {', '.join(map(repr, frame.columns))}")
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise UserError(f"column {name!r} has {len(bad)} empty or non-numeric values (the first in data row "
                            f"{bad[0] + 1})")
        bad = np.flatnonzero(values <= 0)
        if len(bad):
            raise UserError(f"column {name!r} must be positive; data row {bad[0] + 1} has {values[bad[0]]:g}")
        return values

    n = column(n_col)
    if flops_col is not None:
        d, d_source = column(flops_col) / (6.0 * n), f"FLOP / (6 N) from column {flops_col!r}"
    else:
        name = d_col or DEFAULT_D_COL
        if name not in frame.columns and d_col is None:
            raise UserError(f"{path} has no column {DEFAULT_D_COL!r}; name the training tokens with --d-col, or the "
                            "training FLOP with --flops-col")
        d, d_source = column(name), f"column {name!r}"
    return Runs(n=n, d=d, loss=column(loss_col), d_source=d_source)


def report(fit: JointFit, allocation: AllocationSummary, path: Path, runs: Runs, n_dropped: int) -> str:
    dropped = f", the {n_dropped} highest losses left out" if n_dropped else ""
    lines = [
        f"L(N, D) = E + A/N^alpha + B/D^beta fitted to {fit.n_points} of the {len(runs.n)} runs in {path}{dropped}; "
        f"D: {runs.d_source}",
        f"Huber objective {fit.huber_objective:.6g} (delta {fit.huber_delta:g}), the best of {fit.n_starts} starts "
        f"({fit.n_starts_converged} converged); intervals over {fit.n_bootstrap_used} bootstrap resamples",
    ]
    if not fit.converged:
        lines.append("warning: no start converged; the parameters are the lowest objective reached")
    lines += ["", f"{'parameter':<10} {'estimate':>10}   {'95% interval':<24} {'std error':>10}"]
    for name in PARAM_NAMES:
        interval = fit.interval(name)
        lines.append(f"{name:<10} {interval.estimate:>10.4g}   {_interval_text(interval):<24} "
                     f"{interval.std_error:>10.4g}")
    lines += [
        "",
        f"compute-optimal under C = 6·N·D: N_opt ∝ C^{allocation.n_exponent.estimate:.4g} "
        f"{_interval_text(allocation.n_exponent)}, D_opt ∝ C^{allocation.d_exponent.estimate:.4g} "
        f"{_interval_text(allocation.d_exponent)}",
        f"{'C (FLOP)':<10} {'N_opt':>10} {'D_opt':>10} {'tokens/param':>13}   95% interval",
    ]
    for budget in allocation.budgets:
        lines.append(f"{budget.flop:<10.0e} {budget.n_opt:>10.3g} {budget.d_opt:>10.3g} "
                     f"{budget.tokens_per_parameter.estimate:>13.3g}   {_interval_text(budget.tokens_per_parameter)}")
    return "\n".join(lines)


def _interval_text(interval: ParamInterval) -> str:
    if not (math.isfinite(interval.ci_low) and math.isfinite(interval.ci_high)):
        return "-"
    return f"[{interval.ci_low:.4g}, {interval.ci_high:.4g}]"


if __name__ == "__main__":
    sys.exit(run_cli(PROGRAM, main, sys.argv[1:]))
