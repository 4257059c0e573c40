"""Benchmark: a warmup-stable-decay run with cooldown branches against independent cosine runs of the same cells.

For each model, one wsd run over the largest budget with a cooldown branch per smaller budget (the project's
`train()`, as a sweep trial runs it), and one cosine run per budget (the same loop with `schedule: cosine` and that
budget as its tokens, as independent sweep trials would run them), all with the experiment's other settings. Every
cell's final loss is the whole validation split's. Reported per cell: the wsd loss against the cosine loss
(Hägele et al. 2024 find them equal within noise for a 20% cooldown); per model: tokens trained and wall seconds of
the branches against the cosine runs, and the per-cell overhead (a cell's evaluation, its state copy and restore).
Runs execute `--jobs` at a time, each process on one thread, so both kinds see the same machine.

    .venv/bin/python benchmarks/wsd_vs_cosine.py [--experiment demo] [--models gpt:57k,gpt:156k,lstm:74k,lstm:264k]
        [--jobs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from abcmusic.data.token_stream import load_token_stream, open_dataset
from abcmusic.models.registry import build_model
from abcmusic.sweep.plan import model_config
from abcmusic.sweep.spec import build_grid, load_spec
from abcmusic.testing import REPO_ROOT
from abcmusic.train.config import CellPlan, TrainConfig
from abcmusic.train.loop import evaluate_split, train


@dataclass(frozen=True)
class RunTask:
    experiment: str
    arch: str
    size: str
    config: TrainConfig


@dataclass(frozen=True)
class RunResult:
    task: RunTask
    cell_losses: dict[int, float]  # cell tokens -> whole-split validation loss
    cell_overheads: dict[int, tuple[float, float]]  # branch cell tokens -> (evaluation, state copies) seconds
    tokens_trained: int
    wall_seconds: float


def run(task: RunTask) -> RunResult:
    torch.set_num_threads(1)
    spec = load_spec(task.experiment)
    data_dir = REPO_ROOT / spec.data
    _, vocab = open_dataset(data_dir)
    streams = {split: load_token_stream(data_dir, split, vocab.separator_id) for split in ("train", "val")}
    (trial,) = [t for t in build_grid(spec) if (t.arch, t.size) == (task.arch, task.size)][:1]
    torch.manual_seed(trial.seed)
    model = build_model(task.arch, dataclasses.asdict(model_config(trial, len(vocab), task.config.context,
                                                                   spec.train.dropout)))
    losses: dict[int, float] = {}

    def evaluate_cell(cell_model: torch.nn.Module, cell: CellPlan) -> dict[str, float]:
        loss = evaluate_split(cell_model, streams["val"], task.config.context, task.config.batch_size,
                              torch.device("cpu"), task.config.precision).loss
        losses[cell.tokens] = loss
        return {"cell/val_loss": loss}

    overheads: dict[int, tuple[float, float]] = {}

    def report_cell(metrics: dict, state: dict | None) -> None:
        evaluation = metrics["cell/eval_seconds"]
        copies = metrics["cell/seconds"] - metrics["cell/cooldown_seconds"] - evaluation
        overheads[int(metrics["cell/tokens"])] = (evaluation, copies)

    started = time.perf_counter()
    final = train(model, streams["train"], streams["val"], task.config, lambda metrics, state: None,
                  evaluate_cell=evaluate_cell, report_cell=report_cell)
    return RunResult(task, losses, overheads, final["tokens_trained"], time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="demo", help="a wsd experiment: its budgets and settings")
    parser.add_argument("--models", default="gpt:57k,gpt:156k,lstm:74k,lstm:264k")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    spec = load_spec(args.experiment)
    lr = spec.train.lrs[0]
    wsd = dataclasses.replace(spec.train.loop, lr=lr)
    if wsd.schedule != "wsd":
        parser.error(f"experiment {args.experiment} does not use schedule: wsd")
    tasks = []
    for model in args.models.split(","):
        arch, size = model.split(":")
        tasks.append(RunTask(args.experiment, arch, size, wsd))
        for cell in wsd.cells():
            tasks.append(RunTask(args.experiment, arch, size, dataclasses.replace(
                wsd, schedule="cosine", budgets=(), tokens=cell.tokens)))
    # Longest first, so that the two workers finish together.
    tasks.sort(key=lambda task: -task.config.tokens * (2 if task.arch == "lstm" else 1))
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, tasks))

    print(f"{args.experiment}: lr {lr:g}, budgets {[cell.tokens for cell in wsd.cells()]}, cooldown "
          f"{wsd.cooldown_fraction:g} ({wsd.cooldown_shape}), cosine to {wsd.min_lr_fraction:g} of the rate; "
          f"{args.jobs} runs at a time, one thread each")
    print(f"{'model':<12} {'tokens':>10} {'wsd loss':>9} {'cosine':>9} {'wsd-cos':>8}")
    differences = []
    for model in args.models.split(","):
        arch, size = model.split(":")
        mine = [r for r in results if (r.task.arch, r.task.size) == (arch, size)]
        branched = next(r for r in mine if r.task.config.schedule == "wsd")
        cosines = {r.task.config.tokens: r for r in mine if r.task.config.schedule == "cosine"}
        for tokens, loss in sorted(branched.cell_losses.items()):
            cosine = cosines[tokens].cell_losses[tokens]
            differences.append((loss - cosine) / cosine * 100)
            print(f"{model:<12} {tokens:>10,} {loss:>9.4f} {cosine:>9.4f} {differences[-1]:>+7.2f}%")
        cosine_tokens = sum(r.tokens_trained for r in cosines.values())
        cosine_seconds = sum(r.wall_seconds for r in cosines.values())
        branches = max(1, len(branched.cell_overheads))
        evaluation = sum(e for e, _ in branched.cell_overheads.values()) / branches
        copies = sum(c for _, c in branched.cell_overheads.values()) / branches
        print(f"{model:<12} cost: tokens {branched.tokens_trained:,} vs {cosine_tokens:,} "
              f"({branched.tokens_trained / cosine_tokens:.0%}), wall {branched.wall_seconds:.0f} s vs "
              f"{cosine_seconds:.0f} s ({branched.wall_seconds / cosine_seconds:.0%}); per branch cell: "
              f"evaluation {evaluation:.1f} s (a cosine run's end pays it too), state copy and restore {copies:.2f} s")
    mean = sum(differences) / len(differences)
    print(f"wsd - cosine over {len(differences)} cells: mean {mean:+.2f}%, range "
          f"[{min(differences):+.2f}%, {max(differences):+.2f}%]")


if __name__ == "__main__":
    main()
