"""What a trial's MLflow run records about it as parameters: written once when the run is created, read back by
the fit and by generate.py. The one place that knows the parameter names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrialRecord:
    arch: str
    size: str
    model_fields: dict[str, Any]  # the size's model fields (n_layer, n_embd, ...), logged as parameters of their own
    params_total: int
    params_non_embedding: int
    tokens: int
    context: int
    batch_size: int
    lr: float
    seed: int
    precision: str
    compile: bool
    dropout: float
    dataset: str  # the dataset's folder or URI as the trials read it
    dataset_hash: str
    spec_hash: str
    workers: int
    cpus_per_worker: int
    gpus_per_worker: float
    # Runs logged before schedules had names were cosine runs with one cell: the defaults read them back.
    schedule: str = "cosine"
    budgets: str = ""  # the cells' token counts, comma-separated
    cooldown_fraction: float = 0.0
    lr_grid: float = 0.0  # the grid's rate before the width rule scaled it to `lr` (0: a run logged before the rule)

    def params(self) -> dict[str, str]:
        """MLflow parameters: every field as a string, the model fields flattened beside them."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model_fields"}
        return {name: str(value) for name, value in (self.model_fields | fields).items()}

    def n(self, convention: str) -> int:
        """The parameter count the fit uses: `non_embedding` or `total`."""
        return self.params_non_embedding if convention == "non_embedding" else self.params_total

    @classmethod
    def from_params(cls, params: dict[str, str]) -> TrialRecord:
        """The record a run's parameters hold; a KeyError names a parameter the run lacks."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "model_fields":
                continue
            if f.name not in params and f.default is not dataclasses.MISSING:
                values[f.name] = f.default
                continue
            raw = params[f.name]
            values[f.name] = {"int": int, "float": float, "bool": lambda text: text == "True"}.get(f.type, str)(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        values["model_fields"] = {name: _parse(raw) for name, raw in params.items() if name not in known}
        return cls(**values)


def _parse(raw: str) -> int | float | bool:
    """A number or a boolean logged with str()."""
    if raw in ("True", "False"):
        return raw == "True"
    try:
        return int(raw)
    except ValueError:
        return float(raw)


@dataclass(frozen=True)
class DatasetRecord:
    """What a trial trained on, as MLflow records a dataset input: the dataset's folder name, the manifest's
    fingerprint (its first 16 hex digits, as the runs' `dataset_hash`) as digest, where it lives, and a small
    profile from the manifest (tunes and tokens per split, and how much of validation and test is found in train)."""

    name: str
    digest: str
    source: str
    profile: dict[str, Any]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], location: str) -> DatasetRecord:
        profile: dict[str, Any] = {f"{split}_{count}": stats[count] for split, stats in manifest["splits"].items()
                                   for count in ("tunes", "tokens")}
        for split, found in manifest.get("contamination", {}).items():
            if isinstance(found, dict):
                profile |= {f"{split}_{key}": value for key, value in found.items()}
        return cls(name=location.rstrip("/").rsplit("/", 1)[-1], digest=manifest["fingerprint"][:16],
                   source=location, profile=profile)

    @property
    def source_type(self) -> str:
        """MLflow's name for where the dataset lives: "local" for a folder, else its URI's scheme ("s3", ...)."""
        scheme, separator, _ = self.source.partition("://")
        return scheme if separator else "local"
