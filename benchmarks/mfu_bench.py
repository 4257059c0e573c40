"""Benchmark: model FLOPs utilisation (MFU) of an experiment's model sizes through the project's training loop.

For each size of the experiment (default `paper.yaml`: context 256, batch 64, bf16 GPT and fp32 LSTM), the
project's loop (`abcmusic.train.loop.train`: AdamW, clipping, autocast, a CUDA synchronize per step) trains on
random token ids; the steps after the warm-up ones are timed. Model FLOP/s (the model's training FLOPs per token x
tokens/s) against the peak measured on the same device: the best of many large square matmuls in the trial's
precision (`abcmusic.train.throughput`, which trials use too). With --compare-fp32, every size that trains in
mixed precision also trains in fp32: the speed-up of mixed precision in one run.

Needs torch, numpy and PyYAML only (no Ray, MLflow or data), so it runs on a bare GPU machine:

    python benchmarks/mfu_bench.py --device cuda [--experiment paper] [--arch gpt,lstm] [--sizes tiny,xl]
        [--steps 30] [--warmup 5] [--compare-fp32]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from abcmusic.cli import run_cli  # noqa: E402
from abcmusic.errors import UserError  # noqa: E402
from abcmusic.models.registry import build_model, get_architecture  # noqa: E402
from abcmusic.sweep.spec import build_grid, load_spec, train_config  # noqa: E402
from abcmusic.sweep.trial import model_config  # noqa: E402
from abcmusic.train.loop import train  # noqa: E402
from abcmusic.train.throughput import measure_peak_flops  # noqa: E402


def tokens_per_second(arch: str, model_fields: dict, config, device: torch.device, warmup: int, steps: int) -> float:
    """Train a fresh model for `warmup` steps (kernel selection, allocator, cuDNN plans), then time `steps` more."""
    torch.manual_seed(0)
    model = build_model(arch, model_fields).to(device)
    stream = np.random.default_rng(0).integers(0, model_fields["vocab_size"], 2_000_000).astype(np.uint16)
    quiet = lambda metrics, state: None  # noqa: E731
    for count in (warmup, steps):
        run = dataclasses.replace(config, tokens=count * config.tokens_per_step, eval_points=1, checkpoints=1,
                                  eval_batches=1)
        rate = train(model, stream, stream, run, quiet, device=device)["tokens_per_s"]
    return rate


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="paper")
    parser.add_argument("--arch", default="gpt,lstm")
    parser.add_argument("--sizes", help="comma-separated size names (default: all of the experiment's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vocab", type=int, default=100, help="vocabulary size (an ABC character vocabulary: ~100)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--compare-fp32", action="store_true", help="also train mixed-precision sizes in fp32")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    spec = load_spec(args.experiment)
    archs = args.arch.split(",")
    sizes = set(args.sizes.split(",")) if args.sizes else None
    trials = [t for t in build_grid(spec) if t.arch in archs and (sizes is None or t.size in sizes)
              and t.seed == 0 and t.lr == spec.train.lrs[0]]
    if not trials:
        raise UserError(f"no size of {args.experiment} matches --arch {args.arch} --sizes {args.sizes}")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.experiment}: batch {spec.train.batch_size} x context {spec.train.context}, vocab {args.vocab}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per size; {where}; torch {torch.__version__}")

    peaks: dict[str, float] = {}
    rows = []
    for trial in trials:
        precisions = [trial.precision] + (["fp32"] if args.compare_fp32 and trial.precision != "fp32" else [])
        for precision in precisions:
            config = dataclasses.replace(train_config(spec, trial), precision=precision)
            if precision not in peaks:
                peaks[precision] = measure_peak_flops(device, precision, samples=40)
            architecture_config = model_config(trial, args.vocab, spec.train.context, spec.train.dropout)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate = tokens_per_second(trial.arch, dataclasses.asdict(architecture_config), config, device,
                                     args.warmup, args.steps)
            architecture = get_architecture(trial.arch)
            flops = architecture.flops_per_token(architecture_config) * rate
            memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            rows.append((trial.arch, trial.size, architecture.param_counts(architecture_config).non_embedding,
                         precision, rate, flops, flops / peaks[precision], memory))

    for precision, peak in peaks.items():
        print(f"measured peak, {precision}: {peak / 1e12:.1f} TFLOP/s")
    print(f"{'arch':<5} {'size':<11} {'non-emb':>11} {'prec':<5} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'GiB':>6}  vs fp32")
    rates = {(arch, size, precision): rate for arch, size, _, precision, rate, *_ in rows}
    for arch, size, params, precision, rate, flops, mfu, memory in rows:
        fp32 = rates.get((arch, size, "fp32"))
        speedup = f"{rate / fp32:.2f}x" if fp32 and precision != "fp32" else ""
        print(f"{arch:<5} {size:<11} {params:>11,} {precision:<5} {rate:>11,.0f} {flops / 1e12:>8.2f} {mfu:>6.1%} "
              f"{memory:>6.2f}  {speedup}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("mfu_bench.py", main, sys.argv[1:]))
