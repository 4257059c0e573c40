"""Benchmark: training speed through Ray Train against a plain PyTorch loop, MFU, per-trial overhead, sweep share.

1. A plain single-process PyTorch loop written here (forward, backward, clip, AdamW step; nothing else) on the
   largest demo GPT, and the project's loop (`abcmusic.train.loop.train`) without Ray, same model, batch, threads,
   their steps alternating (see `paired_round`), so that a busy machine slows both alike; in each of several
   rounds both start on fresh models and the same few warm-up steps are left out. Reported: the medians over the
   rounds and the spread of the per-round ratio, by the wall clock (the project loop's own, as it reports it) and
   by CPU time, which other processes on the machine do not inflate.
2. The same GPT as one real sweep trial (`sweep.py --sizes ...`: Ray Tune, Ray Train, MLflow) in a scratch
   project folder; its tokens/s (over all its steps, and after the first few) against the plain loop's, measured
   before it, and where the trial's time went.
3. Model FLOP/s (the model's training FLOPs per token x tokens/s) against the measured peak of a large fp32
   matmul on the same number of threads (MFU), the best of samples taken between the rounds.
4. With --sweep NAME (and --project DIR holding its mlflow.db): the share of that sweep's slot time spent training.

    .venv/bin/python benchmarks/train_bench.py [--data data/demo] [--size 595k] [--tokens 400000] [--rounds 7]
        [--steps 20] [--sweep NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from abcmusic.data.token_stream import load_token_stream, open_dataset
from abcmusic.models.registry import build_model, get_architecture
from abcmusic.sweep.spec import load_spec
from abcmusic.sweep.plan import model_config
from abcmusic.sweep.spec import build_grid
from abcmusic.testing import REPO_ROOT, cli_env, script_command
from abcmusic.tracking.metric_names import mlflow_key, plain_metrics, read_metric
from abcmusic.train.config import TrainConfig
from abcmusic.train.loop import train
from abcmusic.train.throughput import measure_peak_flops


# Untimed in both loops: a process's first optimizer step imports torch._dynamo (~1 s), a new optimizer's first
# step allocates its state.
WARMUP_STEPS = 3


class StepTimes(NamedTuple):
    """Seconds of each timed step of one loop in one round."""

    wall: list[float]
    cpu: list[float]  # this process's CPU time: what a step costs, without the time other processes took


class PlainLoop:
    """The baseline: the simplest correct training step, written out here."""

    def __init__(self, model: torch.nn.Module, stream: np.ndarray, batch: int, context: int, lr: float) -> None:
        self.model, self.stream, self.batch, self.context = model.train(), stream, batch, context
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.generator = np.random.default_rng(0)

    def step(self) -> None:
        starts = self.generator.integers(0, len(self.stream) - self.context - 1, self.batch)
        windows = torch.from_numpy(self.stream[starts[:, None] + np.arange(self.context + 1)].astype(np.int64))
        loss = self.model(windows[:, :-1], windows[:, 1:]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def paired_round(new_model: Callable[[], torch.nn.Module], stream: np.ndarray, config: TrainConfig,
                 steps: int) -> tuple[StepTimes, StepTimes]:
    """(the plain loop's step times, the project loop's): both on fresh models, their steps alternating.

    The project's `train()` runs WARMUP_STEPS + `steps` + 1 steps and reports after each; its report runs one step
    of the plain loop. The loop's own clock (`train_seconds`) leaves reports out, so the plain steps fall outside
    it; the two loops' steps a fraction of a second apart see the same machine, whatever else runs on it. Timed
    are steps WARMUP_STEPS + 1 to WARMUP_STEPS + `steps` of each loop: the plain ones by the wall and CPU clocks
    around each, the project's by its `train_seconds` and by the CPU clock from one report's end to the next's
    start (which adds the loop's few microseconds of report bookkeeping). The extra last step carries the final
    evaluation and checkpoint."""
    plain = PlainLoop(new_model(), stream, config.batch_size, config.context, config.lr)
    plain_times, project_times = StepTimes([], []), StepTimes([], [])
    last_report = {"train_seconds": 0.0, "cpu_left": 0.0}

    def report(metrics: dict, state: dict | None) -> None:
        step, wall, cpu = metrics["step"], time.perf_counter(), time.process_time()
        if step > WARMUP_STEPS + steps:
            return
        plain.step()
        if step > WARMUP_STEPS:
            plain_times.wall.append(time.perf_counter() - wall)
            plain_times.cpu.append(time.process_time() - cpu)
            project_times.wall.append(metrics["train_seconds"] - last_report["train_seconds"])
            project_times.cpu.append(cpu - last_report["cpu_left"])
        last_report.update(train_seconds=metrics["train_seconds"], cpu_left=time.process_time())

    train(new_model(), stream, stream, dataclasses.replace(
        config, tokens=(WARMUP_STEPS + steps + 1) * config.tokens_per_step, eval_points=1, checkpoints=1,
        eval_batches=1, log_every_steps=1), report)
    return plain_times, project_times


def median_rate(rounds: list[StepTimes], clock: str, tokens_per_step: int) -> float:
    """Tokens/s at the median of all rounds' step times: a step the machine held up does not count."""
    return tokens_per_step / statistics.median(seconds for times in rounds for seconds in getattr(times, clock))


def round_ratios(plain: list[StepTimes], rounds: list[StepTimes], clock: str) -> list[float]:
    """Each round's speed against the plain loop's: the ratio of the two median step times."""
    return [statistics.median(getattr(p, clock)) / statistics.median(getattr(t, clock)) for p, t in zip(plain, rounds)]


def sweep_trial(project: Path, data: Path, size: str, tokens: int, warmup_tokens: int) -> dict:
    """Run one real trial with sweep.py in a scratch project folder and read its MLflow run; besides the run's
    metrics, `steady_tokens_per_s`: its tokens/s from its first progress report at or after `warmup_tokens` to its
    end, by the train_seconds logged at each (`steady_from_tokens`: that report's tokens)."""
    (project / "data").mkdir(parents=True)
    (project / "data" / "demo").symlink_to(data.resolve())
    (project / ".home").mkdir()
    started = time.time()
    subprocess.run(script_command("sweep.py", "--arch", "gpt", "--sizes", size, "--tokens", str(tokens), "--name",
                                  "bench"), cwd=project, env=cli_env(project / ".home"), check=True,
                   capture_output=True, text=True)
    command_seconds = time.time() - started
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bench")
    run = next(r for r in client.search_runs([experiment.experiment_id]) if r.data.tags["abcmusic.kind"] == "trial")
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                          mlflow_key("train_seconds")))
    from_tokens, from_seconds = next(h for h in history if h[0] >= warmup_tokens)
    end_tokens, end_seconds = history[-1]
    return plain_metrics(run.data.metrics) | {"wall_seconds": (run.info.end_time - run.info.start_time) / 1000,
                               "command_seconds": command_seconds, "steady_from_tokens": from_tokens,
                               "steady_tokens_per_s": (end_tokens - from_tokens) / (end_seconds - from_seconds)}


