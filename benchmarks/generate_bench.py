"""Benchmark: GPT sampling with the key/value cache against recomputing the whole visible window every step.

The largest demo GPT (experiments/demo.yaml, size 595k: n_layer 3, n_head 4, n_embd 128, context 128) over the demo
corpus's 51-token vocabulary, with random weights: speed does not depend on the weights. --batch unconditional
samples (prompt [separator]) of --tokens new tokens each (batch 1 by default; generate.py samples up to 64 rows
together). `--size xl` (with PyYAML) takes a GPT size of paper.yaml, and its context, instead. Random weights would
draw the separator within a few dozen tokens, so the sample is given no stop token (stop_id None) and always runs to
the limit. Both methods use the same window policy (abcmusic.generate.sampling: restart from the last context // 2
tokens when the context is full) and the same seed, and must produce the same tokens; the benchmark checks that.
Times are wall-clock, the best of --repeats runs after one short warm-up. For reference, the table also times a bare
one-token forward without a cache, repeated --tokens times: a cached step does that work and a little more, so it
bounds the ratio that eager PyTorch can reach here. The first row is the loop most people write (nanoGPT's
generate()): every step runs the last `context` tokens, the whole context once the sample is longer than it; it is
the baseline the target is set against ("recomputing the whole context each step"). It draws different tokens from
ours (its window slides by one), so the same-tokens check is made against the second row, which recomputes our own
window.

    .venv/bin/python benchmarks/generate_bench.py [--tokens 1000] [--threads 1] [--device cpu|cuda] [--repeats 3]
                                                  [--context 128] [--batch 1] [--size xl]

Imports only torch and abcmusic.models / abcmusic.generate, so it runs on a GPU machine with nothing else.
"""

from __future__ import annotations

import argparse
import time

import torch

from abcmusic.generate.sampling import SamplingConfig, sample
from abcmusic.models.gpt import GPT, GPTConfig
from abcmusic.testing import REPO_ROOT

# The largest GPT of experiments/demo.yaml and the demo run's context; checked against the file where PyYAML is.
DEMO_SIZE, DEMO_FIELDS, DEMO_CONTEXT = "595k", {"n_layer": 3, "n_head": 4, "n_embd": 128}, 128
SEPARATOR_ID = 0


def check_against_demo_yaml() -> None:
    try:
        import yaml
    except ImportError:
        return
    demo = yaml.safe_load((REPO_ROOT / "experiments" / "demo.yaml").read_text())
    if demo["archs"]["gpt"]["sizes"][DEMO_SIZE] != DEMO_FIELDS or demo["train"]["context"] != DEMO_CONTEXT:
        raise SystemExit(f"experiments/demo.yaml no longer has GPT {DEMO_SIZE} = {DEMO_FIELDS}, context "
                         f"{DEMO_CONTEXT}; update this benchmark")


def best_seconds(run, repeats: int, device: torch.device) -> tuple[float, object]:
    """The shortest wall time of `repeats` calls of run(), and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000, help="new tokens per sample")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each method; the fastest counts")
    parser.add_argument("--vocab-size", type=int, default=51, help="the demo corpus's vocabulary")
    parser.add_argument("--context", type=int, help="a context other than the model's experiment's")
    parser.add_argument("--size", help="a GPT size of experiments/paper.yaml instead of the demo's largest")
    parser.add_argument("--batch", type=int, default=1, help="samples drawn together")
    args = parser.parse_args()
    check_against_demo_yaml()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    name, fields, context = f"demo GPT {DEMO_SIZE}", DEMO_FIELDS, DEMO_CONTEXT
    if args.size:
        import yaml
        paper = yaml.safe_load((REPO_ROOT / "experiments" / "paper.yaml").read_text())
        name, fields, context = f"paper GPT {args.size}", paper["archs"]["gpt"]["sizes"][args.size], \
            paper["train"]["context"]
    args.context = args.context or context
    config = GPTConfig(vocab_size=args.vocab_size, context=args.context, **fields)
    model = GPT(config).to(device).eval()

    def sampled(use_cache: bool, tokens: int) -> list[tuple[int, ...]]:
        sampling = SamplingConfig(max_new_tokens=tokens, seed=0, use_cache=use_cache, batch_size=args.batch)
        return [one.new_ids for one in sample(model, [[SEPARATOR_ID]] * args.batch, None, sampling, device=device)]

    def nanogpt_loop(tokens: int) -> None:
        """nanoGPT's generate(): each step runs the last `context` tokens (the whole context once it is full)."""
        generator = torch.Generator(device=device).manual_seed(0)
        idx = torch.full((args.batch, 1), SEPARATOR_ID, device=device)
        with torch.inference_mode():
            for _ in range(tokens):
                logits = model(idx[:, -args.context:]).logits[:, -1]
                next_id = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
                idx = torch.cat([idx, next_id], dim=1)

    def bare_forwards() -> None:
        idx = torch.full((args.batch, 1), SEPARATOR_ID, device=device)
        with torch.inference_mode():
            for _ in range(args.tokens):
                model(idx)

    for use_cache in (True, False):
        sampled(use_cache, min(args.tokens, 2 * args.context))  # warm-up, through one window restart
    uncached_s, uncached_ids = best_seconds(lambda: sampled(False, args.tokens), args.repeats, device)
    cached_s, cached_ids = best_seconds(lambda: sampled(True, args.tokens), args.repeats, device)
    nanogpt_s, _ = best_seconds(lambda: nanogpt_loop(args.tokens), args.repeats, device)
    bare_s, _ = best_seconds(bare_forwards, args.repeats, device)
    for row, (cached_row, uncached_row) in enumerate(zip(cached_ids, uncached_ids)):
        if cached_row != uncached_row:
            first = next(i for i, (a, b) in enumerate(zip(cached_row, uncached_row)) if a != b)
            raise SystemExit(f"the cached and uncached samples of row {row} differ from token {first} on")

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"model: {name} ({fields | {'context': args.context, 'vocab_size': args.vocab_size}}, "
          f"{model.num_params():,} params), random weights, fp32; {where}; torch {torch.__version__}")
    print(f"{args.tokens:,} new tokens after [separator], batch {args.batch}, no stop token; window restarts from "
          f"the last {args.context // 2} tokens when {args.context} are full; best of {args.repeats}")
    print(f"{'method':<52} {'seconds':>8} {'tokens/s':>9} {'vs whole context':>17} {'vs same window':>15}")
    for label, seconds in (("recompute the whole context each step (nanoGPT)", nanogpt_s),
                           ("recompute the visible window each step", uncached_s),
                           ("key/value cache", cached_s),
                           ("(bare one-token forward, no cache, no draw)", bare_s)):
        print(f"{label:<52} {seconds:>8.3f} {args.batch * args.tokens / seconds:>9,.0f} {nanogpt_s / seconds:>16.2f}x"
              f" {uncached_s / seconds:>14.2f}x")
    print(f"cached and recomputed samples: the same {sum(map(len, cached_ids)):,} tokens")


if __name__ == "__main__":
    main()
