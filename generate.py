"""Generate tunes from a sweep's best (or a chosen) model and measure how many are playable (abc2midi-valid)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from abcmusic.cli import run_cli
from abcmusic.errors import UserError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="best",
                        help="'best' (lowest final validation loss among finished runs with a model) or an MLflow "
                             "run id (default: best)")
    parser.add_argument("--model", metavar="models:/NAME@ALIAS",
                        help="a registered model instead of --run: a sweep registers its best as models:/SWEEP@best "
                             "(a final-model experiment as @final)")
    parser.add_argument("--experiment", metavar="SWEEP",
                        help="with --run best: only this sweep's runs (default: every sweep in the MLflow store)")
    parser.add_argument("--sweep", metavar="SWEEP",
                        help="sample every finished run of this sweep, log validity and musical metrics per run, "
                             "and plot validity against N (results/SWEEP/validity.png)")
    parser.add_argument("--num", type=int, help="samples per run, half unconditional, half conditional "
                                                "(default: 12, or 100 with --sweep)")
    parser.add_argument("--prompts", type=Path, help="file of prompts for the conditional samples, separated by "
                                                     "blank lines (default: header and first bar of test tunes)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    parser.add_argument("--top-k", type=int, help="sample among the k most likely tokens only")
    parser.add_argument("--max-new-tokens", type=int, default=2048,
                        help="token limit per sample; a sample that reaches it is reported as truncated "
                             "(default: %(default)s)")
    parser.add_argument("--lead-in", type=int, default=32, metavar="TOKENS",
                        help="each sample starts after the last TOKENS tokens of a tune the model writes first and "
                             "that is discarded, as every tune began in training: after another one's end "
                             "(default: %(default)s; 0 starts cold at the separator)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same samples (default: 0)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/SWEEP/samples/RUN_NAME)")
    parser.add_argument("--audio", action="store_true", help="also render each valid sample to WAV "
                                                             "(needs fluidsynth with a GM soundfont, or timidity)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from abcmusic.generate.pipeline import GenerateOptions, run_generate, run_sweep_generate
    from abcmusic.generate.sampling import SamplingConfig

    if args.sweep and (args.run != "best" or args.model or args.experiment or args.out):
        raise UserError("--sweep samples every run of a sweep; it takes no --run, --model, --experiment or --out")
    if args.model and (args.run != "best" or args.experiment):
        raise UserError("--model names one model; it takes no --run or --experiment")
    num = args.num if args.num is not None else (100 if args.sweep else 12)
    if num < 1:
        raise UserError("--num must be at least 1")
    if args.lead_in != 0 and args.lead_in < 2:
        raise UserError("--lead-in must be 0 (start cold at the separator) or at least 2 tokens")
    if args.prompts is not None and not args.prompts.is_file():
        raise UserError(f"prompts file {args.prompts} not found")
    try:
        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_k=args.top_k, seed=args.seed)
    except ValueError as error:
        raise UserError(str(error)) from None
    options = GenerateOptions(project_dir=Path.cwd(), run=args.model or args.run, sweep=args.sweep or args.experiment, num=num,
                              prompts_file=args.prompts, sampling=sampling, lead_in=args.lead_in, out=args.out,
                              audio=args.audio, render=not args.sweep)
    if args.sweep:
        run_sweep_generate(options)
    else:
        run_generate(options)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("generate.py", main, sys.argv[1:]))
