"""Command-line flags that override an experiment's fields: one table from flag to field; each flag's type and
parsing come from the field's annotation, and its checks from the dataclass it lands in."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from abcmusic.errors import UserError, first_line
from abcmusic.sweep.spec import ArchSpec, SweepSpec

# flag -> (path of the field in SweepSpec, help)
SPEC_FLAGS: dict[str, tuple[str, str]] = {
    "tokens": ("train.loop.tokens", "token budget per trial"),
    "data": ("data", "prepared dataset: a folder, or a URI such as s3://bucket/data/lmd"),
    "seeds": ("seeds", "seeds per size"),
    "lr": ("train.lrs", "learning rates to try per size, comma-separated (e.g. 3e-4,1e-3); replaces the ones the "
                        "experiment gives each architecture"),
    "schedule": ("train.loop.schedule", "learning-rate schedule: cosine (one cell per trial) or wsd (warmup-stable-"
                                        "decay: a cooldown branch and a cell per budget)"),
    "budgets": ("train.loop.budgets", "wsd cell budgets, comma-separated: fractions of --tokens or token counts"),
    "workers-per-trial": ("resources.workers_per_trial", "Ray Train workers per trial (DDP when > 1)"),
    "cpus-per-worker": ("resources.cpus_per_worker", "CPUs (torch threads) per worker"),
    "gpus-per-trial": ("resources.gpus_per_trial", "GPUs per trial (default: one per worker if present)"),
    "worker-resource": ("resources.worker_resources", "a custom Ray resource every Train worker also asks for "
                                                      "(repeatable), e.g. a10g=1"),
}


def _field_type(path: str) -> Any:
    """The annotation of the field at `path` in SweepSpec, e.g. int for "train.loop.tokens"."""
    owner: Any = SweepSpec
    *parents, name = path.split(".")
    for parent in parents:
        owner = typing.get_type_hints(owner)[parent]
    return typing.get_type_hints(owner)[name]


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    for flag, (path, help_text) in SPEC_FLAGS.items():
        annotation = _field_type(path)
        kind = typing.get_origin(annotation)
        if kind is dict:
            parser.add_argument(f"--{flag}", action="append", metavar="NAME=AMOUNT", help=help_text)
        elif kind is typing.Literal:
            parser.add_argument(f"--{flag}", choices=typing.get_args(annotation), help=help_text)
        elif kind is tuple:
            parser.add_argument(f"--{flag}", metavar="X,Y,...", help=help_text)
        else:
            scalar = next(t for t in (typing.get_args(annotation) or (annotation,)) if t is not type(None))
            parser.add_argument(f"--{flag}", type=scalar, metavar="N" if scalar is int else None, help=help_text)


def _parse(flag: str, annotation: Any, raw: Any, current: Any) -> Any:
    kind = typing.get_origin(annotation)
    if kind is tuple:
        item_type = typing.get_args(annotation)[0]
        try:
            return tuple(item_type(v) for v in raw.split(","))
        except ValueError:
            raise UserError(f"--{flag} {raw!r}: expected {item_type.__name__}s separated by commas, "
                            f"e.g. 3e-4,1e-3") from None
    if kind is dict:
        value_type = typing.get_args(annotation)[1]
        merged = dict(current)
        for entry in raw:
            name, _, amount = entry.partition("=")
            try:
                merged[name.strip()] = value_type(amount)
            except ValueError:
                raise UserError(f"--{flag} {entry!r}: expected NAME=AMOUNT, e.g. a10g=1") from None
        return merged
    return raw


def _replace_at(obj: Any, path: list[str], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _replace_at(getattr(obj, path[0]), path[1:], value)})


def _get_at(obj: Any, path: list[str]) -> Any:
    for name in path:
        obj = getattr(obj, name)
    return obj


def apply_spec_flags(spec: SweepSpec, args: argparse.Namespace) -> SweepSpec:
    """The spec with every flag of SPEC_FLAGS that was given in its field; the dataclasses check the values."""
    if args.schedule == "cosine" and args.budgets is None:
        # A cosine run has one budget: the experiment's wsd budgets do not carry over.
        spec = _replace_at(spec, ["train", "loop", "budgets"], ())
    for flag, (path, _help) in SPEC_FLAGS.items():
        raw = getattr(args, flag.replace("-", "_"))
        if raw is None:
            continue
        fields = path.split(".")
        value = _parse(flag, _field_type(path), raw, _get_at(spec, fields))
        try:
            spec = _replace_at(spec, fields, value)
        except (TypeError, ValueError) as error:
            raise UserError(f"--{flag}: {first_line(error)}") from None
        if path == "train.lrs":  # the command line's rates apply to every architecture
            spec = dataclasses.replace(spec, archs={a: dataclasses.replace(s, lrs=()) for a, s in spec.archs.items()})
    return spec


def select_sizes(spec: SweepSpec, sizes: str) -> SweepSpec:
    """Only the named sizes (comma-separated) of every architecture."""
    wanted = [s.strip() for s in sizes.split(",") if s.strip()]
    known = {size for arch in spec.archs.values() for size in arch.sizes}
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise UserError(f"unknown size(s) {', '.join(unknown)}; {spec.name} has {', '.join(sorted(known))}")
    archs: dict[str, ArchSpec] = {a: dataclasses.replace(s, sizes={k: v for k, v in s.sizes.items() if k in wanted})
                                  for a, s in spec.archs.items()}
    return dataclasses.replace(spec, archs=archs)
