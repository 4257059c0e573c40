"""Benchmark: training speed through Ray Train against a plain PyTorch loop, MFU, per-trial overhead, sweep share.

1. A plain single-process PyTorch loop written here (forward, backward, clip, AdamW step; nothing else) on the
   largest demo GPT, and the project's loop (`abcmusic.train.loop.train`) without Ray, same model, batch, threads.
2. The same GPT as one real sweep trial (`sweep.py --sizes ...`: Ray Tune, Ray Train, MLflow) in a scratch
   project folder; its tokens/s against the plain loop's, and where the trial's time went.
3. Model FLOP/s (the model's training FLOPs per token x tokens/s) against the measured peak of a large fp32
   matmul on the same number of threads (MFU).
4. With --sweep NAME (and --project DIR holding its mlflow.db): the share of that sweep's slot time spent training.

    .venv/bin/python benchmarks/train_bench.py [--data data/demo] [--size 595k] [--tokens 400000] [--sweep NAME]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from abcmusic.data.token_stream import load_token_stream, open_dataset
from abcmusic.models.registry import build_model, get_architecture
from abcmusic.sweep.spec import load_spec
from abcmusic.sweep.plan import model_config
from abcmusic.sweep.spec import build_grid
from abcmusic.testing import REPO_ROOT, cli_env, script_command
from abcmusic.train.loop import train
from abcmusic.train.throughput import measure_peak_flops


def plain_loop_tokens_per_s(model, stream: np.ndarray, batch: int, context: int, lr: float, steps: int) -> float:
    """The baseline: the simplest correct training step, written out here."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = np.random.default_rng(0)
    model.train()
    started = None
    for step in range(steps + 3):
        if step == 3:
            started = time.perf_counter()  # three warm-up steps
        starts = generator.integers(0, len(stream) - context - 1, batch)
        windows = torch.from_numpy(stream[starts[:, None] + np.arange(context + 1)].astype(np.int64))
        loss = model(windows[:, :-1], windows[:, 1:]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch * context / (time.perf_counter() - started)


def sweep_trial(project: Path, data: Path, size: str, tokens: int) -> dict:
    """Run one real trial with sweep.py in a scratch project folder and read its MLflow run."""
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
    return run.data.metrics | {"wall_seconds": (run.info.end_time - run.info.start_time) / 1000,
                               "command_seconds": command_seconds}


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
        m = r.data.metrics
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
    trained = sum(r.data.metrics["train_seconds"] for r in runs)
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
    parser.add_argument("--sweep", help="a finished sweep to measure the training share of")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="folder holding that sweep's mlflow.db")
    args = parser.parse_args()

    spec = load_spec("demo")
    trial = next(t for t in build_grid(spec) if t.arch == "gpt" and t.size == args.size)
    config = spec.train.for_trial(trial)
    threads = spec.resources.cpus_per_worker
    _, vocab = open_dataset(args.data)
    stream = load_token_stream(args.data, "train", vocab.separator_id)
    architecture = model_config(trial, len(vocab), config.context, spec.train.dropout)
    flops_per_token = get_architecture("gpt").flops_per_token(architecture)

    torch.set_num_threads(threads)
    steps = 60
    torch.manual_seed(0)
    plain = plain_loop_tokens_per_s(build_model("gpt", vars(architecture)), stream, config.batch_size,
                                    config.context, config.lr, steps)
    torch.manual_seed(0)
    project_loop = train(build_model("gpt", vars(architecture)), stream, stream,
                         type(config)(**(vars(config) | {"tokens": steps * config.tokens_per_step,
                                                         "eval_points": 1, "checkpoints": 1, "eval_batches": 1})),
                         lambda m, s: None)["tokens_per_s"]
    peak = measure_peak_flops(torch.device("cpu"), "fp32", samples=40)
    with tempfile.TemporaryDirectory(prefix="train-bench-") as scratch:
        in_ray = sweep_trial(Path(scratch), args.data, args.size, args.tokens)

    print(f"model: demo GPT {args.size} ({vars(architecture)}), batch {config.batch_size} x context "
          f"{config.context}, {threads} thread(s), fp32; {flops_per_token:.3g} training FLOPs/token")
    print(f"measured peak: {peak / 1e9:.1f} GFLOP/s (1024x1024 fp32 matmul, {threads} thread(s))")
    print(f"{'loop':<34} {'tokens/s':>10} {'vs plain':>9} {'MFU':>6}")
    for label, rate in (("plain PyTorch loop (this file)", plain), ("project loop, no Ray", project_loop),
                        ("project trial in Ray Train + Tune", in_ray["tokens_per_s"])):
        print(f"{label:<34} {rate:>10,.0f} {rate / plain:>9.2f} {rate * flops_per_token / peak:>6.1%}")
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
