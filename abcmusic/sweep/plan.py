"""Planning a sweep before anything runs: the grid with parameter counts and FLOPs, every check a user's mistake
can fail, the resources each trial asks for, how many trials a local Ray runs at once, and what each trial's
MLflow run records."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from abcmusic.errors import UserError
from abcmusic.models.registry import ARCHITECTURES, get_architecture, make_config
from abcmusic.sweep.spec import SweepSpec, Trial, build_grid, spec_hash
from abcmusic.tracking.trial_record import TrialRecord
from abcmusic.train.compilers import compile_refusal


@dataclass(frozen=True)
class TrialResources:
    """What each trial asks of Ray: its Train workers and what each of them holds."""

    workers: int
    cpus_per_worker: int
    gpus_per_worker: float
    custom_per_worker: dict[str, float] = field(default_factory=dict)

    def per_worker(self) -> dict[str, float]:
        """Ray's resource request of one worker."""
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {}),
                **self.custom_per_worker}


@dataclass(frozen=True)
class PlannedTrial:
    trial: Trial
    params_total: int
    params_non_embedding: int
    tokens: int  # the largest budget
    cells: int
    flops: float  # training FLOPs of every step the trial runs, cooldown branches included
    lr: float  # the rate it trains at (the grid's, scaled by the width rule when the spec has one)


def model_config(trial: Trial, vocab_size: int, context: int, dropout: float):
    """The model config of a trial: its size's fields plus what the data and the spec decide."""
    config_class = get_architecture(trial.arch).config_class
    names = {f.name for f in dataclasses.fields(config_class)}
    extra = {"vocab_size": vocab_size, "context": context, "dropout": dropout}
    return make_config(trial.arch, **trial.model_fields, **{k: v for k, v in extra.items() if k in names})


def plan(spec: SweepSpec, archs: tuple[str, ...], vocab_size: int) -> list[PlannedTrial]:
    """The grid with parameter counts and FLOPs, validated: every mistake is a UserError before anything runs."""
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        raise UserError(f"unknown architecture {', '.join(unknown)}; choose from {', '.join(ARCHITECTURES)}")
    missing = [a for a in archs if a not in spec.archs]
    if missing:
        raise UserError(f"experiment {spec.name!r} defines no sizes for {', '.join(missing)}")
    selected = dataclasses.replace(spec, archs={a: spec.archs[a] for a in archs})
    planned = []
    for trial in build_grid(selected):
        architecture = get_architecture(trial.arch)
        try:
            config = model_config(trial, vocab_size, spec.train.loop.context, spec.train.dropout)
            spec.train.for_trial(trial).validate(spec.resources.workers_per_trial)
        except (ValueError, TypeError) as error:
            raise UserError(f"{trial.arch} size {trial.size}: {error}") from None
        counts = architecture.param_counts(config)
        loop = spec.train.loop
        planned.append(PlannedTrial(trial, counts.total, counts.non_embedding, loop.tokens, len(loop.cells()),
                                    architecture.flops_per_token(config) * loop.trained_tokens,
                                    trial.trained_lr))
    return planned


def check_compilers(planned: list[PlannedTrial], resources: TrialResources, joined: bool) -> None:
    """On a local Ray the trials train on this machine: a trial that asks for torch.compile without the compiler
    its device needs is a UserError before any trial starts. On a joined cluster the workers' nodes are not known
    here (the autoscaler may not have started them); each trial checks its own node before it compiles."""
    compiled = sorted({p.trial.arch for p in planned if p.trial.compile})
    if not compiled or joined:
        return
    refusal = compile_refusal("cuda" if resources.gpus_per_worker else "cpu")
    if refusal:
        raise UserError(f"{', '.join(compiled)}: {refusal}")


def execution_order(planned: list[PlannedTrial]) -> list[PlannedTrial]:
    """Most training FLOPs first: with trials running side by side, starting the longest ones first keeps a
    single long trial from running alone at the end while the other slots sit idle."""
    return sorted(planned, key=lambda p: -p.flops)


def describe_plan(planned: list[PlannedTrial], resources: TrialResources) -> str:
    lines = [f"{'trial':<28} {'params':>12} {'non-emb':>12} {'tokens':>12} {'cells':>5} {'lr':>8} {'train FLOPs':>12}  "
             f"{'precision':<13} resources"]
    for p in planned:
        precision = p.trial.precision + ("+compile" if p.trial.compile else "")
        lines.append(f"{p.trial.key:<28} {p.params_total:>12,} {p.params_non_embedding:>12,} {p.tokens:>12,} "
                     f"{p.cells:>5} {p.lr:>8.3g} {p.flops:>12.3g}  {precision:<13} {resources.workers} worker(s) x "
                     f"{resources.cpus_per_worker} CPU"
                     + (f" + {resources.gpus_per_worker} GPU" if resources.gpus_per_worker else ""))
    lines.append(f"{len(planned)} trials, {sum(p.flops for p in planned):.3g} training FLOPs in all")
    return "\n".join(lines)


