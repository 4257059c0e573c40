"""MLflow bookkeeping for sweeps: one experiment per sweep, one summary run per sweep with one nested run per trial
(all found again on resume).

The embedded default is a SQLite store and an artifact folder in the working directory, both absolute paths
because Ray trial processes run in other directories; MLFLOW_TRACKING_URI points everything at a server instead.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from abcmusic.tracking.trial_record import DatasetRecord

TRIAL_KEY_TAG = "abcmusic.trial_key"
KIND_TAG = "abcmusic.kind"  # "trial" or "summary"
SUMMARY_KEY = "summary"  # the trial-key tag of a sweep's one summary run (the fit, plots), its trials' parent
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's UI nests a run under the run this tag names
# MLflow 3's UI reads this experiment tag to choose between its model-training and GenAI views.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def tracking_uri(project_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project_dir / DEFAULT_DB).resolve()}"


def client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow draws a tqdm bar on stderr for every artifact download when tqdm is installed: a model's three files
    # are no long transfer, and the bar would break the CLIs' one-line errors.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str, project_dir: Path) -> str:
    """The id of the sweep's experiment, created on first use with an absolute artifact location, and marked as
    model training so that MLflow's UI opens it on its runs rather than its GenAI overview."""
    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:  # a sweep started by an older version
            mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        artifact_location = (project_dir / DEFAULT_ARTIFACTS / name).resolve().as_uri()
    return mlflow_client.create_experiment(name, artifact_location=artifact_location,
                                           tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})


def experiment_page(experiment_id: str) -> str:
    """The UI's page of the experiment's runs. MLflow 3.17's UI chooses between its GenAI and model-training views
    by a switch it keeps in the browser (GenAI until changed), not by the experiment's kind tag: the link carries
    the switch."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def experiment_link(uri: str, experiment_id: str) -> str:
    """How to open the experiment in MLflow's UI."""
    page = experiment_page(experiment_id)
    if uri.startswith("sqlite:"):
        return f".venv/bin/mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000/{page}"
    return f"{uri.rstrip('/')}/{page}"


def find_run(uri: str, experiment_id: str, key: str, kind: str = "trial"):
    runs = client(uri).search_runs(
        [experiment_id], filter_string=f"tags.`{TRIAL_KEY_TAG}` = '{key}' and tags.`{KIND_TAG}` = '{kind}'")
    return runs[0] if runs else None


def find_or_create_run(uri: str, experiment_id: str, key: str, params: dict[str, Any], kind: str = "trial",
                       dataset: DatasetRecord | None = None, parent_run_id: str | None = None) -> str:
    """The run of trial `key`: the existing one when a sweep resumes, else a new one with `params` logged,
    `dataset` as its training input, and nested under `parent_run_id` (the sweep's summary run)."""
    existing = find_run(uri, experiment_id, key, kind)
    if existing is not None:
        return existing.info.run_id
    from mlflow.entities import Dataset, DatasetInput, InputTag, Param
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    mlflow_client = client(uri)
    tags = {TRIAL_KEY_TAG: key, KIND_TAG: kind} | ({PARENT_RUN_TAG: parent_run_id} if parent_run_id else {})
    run = mlflow_client.create_run(experiment_id, run_name=key, tags=tags)
    mlflow_client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    if dataset is not None:
        entity = Dataset(name=dataset.name, digest=dataset.digest, source_type=dataset.source_type,
                         source=json.dumps({"uri": dataset.source}), profile=json.dumps(dataset.profile))
        mlflow_client.log_inputs(run.info.run_id, [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT,
                                                                                  "training")])])
    return run.info.run_id


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client(uri).log_batch(run_id, metrics=[
        Metric(k, float(v), now, int(step)) for k, v in metrics.items() if isinstance(v, (int, float))])


def last_logged_steps(uri: str, run_id: str) -> dict[str, int]:
    """For each metric of the run, the largest step it has a value at."""
    mlflow_client = client(uri)
    return {key: max(m.step for m in mlflow_client.get_metric_history(run_id, key))
            for key in mlflow_client.get_run(run_id).data.metrics}


def log_artifacts(uri: str, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
    client(uri).log_artifacts(run_id, str(local_dir), artifact_path)


NODES_TAG = "abcmusic.nodes"  # the Ray node ids a trial's rank 0 ran on, in order (more than one after a failover)


def add_node(uri: str, run_id: str, node_id: str) -> None:
    mlflow_client = client(uri)
    previous = mlflow_client.get_run(run_id).data.tags.get(NODES_TAG)
    mlflow_client.set_tag(run_id, NODES_TAG, f"{previous},{node_id}" if previous else node_id)


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status)


def finished_trial_runs(uri: str, experiment_id: str) -> list:
    """Every finished trial run of the sweep, with its params and last metrics."""
    return list(client(uri).search_runs(
        [experiment_id], filter_string=f"tags.`{KIND_TAG}` = 'trial' and attributes.status = 'FINISHED'",
        max_results=10_000))


def summary_params(convention: str) -> dict[str, str]:
    """The parameters of a sweep's summary run, whichever of the driver and the analysis creates it."""
    return {"param_convention": convention}
