"""Fit the joint scaling law L(N, D) = E + A/N^alpha + B/D^beta to a CSV of runs, one row per run, the way
Besiroglu et al. 2024 refit Chinchilla, and print every parameter with its bootstrap interval and the
compute-optimal allocation under C = 6·N·D. When the runs form a ladder (each size trained to a few shared token
budgets), then also the analysis a sweep gets: the law's predictions of the largest size and budget when fitted
without them, the frontier under the runs' own FLOPs, IsoFLOP profiles, L(N) at each budget and repetition."""

from __future__ import annotations

import argparse
import dataclasses
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
from abcmusic.scaling.cell import Cell, distinct
from abcmusic.scaling.joint import (DEFAULT_BOOTSTRAP, DEFAULT_STARTS, MIN_POINTS, PARAM_NAMES, START_GRID,
                                    AllocationSummary, JointFit, ParamInterval, fit_joint, summarize_allocation,
                                    without_highest_losses)
from abcmusic.scaling.ladder import ArchitectureLaw, analyze_architecture
from abcmusic.scaling.prediction import MIN_CELLS, MIN_LEVELS, too_few_reason

PROGRAM = "python -m abcmusic.scaling"
DEFAULT_D_COL = "D"
# A ladder trains each size to a few budgets shared by the sizes. Runs with many more distinct token counts (each of
# Chinchilla's 245 has its own) are not one, and the ladder's L(N) at each budget would be a line per run.
MAX_LADDER_BUDGETS = 20
LADDER_EPILOG = (f"The ladder analysis runs when the runs have at most {MAX_LADDER_BUDGETS} distinct token counts, "
                 f"at least {MIN_LEVELS} sizes and {MIN_LEVELS} budgets and {MIN_CELLS} runs; --ladder runs it "
                 "whatever the number of token counts, --no-ladder never. It fits the law 3 more times (all runs, "
                 "without the largest size, without the largest budget), each with --bootstrap resamples.")


@dataclass(frozen=True)
class Runs:
    """One value per run: `sizes` names each run's model, `flops` its training FLOP and `epochs` its passes over the
    unique training tokens (1 when the CSV does not say); the sources say where d, flops and sizes came from."""

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    epochs: np.ndarray
    sizes: tuple[str, ...]
    d_source: str
    flops_source: str
    size_source: str

    def subset(self, indices: np.ndarray) -> Runs:
        return dataclasses.replace(self, n=self.n[indices], d=self.d[indices], loss=self.loss[indices],
                                   flops=self.flops[indices], epochs=self.epochs[indices],
                                   sizes=tuple(self.sizes[i] for i in indices))

    def cells(self) -> list[Cell]:
        """The runs as ladder cells; a CSV carries no standard errors or seeds."""
        return [Cell(size=size, n=float(n), d=float(d), loss=float(loss), loss_se=math.nan, flops=float(flops),
                     epochs=float(epochs), seed=0)
                for size, n, d, loss, flops, epochs in zip(self.sizes, self.n, self.d, self.loss, self.flops,
                                                           self.epochs)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__, epilog=LADDER_EPILOG)
    parser.add_argument("csv", help="CSV file with a header row and one row per run")
    parser.add_argument("--n-col", default="N", help="column of parameter counts (default: %(default)s)")
    parser.add_argument("--d-col", help=f"column of training tokens (default: {DEFAULT_D_COL!r}, unless --flops-col "
                        "is given)")
    parser.add_argument("--loss-col", default="loss", help="column of final losses (default: %(default)s)")
    parser.add_argument("--flops-col", help="column of training FLOP, which the ladder's frontier uses; the tokens "
                        "are FLOP / (6 N) unless --d-col names them (default: FLOP = 6 N D)")
    parser.add_argument("--size-col", help="column naming each run's model size, for the ladder (default: each "
                        "distinct N is a size)")
    parser.add_argument("--epochs-col", help="column of each run's passes over its unique training tokens, for the "
                        "ladder's repetition check (default: every run saw each token at most once)")
    ladder = parser.add_mutually_exclusive_group()
    ladder.add_argument("--ladder", dest="ladder", action="store_const", const=True, default=None,
                        help="run the ladder analysis whatever the token counts")
    ladder.add_argument("--no-ladder", dest="ladder", action="store_const", const=False,
                        help="fit the joint law only")
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
    parser.add_argument("--json", help="also write the fit, and the ladder analysis if it ran, to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.drop_highest < 0 or args.bootstrap < 0:
        raise UserError("--drop-highest and --bootstrap must not be negative")
    if args.starts < 1:
        raise UserError("--starts must be at least 1")
    if args.json is not None and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f"--json {args.json}: its folder does not exist")

    path = Path(args.csv)
    runs = read_runs(path, args.n_col, args.d_col, args.loss_col, args.flops_col, args.size_col, args.epochs_col)
    kept = runs.subset(without_highest_losses(runs.loss, args.drop_highest))
    if len(kept.n) < MIN_POINTS:
        left = (f"{len(kept.n)} runs left after leaving out {args.drop_highest}" if args.drop_highest
                else f"{len(kept.n)} runs")
        raise UserError(f"{path} has {left}; the fit of 5 parameters needs at least {MIN_POINTS}")
    try:
        fit = fit_joint(kept.n, kept.d, kept.loss, n_bootstrap=args.bootstrap, seed=args.seed,
                        max_starts=args.starts)
    except ValueError as error:
        raise UserError(f"cannot fit {path}: {error}") from None
    allocation = summarize_allocation(fit)
    print(report(fit, allocation, path, runs, args.drop_highest))

    law, not_run = ladder_law(kept, args.ladder, args.bootstrap, args.seed, args.starts)
    print()
    if law is None:
        print(f"ladder analysis not run: {not_run}")
    else:
        print(f"ladder analysis of the {law.n_cells} runs ({law.n_sizes} sizes from {kept.size_source}, "
              f"{len(law.budgets)} budgets; FLOP: {kept.flops_source}):")
        print("\n".join(f"  {line}" for line in law.report_lines()))

    if args.json is not None:
        payload = {
            "input": {"csv": str(path), "n_rows": len(runs.n), "n_dropped_highest": args.drop_highest,
                      "n_col": args.n_col, "loss_col": args.loss_col, "d_source": runs.d_source,
                      "flops_source": runs.flops_source, "size_source": runs.size_source,
                      "epochs_col": args.epochs_col, "bootstrap_seed": args.seed},
            "fit": fit.to_dict(),
            "compute_optimal": allocation.to_dict(),
            "ladder": law.to_dict() if law is not None else None,
            "ladder_not_run": not_run,
        }
        try:
            write_file_atomically(Path(args.json), (json.dumps(payload, indent=2) + "\n").encode())
        except OSError as error:
            raise UserError(f"cannot write {args.json}: {first_line(error)}") from None
        print(f"written: {args.json}")
    return 0


