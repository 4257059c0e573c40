"""Train every model size of an experiment at a fixed token budget, track it in MLflow, and fit L = a*N^-alpha (+ c)."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from abcmusic.cli import run_cli


def parse_args(argv: list[str]) -> argparse.Namespace:
    from abcmusic.sweep.overrides import add_spec_flags

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", help="architectures to sweep, comma-separated (default: every one the experiment "
                                       "defines)")
    parser.add_argument("--experiment", default="demo", help="experiments/NAME.yaml or a YAML path (default: demo)")
    parser.add_argument("--name", help="sweep name: the MLflow experiment and results/NAME (default: EXPERIMENT-TIME)")
    parser.add_argument("--resume", metavar="NAME", help="continue an interrupted sweep; finished trials are not rerun")
    parser.add_argument("--analyze", metavar="NAME", help="redo the power-law fit of a sweep from MLflow alone")
    parser.add_argument("--dry-run", action="store_true", help="print the grid (parameters, tokens, FLOPs) and exit")
    parser.add_argument("--sizes", help="only these size names, comma-separated")
    add_spec_flags(parser.add_argument_group("experiment overrides (each replaces a field of the experiment)"))
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--storage", help="where trial checkpoints and Tune state go: a folder or a URI such as "
                                          "s3://bucket/abcmusic, shared by every node (default: $ABCMUSIC_STORAGE, "
                                          "else results/ray)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from abcmusic.scaling.analysis import analyze
    from abcmusic.sweep.driver import SweepOptions, joins_cluster, run_sweep
    from abcmusic.sweep.overrides import apply_spec_flags, select_sizes
    from abcmusic.sweep.plan import check_compilers, describe_plan, plan, this_machine, trial_resources
    from abcmusic.sweep.spec import load_spec

    project_dir = Path.cwd()
    spec = apply_spec_flags(load_spec(args.experiment), args)
    if args.sizes:
        spec = select_sizes(spec, args.sizes)
    if args.analyze:
        analyze(args.analyze, project_dir, spec.param_convention, spec.model_alias)
        return 0
    archs = tuple(a.strip() for a in args.arch.split(",") if a.strip()) if args.arch else tuple(spec.archs)
    if args.dry_run:
        from abcmusic.data.remote import local_dataset
        from abcmusic.data.token_stream import open_dataset

        _, vocab = open_dataset(local_dataset(spec.data if "://" in spec.data else project_dir / spec.data))
        planned = plan(spec, archs, len(vocab))
        # No Ray is started: the resources a local run on this machine would give, without refusing what it lacks
        # (a dry run on a laptop plans the grid for a cluster too).
        resources = trial_resources(spec, this_machine(), can_scale_up=True)
        check_compilers(planned, resources, joined=joins_cluster(args.address))
        print(describe_plan(planned, resources))
        return 0
    name = args.resume or args.name or f"{spec.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    try:
        outcome = run_sweep(SweepOptions(spec, archs, name, project_dir, args.address, resume=bool(args.resume),
                                         storage=args.storage))
    except KeyboardInterrupt:
        storage = f" --storage {args.storage}" if args.storage else ""
        print(f"sweep.py: interrupted; continue with: python sweep.py --experiment {args.experiment} "
              f"--arch {','.join(archs)} --resume {name}{storage}", file=sys.stderr)
        return 130
    analyze(name, project_dir, spec.param_convention, spec.model_alias)
    for failure in outcome.failures:
        print(failure)
    if outcome.failures:
        print(f"sweep.py: {len(outcome.failures)} trial(s) failed (their errors are under {outcome.experiment_path});"
              f" the fit above uses the finished ones; retry the failed ones with --resume {name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("sweep.py", main, sys.argv[1:]))