def check_splits_fit_context(manifest: dict, context: int, data_dir: Path) -> None:
    """Every split must hold at least one context window (its stream adds a separator per tune, plus one)."""
    for split, stats in manifest["splits"].items():
        stream_length = stats["tokens"] + stats["tunes"] + 1
        if stream_length <= context + 1:
            raise UserError(f"the {split} split of {data_dir} has {stream_length:,} tokens, not enough for one "
                            f"window of context {context}; prepare more data or lower the context")


def trial_resources(spec: SweepSpec, cluster: dict[str, float], can_scale_up: bool = False) -> TrialResources:
    """Workers, CPUs and GPUs per trial for this cluster; asking for GPUs it does not have is a UserError,
    unless the cluster can scale up (a joined cluster: its autoscaler adds GPU nodes when trials ask for them)."""
    r = spec.resources
    gpus_available = cluster.get("GPU", 0)
    if r.gpus_per_trial is None:
        gpus_per_worker = 1 if gpus_available >= r.workers_per_trial else 0
    else:
        if r.gpus_per_trial > gpus_available and not can_scale_up:
            raise UserError(f"--gpus-per-trial {r.gpus_per_trial}: the Ray cluster has {gpus_available:g} GPU(s)")
        gpus_per_worker = r.gpus_per_trial / r.workers_per_trial
    if not can_scale_up and r.workers_per_trial * r.cpus_per_worker > cluster.get("CPU", 0):
        raise UserError(f"a trial needs {r.workers_per_trial * r.cpus_per_worker} CPUs; the Ray cluster has "
                        f"{cluster.get('CPU', 0):g}")
    missing = sorted(name for name, amount in r.worker_resources.items() if amount > cluster.get(name, 0))
    if missing and not can_scale_up:
        raise UserError(f"worker resource(s) {', '.join(missing)}: the Ray cluster has "
                        f"{', '.join(f'{cluster.get(m, 0):g} {m}' for m in missing)}")
    return TrialResources(r.workers_per_trial, r.cpus_per_worker, gpus_per_worker, dict(r.worker_resources))


def this_machine() -> dict[str, float]:
    """The CPUs and GPUs a local Ray would find here, without starting it."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def concurrent_trials(cluster: dict[str, float], resources: TrialResources) -> int:
    """How many trials a fixed set of resources (a local Ray) runs at once: as many as its CPUs hold when trials
    need nothing else; when they also need GPUs (or custom resources), as many as those hold plus one, whose
    processes start while the others train (the CPUs are not all busy then) and which takes the first GPU freed.
    More would only start trials that hold processes and memory while they wait for their workers' placement."""
    workers = resources.workers
    per_trial = {"GPU": workers * resources.gpus_per_worker,
                 **{name: workers * amount for name, amount in resources.custom_per_worker.items()}}

    def fits(name: str, amount: float) -> int:
        return int(cluster.get(name, 0) / amount + 1e-9)

    cpu_slots = fits("CPU", workers * resources.cpus_per_worker)
    scarce = [fits(name, amount) for name, amount in per_trial.items() if amount > 0]
    return max(1, min([cpu_slots] + [slots + 1 for slots in scarce]))


def trial_record(planned: PlannedTrial, spec: SweepSpec, data_location: str, dataset_hash: str,
                 resources: TrialResources) -> TrialRecord:
    """What the trial's MLflow run records about it."""
    trial, loop = planned.trial, spec.train.loop
    return TrialRecord(
        arch=trial.arch, size=trial.size, model_fields=dict(trial.model_fields),
        params_total=planned.params_total, params_non_embedding=planned.params_non_embedding,
        tokens=loop.tokens, context=loop.context, batch_size=loop.batch_size, lr=planned.lr,
        lr_grid=trial.lr, seed=trial.seed,
        precision=trial.precision, compile=trial.compile, dropout=spec.train.dropout,
        dataset=data_location, dataset_hash=dataset_hash, spec_hash=spec_hash(spec),
        workers=resources.workers, cpus_per_worker=resources.cpus_per_worker,
        gpus_per_worker=resources.gpus_per_worker, schedule=loop.schedule,
        budgets=",".join(str(cell.tokens) for cell in loop.cells()),
        cooldown_fraction=loop.cooldown_fraction if loop.schedule == "wsd" else 0.0,
    )
