"""Run a sweep: check everything, plan the grid, run it as a Ray Tune grid of Ray Train trials, fit the law."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from abcmusic.data.token_stream import open_dataset
from abcmusic.errors import UserError
from abcmusic.ray_session import start_ray
from abcmusic.models.registry import ARCHITECTURES, get_architecture
from abcmusic.data.remote import local_dataset
from abcmusic.storage import STORAGE_ENV, is_uri
from abcmusic.storage import exists as storage_exists
from abcmusic.storage import join as storage_join
from abcmusic.sweep.mlflow_relay import start_relay
from abcmusic.sweep.spec import SweepSpec, Trial, build_grid, spec_hash, train_config
from abcmusic.sweep.trial import model_config, run_trial
from abcmusic.tracking import mlflow_store
from abcmusic.train.compilers import compile_refusal

TRIAL_SLOT = "trial_slot"  # a custom resource per concurrent trial: a trial function holding a CPU starves its workers


class TrialsFailed(Exception):
    """Some trials of a sweep failed; the others finished and were fitted."""


@dataclass(frozen=True)
class SweepOptions:
    spec: SweepSpec
    archs: tuple[str, ...]
    name: str
    project_dir: Path
    address: str | None = None
    resume: bool = False
    storage: str | None = None  # Ray Train/Tune storage: a folder or URI (default $ABCMUSIC_STORAGE, else results/ray)


@dataclass(frozen=True)
class PlannedTrial:
    trial: Trial
    params_total: int
    params_non_embedding: int
    tokens: int
    flops: float


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
            config = model_config(trial, vocab_size, spec.train.context, spec.train.dropout)
            train_config(spec, trial).validate(spec.resources.workers_per_trial)
        except (ValueError, TypeError) as error:
            raise UserError(f"{trial.arch} size {trial.size}: {error}") from None
        counts = architecture.param_counts(config)
        planned.append(PlannedTrial(trial, counts.total, counts.non_embedding, spec.train.tokens,
                                    architecture.flops_per_token(config) * spec.train.tokens))
    return planned


def check_compilers(planned: list[PlannedTrial], resources: dict[str, Any], joined: bool) -> None:
    """On a local Ray the trials train on this machine: a trial that asks for torch.compile without the compiler
    its device needs is a UserError before any trial starts. On a joined cluster the workers' nodes are not known
    here (the autoscaler may not have started them); each trial checks its own node before it compiles."""
    compiled = sorted({p.trial.arch for p in planned if p.trial.compile})
    if not compiled or joined:
        return
    refusal = compile_refusal("cuda" if resources["gpus_per_worker"] else "cpu")
    if refusal:
        raise UserError(f"{', '.join(compiled)}: {refusal}")


def execution_order(planned: list[PlannedTrial]) -> list[PlannedTrial]:
    """Most training FLOPs first: with trials running side by side, starting the longest ones first keeps a
    single long trial from running alone at the end while the other slots sit idle."""
    return sorted(planned, key=lambda p: -p.flops)


def describe_plan(planned: list[PlannedTrial], resources: dict[str, Any]) -> str:
    lines = [f"{'trial':<28} {'params':>12} {'non-emb':>12} {'tokens':>12} {'train FLOPs':>12}  {'precision':<13} "
             f"resources"]
    for p in planned:
        precision = p.trial.precision + ("+compile" if p.trial.compile else "")
        lines.append(f"{p.trial.key:<28} {p.params_total:>12,} {p.params_non_embedding:>12,} {p.tokens:>12,} "
                     f"{p.flops:>12.3g}  {precision:<13} {resources['workers']} worker(s) x "
                     f"{resources['cpus_per_worker']} CPU"
                     + (f" + {resources['gpus_per_worker']} GPU" if resources["gpus_per_worker"] else ""))
    lines.append(f"{len(planned)} trials, {sum(p.flops for p in planned):.3g} training FLOPs in all")
    return "\n".join(lines)


def check_splits_fit_context(manifest: dict, context: int, data_dir: Path) -> None:
    """Every split must hold at least one context window (its stream adds a separator per tune, plus one)."""
    for split, stats in manifest["splits"].items():
        stream_length = stats["tokens"] + stats["tunes"] + 1
        if stream_length <= context + 1:
            raise UserError(f"the {split} split of {data_dir} has {stream_length:,} tokens, not enough for one "
                            f"window of context {context}; prepare more data or lower the context")


def trial_resources(spec: SweepSpec, cluster: dict[str, float], can_scale_up: bool = False) -> dict[str, Any]:
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
    return {"workers": r.workers_per_trial, "cpus_per_worker": r.cpus_per_worker, "gpus_per_worker": gpus_per_worker,
            "custom_per_worker": dict(r.worker_resources)}


def this_machine() -> dict[str, float]:
    """The CPUs and GPUs a local Ray would find here, without starting it."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def concurrent_trials(cluster: dict[str, float], resources: dict[str, Any]) -> int:
    """How many trials a fixed set of resources (a local Ray) runs at once: as many as its CPUs hold when trials
    need nothing else; when they also need GPUs (or custom resources), as many as those hold plus one, whose
    processes start while the others train (the CPUs are not all busy then) and which takes the first GPU freed.
    More would only start trials that hold processes and memory while they wait for their workers' placement."""
    workers = resources["workers"]
    per_trial = {"GPU": workers * resources["gpus_per_worker"],
                 **{name: workers * amount for name, amount in resources["custom_per_worker"].items()}}

    def fits(name: str, amount: float) -> int:
        return int(cluster.get(name, 0) / amount + 1e-9)

    cpu_slots = fits("CPU", workers * resources["cpus_per_worker"])
    scarce = [fits(name, amount) for name, amount in per_trial.items() if amount > 0]
    return max(1, min([cpu_slots] + [slots + 1 for slots in scarce]))


