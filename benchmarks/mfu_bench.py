"""Benchmark: model FLOPs utilisation (MFU) of an experiment's model sizes through the project's training loop.

For each size of the experiment (default `paper.yaml`: context 256, batch 64, bf16 GPT and fp32 LSTM), the
project's loop (`abcmusic.train.loop.train`: AdamW, clipping, autocast, batches cut on the CPU from a token
array, a wait for the GPU only before a report) trains on random token ids; the steps after the warm-up ones are
timed. Model FLOP/s (the model's training FLOPs per token x tokens/s) against the peak measured on the same
device: the best of many large square matmuls in the trial's precision (`abcmusic.train.throughput`, which
trials use too). The baseline is a plain PyTorch loop written here over the same model, batch and precision, as
lean as one writes it: batches drawn on the device, no evaluation or reports, one wait at the end. With
--compare fp32,tf32, every size also trains in those precisions: the speed-up of bf16 (or TF32) in one run.

Needs torch, numpy and PyYAML only (no Ray, MLflow or data), so it runs on a bare GPU machine:

    python benchmarks/mfu_bench.py --device cuda [--experiment paper] [--arch gpt,lstm] [--sizes tiny,xl]
        [--steps 30] [--warmup 5] [--compare fp32,tf32]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch

from abcmusic.cli import run_cli
from abcmusic.errors import UserError
from abcmusic.models.registry import build_model, get_architecture
from abcmusic.sweep.spec import build_grid, load_spec
from abcmusic.sweep.plan import model_config
from abcmusic.train.loop import TrainConfig, train
from abcmusic.train.precision import PRECISIONS, autocast, tf32_mode
from abcmusic.train.throughput import measure_peak_flops, synchronize


def tokens_per_second(arch: str, model_fields: dict, config, device: torch.device, warmup: int, steps: int) -> float:
    """Train a fresh model for `warmup` steps (kernel selection, allocator, cuDNN plans), then time `steps` more."""
    torch.manual_seed(0)
    model = build_model(arch, model_fields).to(device)
    stream = np.random.default_rng(0).integers(0, model_fields["vocab_size"], 2_000_000).astype(np.uint16)
    quiet = lambda metrics, state: None  # noqa: E731
    for count in (warmup, steps):
        # One report, at the end, as in a long trial where reports are hundreds of steps apart.
        run = dataclasses.replace(config, tokens=count * config.tokens_per_step, eval_points=1, checkpoints=1,
                                  eval_batches=1, log_every_steps=count)
        rate = train(model, stream, stream, run, quiet, device=device)["tokens_per_s"]
    return rate


def plain_tokens_per_second(arch: str, model_fields: dict, config: TrainConfig, device: torch.device, warmup: int,
                            steps: int) -> float:
    """The baseline: the same model, batch and precision in the loop one writes by hand (nanoGPT's train.py
    without its extras): windows cut on the device, AdamW (fused on a GPU), clipping, no reports."""
    torch.manual_seed(0)
    model = build_model(arch, model_fields).to(device).train()
    forward = torch.compile(model) if config.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                                  weight_decay=config.weight_decay, fused=device.type == "cuda" or None)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    stream = torch.randint(0, model_fields["vocab_size"], (2_000_000,), device=device)
    offsets = torch.arange(config.context + 1, device=device)
    micro = config.micro_batch(world_size=1)
    accumulation = config.batch_size // micro

    def step() -> None:
        for _ in range(accumulation):
            windows = stream[torch.randint(0, len(stream) - config.context - 1, (micro, 1), device=device) + offsets]
            with autocast(device, config.precision):
                loss = forward(windows[:, :-1], windows[:, 1:]).loss
            scaler.scale(loss / accumulation).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    with tf32_mode(config.precision):
        for _ in range(warmup):
            step()
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
    return steps * config.tokens_per_step / (time.perf_counter() - started)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="paper")
    parser.add_argument("--arch", default="gpt,lstm")
    parser.add_argument("--sizes", help="comma-separated size names (default: all of the experiment's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vocab", type=int, default=100, help="vocabulary size (an ABC character vocabulary: ~100)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in both loops")
    parser.add_argument("--compare", default="", help="also train every size in these precisions (fp32,tf32)")
    args = parser.parse_args(argv)
    compare = [p for p in args.compare.split(",") if p]
    if not set(compare) <= set(PRECISIONS):
        raise UserError(f"--compare takes precisions among {', '.join(PRECISIONS)}; got {args.compare}")

    device = torch.device(args.device)
    spec = load_spec(args.experiment)
    archs = args.arch.split(",")
    sizes = set(args.sizes.split(",")) if args.sizes else None
    trials = [t for t in build_grid(spec) if t.arch in archs and (sizes is None or t.size in sizes)
              and t.seed == 0 and t.lr == spec.train.lrs[0]]
    if not trials:
        raise UserError(f"no size of {args.experiment} matches --arch {args.arch} --sizes {args.sizes}")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.experiment}: batch {spec.train.loop.batch_size} x context {spec.train.loop.context}, vocab {args.vocab}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per size; {where}; torch {torch.__version__}"
          f"{'; torch.compile' if args.compile else ''}")

    peaks: dict[str, float] = {}
    rows = []
    for trial in trials:
        precisions = [trial.precision] + [p for p in compare if p != trial.precision]
        for precision in precisions:
            config = dataclasses.replace(spec.train.for_trial(trial), precision=precision, compile=args.compile)
            if precision not in peaks:
                peaks[precision] = measure_peak_flops(device, precision, samples=40)
            architecture_config = model_config(trial, args.vocab, spec.train.loop.context, spec.train.dropout)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate = tokens_per_second(trial.arch, dataclasses.asdict(architecture_config), config, device,
                                     args.warmup, args.steps)
            architecture = get_architecture(trial.arch)
            flops = architecture.flops_per_token(architecture_config) * rate
            memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            plain = plain_tokens_per_second(trial.arch, dataclasses.asdict(architecture_config), config, device,
                                            args.warmup, args.steps)
            rows.append((trial.arch, trial.size, architecture.param_counts(architecture_config).non_embedding,
                         precision, rate, flops, flops / peaks[precision], memory, plain))

    for precision, peak in peaks.items():
        print(f"measured peak, {precision}: {peak / 1e12:.1f} TFLOP/s")
    print(f"{'arch':<5} {'size':<11} {'non-emb':>11} {'prec':<5} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'GiB':>6} {'plain tok/s':>11} {'vs plain':>8}  vs fp32")
    rates = {(arch, size, precision): rate for arch, size, _, precision, rate, *_ in rows}
    for arch, size, params, precision, rate, flops, mfu, memory, plain in rows:
        fp32 = rates.get((arch, size, "fp32"))
        speedup = f"{rate / fp32:.2f}x" if fp32 and precision != "fp32" else ""
        print(f"{arch:<5} {size:<11} {params:>11,} {precision:<5} {rate:>11,.0f} {flops / 1e12:>8.2f} {mfu:>6.1%} "
              f"{memory:>6.2f} {plain:>11,.0f} {rate / plain:>8.2f}  {speedup}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("mfu_bench.py", main, sys.argv[1:]))
