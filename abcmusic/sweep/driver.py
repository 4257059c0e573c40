"""Run a sweep: check everything, start Ray, and run the planned grid as a Ray Tune grid of Ray Train trials."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from abcmusic.data.remote import local_dataset
from abcmusic.data.token_stream import open_dataset
from abcmusic.errors import UserError
from abcmusic.ray_session import start_ray
from abcmusic.storage import STORAGE_ENV, is_uri
from abcmusic.storage import exists as storage_exists
from abcmusic.storage import join as storage_join
from abcmusic.sweep.mlflow_relay import start_relay
from abcmusic.sweep.plan import (check_compilers, check_splits_fit_context, concurrent_trials, describe_plan,
                                 execution_order, plan, trial_record, trial_resources)
from abcmusic.sweep.spec import SweepSpec, spec_hash
from abcmusic.sweep.trial import TrialJob, run_trial
from abcmusic.tracking import mlflow_store
from abcmusic.tracking.trial_record import DatasetRecord

TRIAL_SLOT = "trial_slot"  # a custom resource per concurrent trial: a trial function holding a CPU starves its workers
# A Tune trial's config: {"trial": {"name": its key, "job": its TrialJob}}. Tune hands the trial function the
# TrialJob itself, but shows the trial-name callbacks a placeholder for any object that is not plain data.
TRIAL = "trial"


@dataclass(frozen=True)
class SweepOptions:
    spec: SweepSpec
    archs: tuple[str, ...]
    name: str
    project_dir: Path
    address: str | None = None
    resume: bool = False
    storage: str | None = None  # Ray Train/Tune storage: a folder or URI (default $ABCMUSIC_STORAGE, else results/ray)


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


def start_ray_for_trials(address: str | None, slots: int) -> dict[str, float]:
    """Join the cluster (or start a local Ray with `slots` trial slots) with the settings the trials read; the
    cluster's resources."""
    import ray

    env_vars = {k: os.environ[k] for k in RAY_ENV_FOR_TRIALS if k in os.environ}
    # The dashboard serves Ray's state API, through which Train's placement-group cleaner watches each trial's
    # controller (without it the cleaner cannot work and warns every second); it also shows the sweep's actors.
    start_ray(address, local_resources={TRIAL_SLOT: slots}, env_vars=env_vars, include_dashboard=True)
    return dict(ray.cluster_resources())


def joins_cluster(address: str | None) -> bool:
    """Whether the sweep joins a Ray cluster (--address or $RAY_ADDRESS) rather than starting a local Ray."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


@dataclass(frozen=True)
class SweepOutcome:
    failures: list[str]  # one line per failed trial: its name and error
    experiment_path: str  # Ray Tune's experiment folder or URI, with every trial's full error


def run_sweep(options: SweepOptions, log: Callable[[str], None] = print) -> SweepOutcome:
    """Run every trial of the sweep that has not finished yet."""
    spec = options.spec
    joined = joins_cluster(options.address)
    _set_ray_environment(joined)
    # A dataset URI (s3://...) is what trials are given; each machine reads it through its local copy.
    data_location = spec.data if is_uri(spec.data) else str((options.project_dir / spec.data).resolve())
    data_dir = local_dataset(data_location)
    manifest, vocab = open_dataset(data_dir)
    check_splits_fit_context(manifest, spec.train.loop.context, data_dir)
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
    cluster = start_ray_for_trials(options.address, max(1, local_cpus // per_trial_cpus))
    resources = trial_resources(spec, cluster, can_scale_up=joined)
    if joined and resources.gpus_per_worker * resources.workers > cluster.get("GPU", 0):
        log(f"the cluster has {cluster.get('GPU', 0):g} GPU(s) now; trials wait for its autoscaler to add GPU nodes")
    check_compilers(planned, resources, joined)
    log(describe_plan(planned, resources))

    uri = mlflow_store.tracking_uri(options.project_dir)
    experiment_id = mlflow_store.ensure_experiment(uri, options.name, options.project_dir)
    # Trials log to MLflow through this actor, held here for the whole sweep; it ends with this process.
    relay = start_relay(options.name, uri)  # noqa: F841
    dataset = DatasetRecord.from_manifest(manifest, data_location)
    parent_run_id = mlflow_store.find_or_create_run(uri, experiment_id, mlflow_store.SUMMARY_KEY,
                                                    mlflow_store.summary_params(spec.param_convention)
                                                    | sweep_settings(spec, archs=options.archs),
                                                    kind="summary")
    jobs = [TrialJob(sweep=options.name, experiment_id=experiment_id, storage_path=storage, data=data_location,
                     trial=p.trial, train=spec.train.for_trial(p.trial), dropout=spec.train.dropout,
                     resources=resources,
                     record=trial_record(p, spec, data_location, manifest["fingerprint"][:16], resources),
                     dataset=dataset, parent_run_id=parent_run_id)
            for p in execution_order(planned)]
    trial_resources_request = ({"cpu": 0, TRIAL_SLOT: 1} if TRIAL_SLOT in cluster else {"cpu": 0.01})
    trainable = tune.with_resources(_run_tune_trial, trial_resources_request)
    if options.resume:
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={TRIAL: tune.grid_search([{"name": job.trial.key, "job": job} for job in jobs])},
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
    return SweepOutcome([f"{result.path.rstrip('/').rsplit('/', 1)[-1]} failed: {error_line(result.error)}"
                         for result in results if result.error is not None], experiment_path)


def sweep_settings(spec: SweepSpec, archs: tuple[str, ...]) -> dict[str, str]:
    """What the sweep's parent run records of its experiment: the settings every trial shares."""
    loop = spec.train.loop
    return {"experiment": spec.name, "spec_hash": spec_hash(spec), "data": spec.data, "archs": ",".join(archs),
            "seeds": str(spec.seeds), "tokens": str(loop.tokens), "schedule": loop.schedule,
            "budgets": ",".join(str(cell.tokens) for cell in loop.cells()), "context": str(loop.context),
            "batch_size": str(loop.batch_size), "model_alias": spec.model_alias,
            **{f"{arch}_sizes": ",".join(spec.archs[arch].sizes) for arch in archs},
            **{f"{arch}_lrs": ",".join(f"{lr:g}" for lr in spec.archs[arch].lrs or spec.train.lrs) for arch in archs}}


def error_line(error: BaseException) -> str:
    """A failed trial's error in one line: the exception the worker raised (the last line of what Ray Tune and Ray
    Train wrapped around it), without its module path."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", lines[-1]) if lines else type(error).__name__


def _trial_name(trial) -> str:
    return trial.config[TRIAL]["name"]


def _run_tune_trial(config: dict[str, dict]) -> None:
    run_trial(config[TRIAL]["job"])
