"""Benchmark: what torch.compile costs a trial up front, against what it saves per step, for paper.yaml's GPTs.

For each size: the wall time of a fresh model's first --steps steps through the project's loop, eager and
compiled (compilation included), and the steady-state tokens/s of each from --steps more steps. The break-even
token count is the compile time over the time saved per token. Run it with TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
for a cold compile, as a trial's first on a fresh node (later trials of the same size reuse the node's cache).
Needs torch, numpy and PyYAML only:

    TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 python benchmarks/compile_time.py --device cuda [--sizes medium,large,xl]
        [--steps 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch

from abcmusic.cli import run_cli
from abcmusic.models.registry import build_model
from abcmusic.sweep.spec import build_grid, load_spec
from abcmusic.sweep.plan import model_config
from abcmusic.train.loop import train


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="medium,large,xl")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    spec = load_spec("paper")
    sizes = args.sizes.split(",")
    trials = [t for t in build_grid(spec) if t.arch == "gpt" and t.size in sizes and t.lr == spec.train.lrs[0]]
    stream = np.random.default_rng(0).integers(0, 100, 2_000_000).astype(np.uint16)
    print(f"paper GPT sizes, batch {spec.train.loop.batch_size} x context {spec.train.loop.context}, {args.steps} steps each "
          f"phase; {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}")
    print(f"{'size':<8} {'mode':<8} {'first steps s':>13} {'tokens/s':>11} {'compile s':>9} {'break-even tokens':>18}")
    for trial in trials:
        rates, firsts = {}, {}
        for compiled in (False, True):
            torch.manual_seed(0)
            fields = dataclasses.asdict(model_config(trial, 100, spec.train.loop.context, spec.train.dropout))
            model = build_model("gpt", fields).to(device)
            config = dataclasses.replace(spec.train.for_trial(trial), compile=compiled, eval_points=1, checkpoints=1,
                                         eval_batches=1)
            run = dataclasses.replace(config, tokens=args.steps * config.tokens_per_step, log_every_steps=args.steps)
            torch._dynamo.reset()
            started = time.perf_counter()
            train(model, stream, stream, run, lambda metrics, state: None, device=device)
            firsts[compiled] = time.perf_counter() - started
            # A second call compiles nothing new (same code, same shapes): steady-state speed.
            rates[compiled] = train(model, stream, stream, run, lambda metrics, state: None,
                                   device=device)["tokens_per_s"]
        step_tokens = args.steps * config.tokens_per_step
        compile_s = firsts[True] - step_tokens / rates[True] - (firsts[False] - step_tokens / rates[False])
        saved_per_token = 1 / rates[False] - 1 / rates[True]
        even = f"{compile_s / saved_per_token:,.0f}" if saved_per_token > 0 else "never"
        for compiled in (False, True):
            print(f"{trial.size:<8} {'compiled' if compiled else 'eager':<8} {firsts[compiled]:>13.1f} "
                  f"{rates[compiled]:>11,.0f} {compile_s if compiled else 0:>9.1f} {even if compiled else '':>18}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("compile_time.py", main, sys.argv[1:]))