def trial_params(planned: PlannedTrial, spec: SweepSpec, data_location: str, dataset_hash: str,
                 resources: dict[str, Any]) -> dict:
    trial = planned.trial
    return {
        "arch": trial.arch, "size": trial.size, **trial.model_fields,
        "params_total": planned.params_total, "params_non_embedding": planned.params_non_embedding,
        "tokens": spec.train.tokens, "context": spec.train.context, "batch_size": spec.train.batch_size,
        "lr": trial.lr, "seed": trial.seed, "precision": trial.precision, "compile": trial.compile,
        "dropout": spec.train.dropout,
        "dataset": data_location, "dataset_hash": dataset_hash, "spec_hash": spec_hash(spec),
        "workers": resources["workers"], "cpus_per_worker": resources["cpus_per_worker"],
        "gpus_per_worker": resources["gpus_per_worker"],
    }


RAY_ENV_FOR_TRIALS = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
                      "RAY_TRAIN_ENABLE_PRINT_PATCH", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S",
                      "MLFLOW_DISABLE_TELEMETRY")


def _set_ray_environment(joined: bool) -> None:
    """Settings Ray reads from the environment, some when it is imported: call this before importing ray."""
    # Train V2 reports block for up to a health-check interval (2 s by default) each: keep reports cheap.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    # Per-trial progress lines differ only in numbers: Ray's log dedup would fold them into "[repeated Nx]".
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Train's print patch sends a worker's print to both its logger and stdout: every progress line came twice.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # A trial whose workers wait for CPUs or GPUs held by other trials (or for nodes the autoscaler is adding)
    # keeps its placement-group request: Train's default gives up after 60 s and starts over, and logs it.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(7 * 24 * 3600))
    if not joined:
        # A local Ray's node is never preempted; the watcher would cost every trial one more actor process.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def _start_ray(address: str | None, slots: int) -> dict[str, float]:
    import ray

    env_vars = {k: os.environ[k] for k in RAY_ENV_FOR_TRIALS if k in os.environ}
    # The dashboard serves Ray's state API, through which Train's placement-group cleaner watches each trial's
    # controller (without it the cleaner cannot work and warns every second); it also shows the sweep's actors.
    start_ray(address, local_resources={TRIAL_SLOT: slots}, env_vars=env_vars, include_dashboard=True)
    return dict(ray.cluster_resources())


