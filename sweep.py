"""Train every model size of an experiment at a fixed token budget, track it in MLflow, and fit L = a*N^-alpha (+ c)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from pathlib import Path

from abcmusic.cli import run_cli
from abcmusic.errors import UserError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="gpt,lstm", help="architectures to sweep (default: %(default)s)")
    parser.add_argument("--experiment", default="demo", help="experiments/NAME.yaml or a YAML path (default: demo)")
    parser.add_argument("--name", help="sweep name: the MLflow experiment and results/NAME (default: EXPERIMENT-TIME)")
    parser.add_argument("--resume", metavar="NAME", help="continue an interrupted sweep; finished trials are not rerun")
    parser.add_argument("--analyze", metavar="NAME", help="redo the power-law fit of a sweep from MLflow alone")
    parser.add_argument("--dry-run", action="store_true", help="print the grid (parameters, tokens, FLOPs) and exit")
    parser.add_argument("--sizes", help="only these size names, comma-separated")
    parser.add_argument("--tokens", type=int, help="token budget per trial")
    parser.add_argument("--data", help="prepared dataset: a folder, or a URI such as s3://bucket/data/lmd")
    parser.add_argument("--seeds", type=int, help="seeds per size")
    parser.add_argument("--lr", help="learning rates to try per size, comma-separated (e.g. 3e-4,1e-3)")
    parser.add_argument("--workers-per-trial", type=int, help="Ray Train workers per trial (DDP when > 1)")
    parser.add_argument("--cpus-per-worker", type=int, help="CPUs (torch threads) per worker")
    parser.add_argument("--gpus-per-trial", type=int, help="GPUs per trial (default: one per worker if present)")
    parser.add_argument("--worker-resource", action="append", default=[], metavar="NAME=AMOUNT",
                        help="a custom Ray resource every Train worker also asks for (repeatable), e.g. a10g=1")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--storage", help="where trial checkpoints and Tune state go: a folder or a URI such as "
                                          "s3://bucket/abcmusic, shared by every node (default: $ABCMUSIC_STORAGE, "
                                          "else results/ray)")
    return parser.parse_args(argv)


def apply_overrides(spec, args):
    from abcmusic.sweep.spec import ArchSpec

    train, resources, archs = spec.train, spec.resources, spec.archs
    if args.tokens is not None:
        train = dataclasses.replace(train, tokens=args.tokens)
    if args.lr:
        try:
            train = dataclasses.replace(train, lrs=tuple(float(v) for v in args.lr.split(",")))
        except ValueError:
            raise UserError(f"--lr {args.lr!r}: expected numbers like 3e-4,1e-3") from None
        archs = {a: dataclasses.replace(s, lrs=()) for a, s in archs.items()}
    if args.sizes:
        wanted = [s.strip() for s in args.sizes.split(",") if s.strip()]
        known = {size for s in archs.values() for size in s.sizes}
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise UserError(f"unknown size(s) {', '.join(unknown)}; {spec.name} has {', '.join(sorted(known))}")
        archs = {a: ArchSpec(**(dataclasses.asdict(s) | {"sizes": {k: v for k, v in s.sizes.items() if k in wanted}}))
                 for a, s in archs.items()}
    for field in ("workers_per_trial", "cpus_per_worker", "gpus_per_trial"):
        value = getattr(args, field)
        if value is not None:
            if value < 0 or (value == 0 and field != "gpus_per_trial"):
                raise UserError(f"--{field.replace('_', '-')} must be positive")
            resources = dataclasses.replace(resources, **{field: value})
    if args.worker_resource:
        extra = dict(resources.worker_resources)
        for item in args.worker_resource:
            name, _, amount = item.partition("=")
            try:
                extra[name.strip()] = float(amount)
            except ValueError:
                raise UserError(f"--worker-resource {item!r}: expected NAME=AMOUNT, e.g. a10g=1") from None
            if not name.strip() or extra[name.strip()] <= 0:
                raise UserError(f"--worker-resource {item!r}: expected NAME=AMOUNT with a positive amount")
        resources = dataclasses.replace(resources, worker_resources=extra)
    if args.seeds is not None and args.seeds <= 0:
        raise UserError("--seeds must be positive")
    return dataclasses.replace(spec, train=train, resources=resources, archs=archs,
                               seeds=args.seeds or spec.seeds, data=args.data or spec.data)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from abcmusic.sweep.driver import (SweepOptions, TrialsFailed, analyze, check_compilers, describe_plan,
                                       joins_cluster, plan, run_sweep, this_machine, trial_resources)
    from abcmusic.sweep.spec import load_spec

    project_dir = Path.cwd()
    spec = apply_overrides(load_spec(args.experiment), args)
    if args.analyze:
        analyze(args.analyze, project_dir, spec.param_convention)
        return 0
    archs = tuple(a.strip() for a in args.arch.split(",") if a.strip())
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
        run_sweep(SweepOptions(spec, archs, name, project_dir, args.address, resume=bool(args.resume),
                               storage=args.storage))
    except KeyboardInterrupt:
        storage = f" --storage {args.storage}" if args.storage else ""
        print(f"sweep.py: interrupted; continue with: python sweep.py --experiment {args.experiment} "
              f"--arch {args.arch} --resume {name}{storage}", file=sys.stderr)
        return 130
    except TrialsFailed as error:
        print(f"sweep.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("sweep.py", main, sys.argv[1:]))
