"""One trial of a sweep: a Tune function that runs a Ray Train TorchTrainer whose workers call the plain loop."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from abcmusic.data.remote import local_dataset
from abcmusic.data.token_stream import load_token_stream, open_dataset
from abcmusic.models.registry import build_model, get_architecture
from abcmusic.sweep.mlflow_relay import get_relay
from abcmusic.sweep.plan import TrialResources, model_config
from abcmusic.sweep.spec import Trial
from abcmusic.tracking.trial_record import DatasetRecord, TrialRecord
from abcmusic.train.config import CellPlan, TrainConfig
from abcmusic.train.loop import evaluate_split, train
from abcmusic.train.throughput import measure_peak_flops

STATE_FILE = "state.pt"


@dataclass(frozen=True)
class TrialJob:
    """Everything one trial needs: built by the driver, passed whole through Ray Tune to the trial function."""

    sweep: str
    experiment_id: str
    storage_path: str  # Ray Train's checkpoints: a folder or URI every node reaches
    data: str  # the prepared dataset's folder or URI
    trial: Trial
    train: TrainConfig
    dropout: float
    resources: TrialResources
    record: TrialRecord  # the run's MLflow parameters
    # A sweep resumed from an older version's saved Tune state unpickles jobs without these: the defaults apply.
    dataset: DatasetRecord | None = None  # the run's MLflow dataset input
    parent_run_id: str | None = None  # the sweep's summary run, under which the trial's run is nested


@dataclass(frozen=True)
class WorkerJob:
    """What every Train worker of one trial gets: the trial's job, its MLflow run and the trial's clock so far."""

    job: TrialJob
    run_id: str
    trial_started_at: float
    fit_called_at: float


def progress_line(trial: Trial, metrics: dict[str, Any], budget: int) -> str:
    val = f" val {metrics['val_loss']:.4f}" if "val_loss" in metrics else ""
    return (f"[{trial.key}] {metrics['tokens_seen']:,}/{budget:,} tokens  train {metrics['train_loss']:.4f}{val}"
            f"  {metrics['tokens_per_s']:,.0f} tokens/s")


def cell_line(trial: Trial, metrics: dict[str, Any]) -> str:
    return (f"[{trial.key}] cell {int(metrics['cell/tokens']):,} tokens  val {metrics['cell/val_loss']:.4f}"
            f"  test {metrics['cell/test_loss']:.4f}  ({metrics['cell/epochs']:.3g} epochs)")


def train_worker(worker_job: WorkerJob) -> None:
    """Ray Train's train_loop_per_worker: load the data, build the model, train, send the final model to MLflow."""
    entered_at = time.time()
    import ray
    import ray.train
    import ray.train.torch

    # Train logs every report at INFO through the root logger ("Reporting training result N: ..."), more lines
    # than the progress lines below; warnings and errors still show.
    logging.getLogger().setLevel(logging.WARNING)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    job = worker_job.job
    torch.set_num_threads(job.resources.cpus_per_worker)  # a Ray worker otherwise runs torch on one thread
    device = ray.train.torch.get_device()
    trial, train_config = job.trial, job.train
    data_dir = local_dataset(job.data)  # a URI is copied to this node once, then read locally

    _, vocab = open_dataset(data_dir)
    streams = {split: load_token_stream(data_dir, split, vocab.separator_id) for split in ("train", "val", "test")}
    architecture_config = model_config(trial, len(vocab), train_config.context, job.dropout)
    torch.manual_seed(trial.seed)
    model = ray.train.torch.prepare_model(build_model(trial.arch, dataclasses.asdict(architecture_config)))

    resume_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = torch.load(Path(directory) / STATE_FILE, weights_only=True, map_location="cpu")

    run_id = worker_job.run_id
    relay = get_relay(job.sweep) if rank == 0 else None  # MLflow, through the driver's node
    if relay is not None:
        relay.add_node.remote(run_id, ray.get_runtime_context().get_node_id())
        if resume_state is not None:
            # Where this attempt picked up: replayed steps are logged once, so token counts alone cannot show it.
            resumed_at = int(resume_state["step"]) * train_config.tokens_per_step
            relay.log_metrics.remote(run_id, {"resumed_at_tokens": resumed_at}, step=resumed_at)

    def save_checkpoint(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            if rank == 0:
                torch.save(state, Path(directory) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if rank == 0 else None)

    def log_cell_run(metrics: dict[str, Any]) -> None:
        tokens = int(metrics["cell/tokens"])
        relay.log_cell.remote(run_id, job.experiment_id, f"{trial.key}@{tokens}",
                              job.record.params() | {"cell_tokens": str(tokens)}, job.dataset,
                              {k: v for k, v in metrics.items() if k.startswith("cell/")}, tokens)

    def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if relay is not None:
            relay.log_metrics.remote(run_id, metrics, step=metrics["tokens_seen"])
            if "cell/tokens" in metrics:  # the run's end is its last cell
                log_cell_run(metrics)
            print(progress_line(trial, metrics, train_config.tokens), flush=True)
        if state is not None:
            # Progress and evaluations go to MLflow and the console only: a ray.train.report blocks until Ray
            # Train's controller polls (~0.2 s), so it is kept for checkpoints and the final metrics.
            save_checkpoint(metrics, state)

    def report_cell(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        # A branch's cell, logged at its own token count; its checkpoint (the run's state at the branch point, with
        # the cell counted as done) is what a lost worker or a restarted sweep resumes from.
        if relay is not None:
            relay.log_metrics.remote(run_id, metrics, step=int(metrics["cell/tokens"]))
            log_cell_run(metrics)
            print(cell_line(trial, metrics), flush=True)
        # Ray Train's result says where the run stands, as every checkpoint's does: the branch point it resumes from.
        save_checkpoint(metrics | {"tokens_seen": state["step"] * train_config.tokens_per_step}, state)

    flops_per_token = get_architecture(trial.arch).flops_per_token(architecture_config)

    def evaluate_cell(cell_model: torch.nn.Module, cell: CellPlan) -> dict[str, float]:
        # The whole validation and test splits: a few fixed batches have a sampling error as large as the
        # differences between neighbouring sizes.
        val, test = (evaluate_split(cell_model, streams[split], train_config.context,
                                    train_config.micro_batch(world_size), device, train_config.precision)
                     for split in ("val", "test"))
        return {"cell/val_loss": val.loss, "cell/val_loss_se": val.standard_error, "cell/val_tokens": val.tokens,
                "cell/test_loss": test.loss, "cell/test_loss_se": test.standard_error,
                "cell/test_tokens": test.tokens, "cell/flops": flops_per_token * cell.tokens,
                "cell/epochs": cell.tokens / train_tokens}

    train_tokens = len(streams["train"])
    training_called = time.time()
    wait_seconds = resource_wait_seconds()
    final = train(model, streams["train"], streams["val"], train_config, report, device=device, rank=rank,
                  world_size=world_size, resume_state=resume_state, evaluate_cell=evaluate_cell,
                  report_cell=report_cell)
    # Measured after training, not during start-up, when other trials' start-ups compete for the cores.
    peak_flops = measure_peak_flops(device, train_config.precision)
    # The run's end is its last cell: its whole-split losses are the trial's final losses.
    final_metrics = {"final_val_loss": final["cell/val_loss"], "final_val_loss_se": final["cell/val_loss_se"],
                     "final_val_tokens": final["cell/val_tokens"], "sampled_val_loss": final["val_loss"],
                     "test_loss": final["cell/test_loss"], "test_loss_se": final["cell/test_loss_se"],
                     "test_tokens": final["cell/test_tokens"], "tokens_seen": final["tokens_seen"],
                     "tokens_trained": final["tokens_trained"],
                     "tokens_per_s": final["tokens_per_s"], "train_seconds": final["train_seconds"],
                     "eval_seconds": final["eval_seconds"], "report_seconds": final["report_seconds"],
                     # trial start to the first step: Ray, data, model, optimizer
                     "setup_seconds": training_called - worker_job.trial_started_at + final["startup_seconds"],
                     "peak_flops": peak_flops,
                     # the part of set-up that is Ray Train's own: controller, placement group, worker process
                     "ray_setup_seconds": entered_at - worker_job.fit_called_at,
                     **({"resource_wait_seconds": wait_seconds} if wait_seconds is not None else {}),
                     # MFU over all workers: model FLOPs per second against the summed peak of their devices
                     "mfu": flops_per_token * final["tokens_per_s"] / (peak_flops * world_size)}
    if relay is not None:
        relay.log_metrics.remote(run_id, final_metrics, step=final["tokens_seen"])
        raw_model = model.module if hasattr(model, "module") else model
        weights = io.BytesIO()
        torch.save(raw_model.state_dict(), weights)
        files = {"model.pt": weights.getvalue(), "vocab.json": vocab.dumps().encode(),
                 "config.json": (json.dumps({"arch": trial.arch, "size": trial.size,
                                             "model": dataclasses.asdict(architecture_config),
                                             "train": dataclasses.asdict(train_config)}, indent=1) + "\n").encode()}
        # Waits for everything this worker sent before it, and fails the trial if any of it failed to log.
        ray.get(relay.log_model.remote(run_id, job.experiment_id, trial.key, files, job.record.params(),
                                       final["tokens_seen"]))
    ray.train.report(final_metrics)


def resource_wait_seconds() -> float | None:
    """How long this worker group's placement group waited for its CPUs/GPUs (held by other trials, or nodes not
    yet added): part of set-up on the clock, but no cost of the trial's own."""
    from ray.util.placement_group import get_current_placement_group, placement_group_table

    group = get_current_placement_group()
    latency = placement_group_table(group).get("stats", {}).get("end_to_end_creation_latency_ms") if group else None
    return None if latency is None else latency / 1000


def run_trial(job: TrialJob) -> None:
    """Ray Tune function trainable: one TorchTrainer for one (architecture, size, lr, seed)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    started_at = time.time()
    trial = job.trial
    relay = get_relay(job.sweep)
    run_id = ray.get(relay.find_or_create_run.remote(job.experiment_id, trial.key, job.record.params(),
                                                     job.dataset, job.parent_run_id))
    trainer = TorchTrainer(
        functools.partial(train_worker, WorkerJob(job, run_id, started_at, fit_called_at=time.time())),
        scaling_config=ray.train.ScalingConfig(num_workers=job.resources.workers,
                                               use_gpu=job.resources.gpus_per_worker > 0,
                                               resources_per_worker=job.resources.per_worker()),
        run_config=ray.train.RunConfig(
            # A deterministic name: a restored sweep finds this trial's checkpoints under it.
            name=f"{job.sweep}-{trial.key}",
            storage_path=job.storage_path,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=3),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Train's INFO lines ("Checkpoint successfully created", "Reporting training result", ...) outnumbered
            # the trials' own progress lines on the console; they stay in Ray's session log files.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        result = trainer.fit()
    except BaseException:
        ray.get(relay.finish_run.remote(run_id, "FAILED"))
        raise
    fit_returned_at = time.time()
    uploaded_at = ray.get(relay.upload_finished_at.remote(run_id))
    if uploaded_at is not None:
        # The final model's upload to fit() returning: the last report, Ray Train noticing the end and stopping
        # the worker group. Both times are taken on this node (the relay runs beside the trial functions).
        relay.log_metrics.remote(run_id, {"teardown_seconds": fit_returned_at - uploaded_at},
                                 step=int((result.metrics or {}).get("tokens_seen", 0)))
    ray.get(relay.finish_run.remote(run_id, "FINISHED"))