def read_runs(path: Path, n_col: str, d_col: str | None, loss_col: str, flops_col: str | None,
              size_col: str | None, epochs_col: str | None) -> Runs:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise UserError(f"cannot read {path} as CSV: {first_line(error)}") from None

    def check_column(name: str) -> None:
        if name not in frame.columns:
            raise UserError(f"{path} has no column {name!r}; its columns are {', '.join(map(repr, frame.columns))}")

    def column(name: str) -> np.ndarray:
        check_column(name)
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
    if d_col is not None:
        d, d_source = column(d_col), f"column {d_col!r}"
    elif flops_col is not None:
        d, d_source = column(flops_col) / (6.0 * n), f"FLOP / (6 N) from column {flops_col!r}"
    else:
        if DEFAULT_D_COL not in frame.columns:
            raise UserError(f"{path} has no column {DEFAULT_D_COL!r}; name the training tokens with --d-col, or the "
                            "training FLOP with --flops-col")
        d, d_source = column(DEFAULT_D_COL), f"column {DEFAULT_D_COL!r}"
    if flops_col is not None:
        flops, flops_source = column(flops_col), f"column {flops_col!r}"
    else:
        flops, flops_source = 6.0 * n * d, "6 N D"
    if size_col is not None:
        check_column(size_col)
        empty = np.flatnonzero(frame[size_col].isna().to_numpy())
        if len(empty):
            raise UserError(f"column {size_col!r} has {len(empty)} empty values (the first in data row {empty[0] + 1})")
        sizes, size_source = tuple(str(size) for size in frame[size_col]), f"column {size_col!r}"
        _check_one_n_per_size(sizes, n, size_col)
    else:
        sizes, size_source = _size_labels(n), "the distinct N"
    epochs = column(epochs_col) if epochs_col is not None else np.ones_like(n)
    return Runs(n=n, d=d, loss=column(loss_col), flops=flops, epochs=epochs, sizes=sizes, d_source=d_source,
                flops_source=flops_source, size_source=size_source)


def ladder_law(runs: Runs, requested: bool | None, n_bootstrap: int, seed: int,
               max_starts: int) -> tuple[ArchitectureLaw | None, str | None]:
    """The ladder analysis of the runs, or None and why it was not run. `requested` is True or False for --ladder
    and --no-ladder, None to run it when the runs look like a ladder."""
    if requested is False:
        return None, "--no-ladder"
    n_budgets = len(distinct(list(runs.d)))
    if requested is None and n_budgets > MAX_LADDER_BUDGETS:
        return None, (f"{n_budgets} distinct token counts: the runs are not a ladder of a few budgets shared by the "
                      f"sizes (at most {MAX_LADDER_BUDGETS}); --ladder runs it anyway")
    cells = runs.cells()
    reason = too_few_reason(cells)
    if reason is not None:
        return None, reason
    try:
        return analyze_architecture(cells, n_bootstrap=n_bootstrap, seed=seed, max_starts=max_starts), None
    except ValueError as error:
        raise UserError(f"cannot analyse the runs as a ladder: {error}") from None


def _size_labels(n: np.ndarray) -> tuple[str, ...]:
    """A label for each run's N, one per distinct N: the N to the fewest significant digits that tell the distinct
    N apart (17 tell any two floats apart)."""
    levels = np.array(distinct(list(n)))
    for digits in (3, 4, 6, 8, 10, 12, 17):
        labels = [f"{level:.{digits}g}" for level in levels]
        if len(set(labels)) == len(labels):
            break
    return tuple(labels[int(np.argmin(np.abs(levels - value)))] for value in n)


def _check_one_n_per_size(sizes: tuple[str, ...], n: np.ndarray, size_col: str) -> None:
    """A size is one model: the ladder takes its N from any of its runs."""
    first_row: dict[str, int] = {}
    for row, (size, value) in enumerate(zip(sizes, n)):
        first = first_row.setdefault(size, row)
        if not math.isclose(value, n[first], rel_tol=1e-9):
            raise UserError(f"size {size!r} of column {size_col!r} has N {n[first]:g} in data row {first + 1} and "
                            f"{value:g} in data row {row + 1}; each size needs one N")


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
