"""A sweep's one MLflow client: an actor on the driver's node through which every trial logs.

Trials and their Train workers may run on any node; only the node that runs sweep.py talks to MLflow, so on a
cluster the tracking server can listen on the head's localhost. Train workers also never import MLflow (about
2 s of CPU per trial on a small machine). Calls from one worker run in the order it made them: progress is
sent without waiting, and the worker waits only for its final upload, which also reports any earlier failure.

Metrics arrive under the training code's names and are logged under their sectioned MLflow keys (metric_names).

A trial that resumes from a checkpoint replays the steps after it: the relay logs each metric at a step only if
that metric has no value at this or a later step yet, so a failover or a resumed sweep neither duplicates nor
drops a point (the values first logged are kept).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from abcmusic.tracking import mlflow_store, model_registry
from abcmusic.tracking.metric_names import mlflow_metrics
from abcmusic.tracking.trial_record import DatasetRecord


def relay_name(sweep: str) -> str:
    return f"abcmusic-mlflow-relay-{sweep}"


class MlflowRelay:
    def __init__(self, uri: str):
        self.uri = uri
        mlflow_store.client(uri)  # import MLflow now, not when the first trial starts
        self.errors: dict[str, str] = {}  # run id -> the first logging failure not yet reported
        self.last_steps: dict[str, dict[str, int]] = {}  # run id -> metric -> the last step logged
        self.uploaded_at: dict[str, float] = {}  # run id -> when its files were last logged (this node's clock)

    def find_or_create_run(self, experiment_id: str, key: str, params: dict[str, Any],
                           dataset: DatasetRecord | None = None, parent_run_id: str | None = None) -> str:
        return mlflow_store.find_or_create_run(self.uri, experiment_id, key, params, dataset=dataset,
                                               parent_run_id=parent_run_id)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self._keep_error(run_id, self._log_new_metrics, run_id, metrics, step)

    def _log_new_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        if run_id not in self.last_steps:  # first seen by this relay: the run may hold a resumed trial's points
            self.last_steps[run_id] = mlflow_store.last_logged_steps(self.uri, run_id)
        last = self.last_steps[run_id]
        new = {k: v for k, v in mlflow_metrics(metrics).items()
               if isinstance(v, (int, float)) and step > last.get(k, -1)}
        if new:
            mlflow_store.log_metrics(self.uri, run_id, new, step)
            last.update(dict.fromkeys(new, step))

    def log_cell(self, run_id: str, experiment_id: str, key: str, params: dict[str, Any],
                 dataset: DatasetRecord | None, metrics: dict[str, float], step: int) -> None:
        """A trial's (N, D) cell as a finished run of its own, nested under the trial's run, so that the runs table
        lists every cell with its size, tokens and losses (found again, not duplicated, when a trial resumes)."""
        self._keep_error(run_id, self._log_cell, run_id, experiment_id, key, params, dataset, metrics, step)

    def _log_cell(self, run_id: str, experiment_id: str, key: str, params: dict[str, Any],
                  dataset: DatasetRecord | None, metrics: dict[str, float], step: int) -> None:
        cell_run_id = mlflow_store.find_or_create_run(self.uri, experiment_id, key, params, kind="cell",
                                                      dataset=dataset, parent_run_id=run_id)
        self._log_new_metrics(cell_run_id, metrics, step)
        mlflow_store.finish_run(self.uri, cell_run_id, "FINISHED")

    def add_node(self, run_id: str, node_id: str) -> None:
        self._keep_error(run_id, mlflow_store.add_node, self.uri, run_id, node_id)

    def log_model(self, run_id: str, experiment_id: str, name: str, files: dict[str, bytes], params: dict[str, str],
                  step: int) -> str:
        """Log `files` (name -> content) as the run's model; its id. Raises if anything logged for the run failed."""
        self._raise_kept_error(run_id)
        with tempfile.TemporaryDirectory(prefix="abcmusic-model-") as directory:
            for file_name, content in files.items():
                (Path(directory) / file_name).write_bytes(content)
            model_id = model_registry.log_model(self.uri, experiment_id, run_id, name, Path(directory), params, step)
        self.uploaded_at[run_id] = time.time()
        return model_id

    def upload_finished_at(self, run_id: str) -> float | None:
        """When the run's last files were logged: the trial function times Ray Train's teardown from it."""
        return self.uploaded_at.get(run_id)

    def finish_run(self, run_id: str, status: str) -> None:
        mlflow_store.finish_run(self.uri, run_id, status)
        self._raise_kept_error(run_id)

    def _keep_error(self, run_id: str, log, *args) -> None:
        try:
            log(*args)
        except Exception as error:  # nobody waits on progress calls: keep the failure for the next awaited one
            self.errors.setdefault(run_id, f"MLflow logging failed: {type(error).__name__}: {error}")

    def _raise_kept_error(self, run_id: str) -> None:
        if run_id in self.errors:
            raise RuntimeError(self.errors.pop(run_id))


def start_relay(sweep: str, uri: str):
    """Start the sweep's relay on this (the driver's) node; it lives as long as the driver."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_class = ray.remote(MlflowRelay)
    return actor_class.options(
        name=relay_name(sweep), get_if_exists=True, num_cpus=0, max_concurrency=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
    ).remote(uri)


def get_relay(sweep: str):
    import ray

    return ray.get_actor(relay_name(sweep))
