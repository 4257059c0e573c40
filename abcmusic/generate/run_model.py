"""Find a sweep's trained model in MLflow (the best run, a named run, or a registered model such as models:/demo@best)
and rebuild it from its three files alone."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from abcmusic.data.vocab import Vocabulary
from abcmusic.errors import UserError, first_line
from abcmusic.models import LanguageModel
from abcmusic.models.registry import build_model
from abcmusic.tracking import mlflow_store, model_registry
from abcmusic.tracking.metric_names import read_metric
from abcmusic.tracking.model_registry import RunModel
from abcmusic.tracking.trial_record import TrialRecord

@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_name: str
    experiment_name: str
    arch: str
    size: str
    params_non_embedding: int
    final_val_loss: float
    dataset: str  # the prepared dataset the run trained on (its test split gives prompts and the reference)
    model: RunModel  # where its model's files are


@dataclass
class LoadedModel:
    run: RunInfo
    model: LanguageModel
    vocab: Vocabulary
    config: dict[str, Any]  # config.json: arch, size, model fields, train fields


def run_info(run, experiment_name: str, model: RunModel) -> RunInfo:
    try:
        record = TrialRecord.from_params(run.data.params)
    except KeyError as missing:
        raise UserError(f"run {run.info.run_id} ({run.info.run_name}) is not a trial of an abcmusic sweep: it has no "
                        f"parameter {missing}") from None
    return RunInfo(run.info.run_id, run.info.run_name, experiment_name, record.arch, record.size,
                   record.params_non_embedding, read_metric(run.data.metrics, "final_val_loss"), record.dataset, model)


def _experiments(uri: str, sweep: str | None) -> list:
    mlflow_client = mlflow_store.client(uri)
    if sweep is not None:
        experiment = mlflow_client.get_experiment_by_name(sweep)
        if experiment is None:
            raise UserError(f"no sweep named {sweep!r} in the MLflow store at {uri}")
        return [experiment]
    return list(mlflow_client.search_experiments())


def finished_runs_with_models(uri: str, sweep: str | None) -> list[RunInfo]:
    """Every finished trial run with a final validation loss and a model, lowest loss first."""
    candidates = []
    for experiment in _experiments(uri, sweep):
        runs = [run for run in mlflow_store.finished_trial_runs(uri, experiment.experiment_id)
                if math.isfinite(read_metric(run.data.metrics, "final_val_loss"))]
        models = model_registry.models_of_runs(uri, runs)
        candidates += [run_info(run, experiment.name, models[run.info.run_id])
                       for run in runs if run.info.run_id in models]
    return sorted(candidates, key=lambda info: info.final_val_loss)


def find_run(uri: str, run: str, sweep: str | None) -> RunInfo:
    """`best`: the finished run with a model and the lowest final validation loss; `models:/NAME@ALIAS`: the run
    of that registered model version; otherwise the run with that id."""
    if run == "best":
        candidates = finished_runs_with_models(uri, sweep)
        if not candidates:
            where = f"sweep {sweep!r}" if sweep else f"any sweep in {uri}"
            raise UserError(f"no finished run with a model in {where}; run sweep.py first")
        return candidates[0]
    from mlflow.exceptions import MlflowException

    registered = model_registry.resolve(uri, run) if run.startswith("models:/") else None
    run_id = registered.run_id if registered else run
    mlflow_client = mlflow_store.client(uri)
    try:
        found = mlflow_client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run with id {run!r} in {uri} (use --run best, or an id from the MLflow UI)") from None
    experiment = mlflow_client.get_experiment(found.info.experiment_id)
    if found.data.tags.get(mlflow_store.KIND_TAG) != "trial":
        raise UserError(f"run {run} is not a trial run of a sweep; it has no model")
    model = registered or model_registry.models_of_runs(uri, [found]).get(run_id)
    if model is None:
        raise UserError(f"run {run} ({found.info.run_name}) has no model; it did not finish training")
    return run_info(found, experiment.name, model)


def load_model(uri: str, info: RunInfo, device: torch.device | str = "cpu") -> LoadedModel:
    """The run's model rebuilt from its files: config.json, vocab.json and weights loaded without unpickling."""
    with tempfile.TemporaryDirectory() as directory:
        try:
            local = info.model.download(uri, directory)
            config = json.loads((local / "config.json").read_text())
            vocab = Vocabulary.load(local / "vocab.json")
            state = torch.load(local / "model.pt", weights_only=True, map_location="cpu")
            model = build_model(config["arch"], config["model"])
            model.load_state_dict(state)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, json.JSONDecodeError) as error:
            raise UserError(f"the model artifact of run {info.run_id} ({info.run_name}) is missing or corrupt: "
                            f"{first_line(error)}") from None
    if len(vocab) != model.config.vocab_size:
        raise UserError(f"the model artifact of run {info.run_id} is inconsistent: vocabulary of {len(vocab)} "
                        f"tokens, model built for {model.config.vocab_size}")
    return LoadedModel(info, model.to(device).eval(), vocab, config)
