"""Trained models in MLflow: each trial's final model is an MLflow logged model of its run (the runs table's Models
column), and a sweep's best model is registered under the sweep's name with an alias (`best`, or `final` for a
final-model experiment), so that `models:/NAME@ALIAS` names it anywhere the store is reachable.

A model is three files: model.pt (a state dict, read with torch.load(weights_only=True), so loading never runs
pickled code), config.json (architecture, size, model and training fields) and vocab.json. Runs logged before
models were logged models hold the same files in their `model` artifact folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from abcmusic.errors import UserError
from abcmusic.tracking import mlflow_store

MODEL_FILES = ("model.pt", "config.json", "vocab.json")
RUN_ARTIFACT = "model"  # where runs logged before logged models keep the files
MODEL_TYPE = "abcmusic"
# What the runs table's Models column reads to show "NAME vN" instead of the logged model's own name: MLflow's
# server writes it when a version is created from a logged model, its SQLite store does not, so it is set here.
VERSIONS_TAG = "mlflow.modelVersions"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
NOT_IN_NAMES = re.compile(r"[/:.%\"']")  # what an MLflow server refuses in model names (its SQLite store does not)


def model_name(name: str) -> str:
    """`name` as MLflow accepts it for a logged or registered model: gpt-57k-lr0.006-s0 -> gpt-57k-lr0_006-s0."""
    return NOT_IN_NAMES.sub("_", name)


@dataclass(frozen=True)
class RunModel:
    """Where a run's model files are: a logged model's id, or (older runs) the run's own artifact folder."""

    run_id: str
    model_id: str | None  # None: the run's RUN_ARTIFACT folder

    def download(self, uri: str, directory: str) -> Path:
        import mlflow.artifacts

        if self.model_id is None:
            return Path(mlflow_store.client(uri).download_artifacts(self.run_id, RUN_ARTIFACT, directory))
        # From the model's own location: a models:/ URI would resolve through MLflow's global registry URI.
        location = mlflow_store.client(uri).get_logged_model(self.model_id).artifact_location
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=directory, tracking_uri=uri))


def log_model(uri: str, experiment_id: str, run_id: str, name: str, local_dir: Path, params: dict[str, str],
              step: int) -> str:
    """Log local_dir's model files as a logged model of the run (an output at `step`); its id."""
    from mlflow.entities import LoggedModelOutput

    client = mlflow_store.client(uri)
    model = client.create_logged_model(experiment_id, name=model_name(name), source_run_id=run_id, params=params,
                                       model_type=MODEL_TYPE)
    try:
        client.log_model_artifacts(model.model_id, str(local_dir))
    except BaseException:
        client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
    return model.model_id


def run_models(uri: str, experiment_ids: list[str]) -> dict[str, RunModel]:
    """Every run of these experiments that has a complete model, by run id: its newest ready logged model (a
    retried upload may have left an older one), else its model artifact folder."""
    from mlflow.entities import LoggedModelStatus

    client = mlflow_store.client(uri)
    found: dict[str, RunModel] = {}
    page_token = None
    while True:
        page = client.search_logged_models(experiment_ids, filter_string=f"model_type = '{MODEL_TYPE}'",
                                           order_by=[{"field_name": "creation_time", "ascending": True}],
                                           page_token=page_token)
        for model in page:
            if model.status == LoggedModelStatus.READY:
                found[model.source_run_id] = RunModel(model.source_run_id, model.model_id)
        page_token = page.token
        if not page_token:
            break
    return found


def legacy_run_model(uri: str, run_id: str) -> RunModel | None:
    """The run's model artifact folder, if it holds all three files (runs logged before logged models)."""
    names = {Path(f.path).name for f in mlflow_store.client(uri).list_artifacts(run_id, RUN_ARTIFACT)}
    return RunModel(run_id, None) if set(MODEL_FILES) <= names else None


def models_of_runs(uri: str, runs: list) -> dict[str, RunModel]:
    """The model of each of these runs that has one, by run id: its logged model, else (older runs) its artifact
    folder."""
    logged = run_models(uri, list({run.info.experiment_id for run in runs})) if runs else {}
    found = {}
    for run in runs:
        model = logged.get(run.info.run_id) or legacy_run_model(uri, run.info.run_id)
        if model is not None:
            found[run.info.run_id] = model
    return found


def register(uri: str, name: str, run_model: RunModel, alias: str) -> str:
    """Register the run's model under model_name(name) (created on first use) and point `alias` at the new version;
    the version. A version always comes from a logged model: an older run's files are logged as one first."""
    from mlflow.exceptions import MlflowException

    client = mlflow_store.client(uri)
    name = model_name(name)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="abcmusic models of one sweep: model.pt (a state dict), "
                                                         "config.json, vocab.json")
    source = f"models:/{run_model.model_id}" if run_model.model_id else f"runs:/{run_model.run_id}/{RUN_ARTIFACT}"
    try:
        current = client.get_model_version_by_alias(name, alias)
        if current.source == source:  # the sweep analysed again: its best model is registered already
            return str(current.version)
    except MlflowException:
        pass
    version = client.create_model_version(name, source, run_id=run_model.run_id, model_id=run_model.model_id,
                                          await_creation_for=0)
    client.set_registered_model_alias(name, alias, version.version)
    if run_model.model_id:
        listed = json.loads(client.get_logged_model(run_model.model_id).tags.get(VERSIONS_TAG) or "[]")
        if not any(entry.get("name") == name and str(entry.get("version")) == str(version.version)
                   for entry in listed):
            client.set_logged_model_tags(run_model.model_id, {VERSIONS_TAG: json.dumps(
                listed + [{"name": name, "version": int(version.version)}])})
    return str(version.version)


def resolve(uri: str, model_uri: str) -> RunModel:
    """`models:/NAME@ALIAS` -> the registered version's run and model; a clear error when it does not exist."""
    from mlflow.exceptions import MlflowException

    match = MODEL_URI.match(model_uri)
    if match is None:
        raise UserError(f"--model {model_uri!r}: expected models:/NAME@ALIAS, e.g. models:/demo@best")
    try:
        version = mlflow_store.client(uri).get_model_version_by_alias(match["name"], match["alias"])
    except MlflowException:
        raise UserError(f"no registered model {match['name']!r} with alias {match['alias']!r} in {uri}") from None
    model_id = version.source.removeprefix("models:/") if version.source.startswith("models:/") else None
    return RunModel(version.run_id, model_id)