def sweep_share(project: Path, name: str) -> tuple[str, float, float, int, float]:
    """(a per-trial table, sum of trials' training seconds, sweep wall seconds, concurrent slots, share of slot
    time training). Start and end are those of each trial's MLflow run (the trial function's start and end)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = sorted((r for r in client.search_runs([experiment.experiment_id])
                   if r.data.tags["abcmusic.kind"] == "trial"), key=lambda r: r.info.start_time)
    first = min(r.info.start_time for r in runs)
    lines = [f"{'trial':<24}{'start':>7}{'end':>7}{'run':>7}{'wait':>7}{'train':>8}{'overhead':>9}{'ray-up':>7}"
             f"{'ray-down':>9}{'own-up':>7}{'eval':>6}{'reports':>8}{'other':>7}"]
    for r in runs:
        m = plain_metrics(r.data.metrics)
        run = (r.info.end_time - r.info.start_time) / 1000
        wait = m.get("resource_wait_seconds", 0.0)  # waiting for a CPU another trial holds: not this trial's cost
        parts = overhead_parts(m, run)
        lines.append(f"{r.info.run_name:<24}{(r.info.start_time - first) / 1000:>7.1f}"
                     f"{(r.info.end_time - first) / 1000:>7.1f}{run:>7.1f}{wait:>7.1f}{m['train_seconds']:>8.1f}"
                     f"{run - wait - m['train_seconds']:>9.1f}" + "".join(
                         f"{parts[k]:>{w}.1f}" for k, w in (("ray_up", 7), ("ray_down", 9), ("own_up", 7),
                                                            ("eval", 6), ("reports", 8), ("other", 7))))
    wall = (max(r.info.end_time for r in runs) - first) / 1000
    slots = os.cpu_count() // int(runs[0].data.params["cpus_per_worker"])
    trained = sum(read_metric(r.data.metrics, "train_seconds") for r in runs)
    return "\n".join(lines), trained, wall, slots, trained / (wall * slots)


def overhead_parts(metrics: dict, run_seconds: float) -> dict[str, float]:
    """A trial's run that is not training, in parts: Ray Train's own start-up (fit() called to the train function
    entered; the resource wait taken out) and teardown (the final upload to fit() returning), the trial's own
    start-up (data, model, optimizer, relay), evaluation, reports and checkpoints, and the rest (peak measurement,
    test loss, model upload, the MLflow run's start and end). NaN where a sweep predates the metric."""
    nan = float("nan")
    wait = metrics.get("resource_wait_seconds", 0.0)
    ray_up = metrics.get("ray_setup_seconds", nan) - wait
    ray_down = metrics.get("teardown_seconds", nan)
    accounted = (metrics["train_seconds"] + metrics["setup_seconds"] + metrics["eval_seconds"]
                 + metrics["report_seconds"] + (0.0 if math.isnan(ray_down) else ray_down))
    return {"ray_up": ray_up, "ray_down": ray_down, "own_up": metrics["setup_seconds"] - wait - ray_up,
            "eval": metrics["eval_seconds"], "reports": metrics["report_seconds"], "other": run_seconds - accounted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "demo")
    parser.add_argument("--size", default="595k", help="demo GPT size (default: the largest)")
    parser.add_argument("--tokens", type=int, default=400_000, help="token budget of the Ray trial")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the plain and the project loop")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per loop and round")
    parser.add_argument("--sweep", help="a finished sweep to measure the training share of")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="folder holding that sweep's mlflow.db")
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")

    spec = load_spec("demo")
    trial = next(t for t in build_grid(spec) if t.arch == "gpt" and t.size == args.size)
    config = spec.train.for_trial(trial)
    threads = spec.resources.cpus_per_worker
    _, vocab = open_dataset(args.data)
    stream = load_token_stream(args.data, "train", vocab.separator_id)
    architecture = model_config(trial, len(vocab), config.context, spec.train.dropout)
    flops_per_token = get_architecture("gpt").flops_per_token(architecture)

    def new_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model("gpt", vars(architecture))

    torch.set_num_threads(threads)
    plain, project, peak = [], [], 0.0
    for _ in range(args.rounds):
        plain_times, project_times = paired_round(new_model, stream, config, args.steps)
        plain.append(plain_times)
        project.append(project_times)
        peak = max(peak, measure_peak_flops(torch.device("cpu"), "fp32", samples=8))
    with tempfile.TemporaryDirectory(prefix="train-bench-") as scratch:
        in_ray = sweep_trial(Path(scratch), args.data, args.size, args.tokens, WARMUP_STEPS * config.tokens_per_step)

    plain_rate = median_rate(plain, "wall", config.tokens_per_step)
    print(f"model: demo GPT {args.size} ({vars(architecture)}), batch {config.batch_size} x context "
          f"{config.context}, {threads} thread(s), fp32; {flops_per_token:.3g} training FLOPs/token")
    print(f"measured peak: {peak / 1e9:.1f} GFLOP/s (1024x1024 fp32 matmul, {threads} thread(s); the best of 8 "
          f"samples after each round)")
    print(f"{args.rounds} rounds; in each, both loops on fresh models, their steps alternating, {WARMUP_STEPS} "
          f"warm-up steps untimed, then {args.steps} timed steps each. tokens/s: at the median step time of all "
          f"rounds; vs plain: the median [min-max] over the rounds of the ratio of the median step times")
    print(f"{'':<34} {'wall clock':-^34}  {'CPU time':-^27}")
    print(f"{'loop':<34} {'tokens/s':>10} {'vs plain':>8} {'[min-max]':>11} {'MFU':>6}  {'tokens/s':>10} "
          f"{'vs plain':>8} {'[min-max]':>11}")
    for label, rounds in (("plain PyTorch loop (this file)", plain), ("project loop, no Ray", project)):
        wall, cpu = (median_rate(rounds, clock, config.tokens_per_step) for clock in ("wall", "cpu"))
        wall_ratios, cpu_ratios = (round_ratios(plain, rounds, clock) for clock in ("wall", "cpu"))
        print(f"{label:<34} {wall:>10,.0f} {statistics.median(wall_ratios):>8.2f} "
              f"{f'[{min(wall_ratios):.2f}-{max(wall_ratios):.2f}]':>11} {wall * flops_per_token / peak:>6.1%}  "
              f"{cpu:>10,.0f} {statistics.median(cpu_ratios):>8.2f} "
              f"{f'[{min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}]':>11}")
    steady_from = in_ray["steady_from_tokens"] // config.tokens_per_step
    for label, rate in ((f"Ray trial, all {args.tokens // config.tokens_per_step} steps", in_ray["tokens_per_s"]),
                        (f"Ray trial, after its first {steady_from:.0f} steps", in_ray["steady_tokens_per_s"])):
        print(f"{label:<34} {rate:>10,.0f} {rate / plain_rate:>8.2f} {'(one run)':>11} "
              f"{rate * flops_per_token / peak:>6.1%}")
    for clock in ("wall", "cpu"):
        print(f"per round, project / plain ({clock}): "
              + " ".join(f"{ratio:.3f}" for ratio in round_ratios(plain, project, clock)))
    print(f"The Ray trial runs once, after the rounds, alone: its ratio is to the plain loop's rate at another time "
          f"and moves with the machine's speed (during the rounds the plain loop's wall clock ran at "
          f"{plain_rate / median_rate(plain, 'cpu', config.tokens_per_step):.0%} of its CPU-time speed); against "
          f"the peak it measured itself after training ({in_ray['peak_flops'] / 1e9:.1f} GFLOP/s), its MFU is "
          f"{in_ray['mfu']:.1%}, the plain loop's against the rounds' peak {plain_rate * flops_per_token / peak:.1%}")
    overhead = in_ray["wall_seconds"] - in_ray["train_seconds"]
    parts = overhead_parts(in_ray, in_ray["wall_seconds"])
    print(f"Ray trial of {args.tokens:,} tokens: {in_ray['wall_seconds']:.1f} s in its MLflow run "
          f"({in_ray['command_seconds']:.1f} s for the whole sweep.py command), of which training "
          f"{in_ray['train_seconds']:.1f} s; overhead {overhead:.1f} s = Ray Train's own "
          f"{parts['ray_up'] + parts['ray_down']:.1f} s (fit() to the train function {parts['ray_up']:.1f} s + "
          f"final upload to fit() returning {parts['ray_down']:.1f} s) + the trial's own "
          f"{overhead - parts['ray_up'] - parts['ray_down']:.1f} s (data, model and optimizer {parts['own_up']:.1f} s + "
          f"evaluation {parts['eval']:.1f} s + reports and checkpoints {parts['reports']:.1f} s + the rest: peak, "
          f"test loss, model upload {parts['other']:.1f} s)")
    if args.sweep:
        table, trained, wall, slots, share = sweep_share(args.project, args.sweep)
        print(table)
        print(f"sweep {args.sweep}: {trained:.0f} s of training over {wall:.0f} s wall x {slots} trial slots: "
              f"{share:.1%} of slot time spent training")


if __name__ == "__main__":
    main()