def joins_cluster(address: str | None) -> bool:
    """Whether the sweep joins a Ray cluster (--address or $RAY_ADDRESS) rather than starting a local Ray."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def run_sweep(options: SweepOptions, log: Callable[[str], None] = print) -> dict:
    spec = options.spec
    joined = joins_cluster(options.address)
    _set_ray_environment(joined)
    # A dataset URI (s3://...) is what trials are given; each machine reads it through its local copy.
    data_location = spec.data if is_uri(spec.data) else str((options.project_dir / spec.data).resolve())
    data_dir = local_dataset(data_location)
    manifest, vocab = open_dataset(data_dir)
    check_splits_fit_context(manifest, spec.train.context, data_dir)
    planned = plan(spec, options.archs, len(vocab))
    storage = (options.storage or os.environ.get(STORAGE_ENV)
               or str((options.project_dir / "results" / "ray").resolve()))
    if not is_uri(storage):
        storage = str(Path(storage).resolve())
    experiment_path = storage_join(storage, options.name)

    from ray import tune

    if options.resume and not tune.Tuner.can_restore(experiment_path):
        raise UserError(f"no sweep {options.name!r} to resume under {storage}")
    if not options.resume and storage_exists(experiment_path):
        raise UserError(f"sweep {options.name!r} already exists; continue it with --resume {options.name} "
                        f"or choose another --name")
    local_cpus = os.cpu_count() or 1
    per_trial_cpus = spec.resources.workers_per_trial * spec.resources.cpus_per_worker
    cluster = _start_ray(options.address, max(1, local_cpus // per_trial_cpus))
    resources = trial_resources(spec, cluster, can_scale_up=joined)
    if joined and resources["gpus_per_worker"] * resources["workers"] > cluster.get("GPU", 0):
        log(f"the cluster has {cluster.get('GPU', 0):g} GPU(s) now; trials wait for its autoscaler to add GPU nodes")
    check_compilers(planned, resources, joined)
    log(describe_plan(planned, resources))

    uri = mlflow_store.tracking_uri(options.project_dir)
    experiment_id = mlflow_store.ensure_experiment(uri, options.name, options.project_dir)
    # Trials log to MLflow through this actor, held here for the whole sweep; it ends with this process.
    relay = start_relay(options.name, uri)  # noqa: F841
    common = {
        "sweep": options.name, "experiment_id": experiment_id, "storage_path": storage,
        "data": data_location, "dropout": spec.train.dropout, "resources": resources,
        "threads": spec.resources.cpus_per_worker,
    }
    trial_configs = [{"trial": dataclasses.asdict(p.trial), "train": dataclasses.asdict(train_config(spec, p.trial)),
                      "params": trial_params(p, spec, data_location, manifest["fingerprint"][:16], resources)}
                     for p in execution_order(planned)]
    trial_resources_request = ({"cpu": 0, TRIAL_SLOT: 1} if TRIAL_SLOT in cluster else {"cpu": 0.01})
    trainable = tune.with_resources(_trial_entry, trial_resources_request)
    if options.resume:
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=common | {"item": tune.grid_search(trial_configs)},
            # Reusing the trial actor saves each later trial a process start (~5 s of imports on a small machine).
            tune_config=tune.TuneConfig(trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
                                        reuse_actors=True,
                                        # a cluster's autoscaler adds nodes for the trials that wait
                                        max_concurrent_trials=None if joined else concurrent_trials(cluster,
                                                                                                    resources)),
            run_config=tune.RunConfig(name=options.name, storage_path=storage, verbose=1),
        )
    results = tuner.fit()
    if any(r.error is None and "final_val_loss" not in (r.metrics or {}) for r in results):
        # Tune handles Ctrl-C itself: it saves the experiment and returns, reporting the stopped trials as
        # terminated; only a trial that reached its final metrics is really done.
        raise KeyboardInterrupt
    summary = analyze(options.name, options.project_dir, spec.param_convention, log)
    failed = [r for r in results if r.error is not None]
    for result in failed:
        log(f"{result.path.rstrip('/').rsplit('/', 1)[-1]} failed: {error_line(result.error)}")
    if failed:
        raise TrialsFailed(f"{len(failed)} trial(s) failed (their errors are under {experiment_path}); "
                           f"the fit above uses the finished ones; retry the failed ones with --resume {options.name}")
    return summary


def error_line(error: BaseException) -> str:
    """A failed trial's error in one line: the exception the worker raised (the last line of what Ray Tune and Ray
    Train wrapped around it), without its module path."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", lines[-1]) if lines else type(error).__name__


def _trial_name(trial) -> str:
    return Trial(**trial.config["item"]["trial"]).key


def _trial_entry(config: dict[str, Any]) -> None:
    run_trial({k: v for k, v in config.items() if k != "item"} | config["item"])


def run_records(runs: list, convention: str) -> list[tuple[str, float, float, float]]:
    """(architecture, N, learning rate, final val loss) of every finished trial run that has a final loss."""
    records = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        if "final_val_loss" in metrics and math.isfinite(metrics["final_val_loss"]):
            records.append((params["arch"], float(params[f"params_{convention}"]), float(params["lr"]),
                            metrics["final_val_loss"]))
    return records


def best_lr_points(records: list[tuple[str, float, float, float]]) -> dict[str, list[tuple[float, float]]]:
    """Per architecture, (N, loss) of every seed at each size's best learning rate (the lowest mean over seeds)."""
    losses: dict[tuple[str, float, float], list[float]] = defaultdict(list)
    for arch, n, lr, loss in records:
        losses[arch, n, lr].append(loss)
    best: dict[tuple[str, float], tuple[float, list[float]]] = {}
    for (arch, n, _lr), seeds in losses.items():
        mean = statistics.fmean(seeds)
        if (arch, n) not in best or mean < best[arch, n][0]:
            best[arch, n] = (mean, seeds)
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (arch, n), (_mean, seeds) in sorted(best.items()):
        points[arch].extend((n, loss) for loss in seeds)
    return dict(points)


def analyze(name: str, project_dir: Path, convention: str, log: Callable[[str], None] = print) -> dict:
    """Fit L(N) per architecture from the sweep's finished MLflow runs alone; log a summary run and results/NAME/."""
    from abcmusic.scaling.fit import fit_power_law
    from abcmusic.scaling.plot import plot_scaling

    uri = mlflow_store.tracking_uri(project_dir)
    experiment = mlflow_store.client(uri).get_experiment_by_name(name)
    if experiment is None:
        raise UserError(f"no sweep named {name!r} in the MLflow store at {uri}")
    runs = mlflow_store.finished_trial_runs(uri, experiment.experiment_id)
    points = best_lr_points(run_records(runs, convention))
    fits, skipped = {}, {}
    for arch, arch_points in points.items():
        try:
            fits[arch] = fit_power_law(arch_points)
        except ValueError as error:
            skipped[arch] = str(error)
    out_dir = project_dir / "results" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "sweep": name, "param_convention": convention, "trials_finished": len(runs),
        "points": {arch: [list(p) for p in pts] for arch, pts in points.items()},
        "fits": {arch: fit.to_dict() for arch, fit in fits.items()}, "not_fitted": skipped,
    }
    (out_dir / "fit.json").write_text(json.dumps(summary, indent=1) + "\n")
    if fits:
        plot_scaling(fits, {a: points[a] for a in fits}, out_dir / "scaling.png",
                     parameter_label=f"{convention.replace('_', '-')} parameters N")
    run_id = mlflow_store.find_or_create_run(uri, experiment.experiment_id, mlflow_store.SUMMARY_KEY,
                                             {"param_convention": convention}, kind="summary")
    metrics = {}
    for arch, fit in fits.items():
        chosen = fit.chosen_fit
        metrics |= {f"{arch}_alpha": chosen.alpha, f"{arch}_alpha_ci_low": chosen.alpha_ci_low,
                    f"{arch}_alpha_ci_high": chosen.alpha_ci_high, f"{arch}_a": chosen.a, f"{arch}_c": chosen.c,
                    f"{arch}_r2": chosen.r2}
    if metrics:
        mlflow_store.log_metrics(uri, run_id, metrics, step=0)
    mlflow_store.log_artifacts(uri, run_id, out_dir)
    mlflow_store.finish_run(uri, run_id)
    for arch, fit in fits.items():
        chosen = fit.chosen_fit
        log(f"{arch}: L = {chosen.a:.3g} * N^-{chosen.alpha:.4f}" + (f" + {chosen.c:.3f}" if chosen.c else "")
            + f"   alpha 95% CI [{chosen.alpha_ci_low:.4f}, {chosen.alpha_ci_high:.4f}], R^2 {chosen.r2:.3f},"
            f" {fit.chosen} form, {fit.n_sizes} sizes" + ("  (offset near the smallest loss: alpha inflated)"
                                                          if fit.offset_near_min_loss else ""))
    for arch, reason in skipped.items():
        log(f"{arch}: not fitted: {reason}")
    log(f"fit and plot: {out_dir}/fit.json, {out_dir}/scaling.png; MLflow: mlflow ui --backend-store-uri {uri}")
    return summary
