"""Sweep specifications: the dataclasses that `experiments/*.yaml` map onto, and the trial grid."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from abcmusic.errors import UserError, first_line
from abcmusic.models.registry import get_architecture
from abcmusic.train.config import TRIAL_FIELDS, TrainConfig
from abcmusic.train.precision import Precision

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
PARAM_CONVENTIONS = ("non_embedding", "total")


@dataclass(frozen=True)
class ArchSpec:
    sizes: dict[str, dict[str, int]]  # size name -> model fields (vocab_size and context come from the data)
    precision: Precision = "fp32"
    lrs: tuple[float, ...] = ()  # overrides the sweep's lrs for this architecture when set
    compile: bool = False  # torch.compile the training step: faster on a GPU, but each trial first compiles
    # The width rule: a size trains at its grid rate times (lr_reference_width / width)^lr_width_exponent, width
    # being the model's (GPT n_embd, LSTM hidden), since the best rate falls as models widen; 0 turns it off.
    lr_reference_width: int = 0
    lr_width_exponent: float = 1.0

    def __post_init__(self) -> None:
        if self.lr_reference_width < 0:
            raise ValueError("lr_reference_width must not be negative (0 turns the width rule off)")
        if not math.isfinite(self.lr_width_exponent):
            raise ValueError("lr_width_exponent must be a finite number")

    def width_factor(self, arch: str, model_fields: dict[str, int]) -> float:
        """What the width rule multiplies a size's grid rate by (1 without a rule)."""
        width = model_fields.get(get_architecture(arch).width_field)
        if not self.lr_reference_width or not width:  # a size without its width fails the plan's model check
            return 1.0
        return (self.lr_reference_width / width) ** self.lr_width_exponent


@dataclass(frozen=True)
class TrainSpec:
    """The `train:` block: the loop's settings every trial shares (its flat keys are TrainConfig's fields, but for
    the ones each trial sets: TRIAL_FIELDS), the learning rates each size is trained at, and the models' dropout."""

    loop: TrainConfig
    lrs: tuple[float, ...] = (TrainConfig.lr,)
    dropout: float = 0.0

    def for_trial(self, trial: Trial) -> TrainConfig:
        """The training loop's config for one trial."""
        return dataclasses.replace(self.loop, lr=trial.trained_lr, precision=trial.precision,
                                   compile=trial.compile, seed=trial.seed)


@dataclass(frozen=True)
class ResourceSpec:
    workers_per_trial: int = 1
    cpus_per_worker: int = 1
    gpus_per_trial: int | None = None  # None: one per worker when the cluster has GPUs, else none
    # Custom Ray resources each worker also asks for, e.g. {"a10g": 1} to land on one node type.
    worker_resources: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers_per_trial <= 0 or self.cpus_per_worker <= 0:
            raise ValueError("workers_per_trial and cpus_per_worker must be positive")
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            raise ValueError("gpus_per_trial must not be negative")
        for name, amount in self.worker_resources.items():
            if not name or not amount > 0:
                raise ValueError(f"worker resource {name!r}: expected a name and a positive amount")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    data: str
    train: TrainSpec
    archs: dict[str, ArchSpec]
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    seeds: int = 1
    param_convention: str = "non_embedding"  # which parameter count the fit uses (Kaplan et al. use non-embedding)
    model_alias: str = "best"  # the sweep's best model is registered as models:/SWEEP@ALIAS

    def __post_init__(self) -> None:
        if self.seeds <= 0:
            raise ValueError("seeds must be positive")
        # MLflow refuses "latest" and version-like aliases ("v3"), which it reads as version numbers.
        if not re.fullmatch(r"[A-Za-z][\w-]*", self.model_alias) or re.fullmatch(r"(?i)latest|v\d+",
                                                                               self.model_alias):
            raise ValueError(f"model_alias {self.model_alias!r}: a name such as best or final (not latest or v1)")
        if self.param_convention not in PARAM_CONVENTIONS:
            raise ValueError(f"param_convention must be one of {', '.join(PARAM_CONVENTIONS)}")


@dataclass(frozen=True)
class Trial:
    arch: str
    size: str
    model_fields: dict[str, int]
    precision: Precision
    lr: float
    seed: int
    compile: bool = False
    lr_factor: float = 1.0  # the width rule's factor: the trial trains at lr * lr_factor

    @property
    def trained_lr(self) -> float:
        return self.lr * self.lr_factor

    @property
    def key(self) -> str:
        """Stable name of the trial within its sweep (used for Ray storage and MLflow lookups)."""
        return f"{self.arch}-{self.size}-lr{self.lr:g}-s{self.seed}"


def _check_keys(data: Any, allowed: list[str], required: list[str], where: str) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    missing = [name for name in required if name not in data]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    return data


def _required(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _construct(cls, values: dict[str, Any], where: str):
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise UserError(f"{where}: {first_line(error)}") from None


def _floats(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in (value if isinstance(value, list) else [value]))


def _train_spec(data: Any, where: str) -> TrainSpec:
    shared = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in TRIAL_FIELDS]
    _check_keys(data, shared + ["lrs", "dropout"], _required(TrainConfig), where)
    extra = {name: data[name] for name in ("dropout",) if name in data}
    if "lrs" in data:
        extra["lrs"] = _floats(data["lrs"])
    values = {k: v for k, v in data.items() if k in shared}
    if "budgets" in values:
        values["budgets"] = _floats(values["budgets"])  # a list in YAML; a tuple in the frozen config
    loop = _construct(TrainConfig, values, where)
    return _construct(TrainSpec, {"loop": loop, **extra}, where)


def _arch_spec(data: Any, where: str) -> ArchSpec:
    _check_keys(data, [f.name for f in dataclasses.fields(ArchSpec)], _required(ArchSpec), where)
    return _construct(ArchSpec, data | ({"lrs": _floats(data["lrs"])} if "lrs" in data else {}), where)


def spec_from_mapping(data: Any, where: str) -> SweepSpec:
    """A SweepSpec from an experiment's parsed YAML, refusing unknown or missing keys with the YAML path."""
    _check_keys(data, [f.name for f in dataclasses.fields(SweepSpec)], _required(SweepSpec), where)
    archs = data["archs"]
    if not isinstance(archs, dict) or not archs:
        raise UserError(f"{where}.archs: expected at least one architecture")
    values = data | {"train": _train_spec(data["train"], f"{where}.train"),
                     "archs": {arch: _arch_spec(spec, f"{where}.archs.{arch}") for arch, spec in archs.items()}}
    if "resources" in data:
        resources = data["resources"]
        _check_keys(resources, [f.name for f in dataclasses.fields(ResourceSpec)], [], f"{where}.resources")
        values["resources"] = _construct(ResourceSpec, resources, f"{where}.resources")
    return _construct(SweepSpec, values, where)


def load_spec(name_or_path: str) -> SweepSpec:
    """`demo` -> experiments/demo.yaml; a path to a YAML file is read as it is."""
    path = Path(name_or_path)
    if not path.suffix:
        path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")))
        raise UserError(f"no experiment {name_or_path!r} ({path} not found); known: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {first_line(error)}") from None
    return spec_from_mapping(data, path.name)


def spec_hash(spec: SweepSpec) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode()).hexdigest()[:12]


def build_grid(spec: SweepSpec) -> list[Trial]:
    """Every (architecture, size, learning rate, seed) of the spec, in spec order."""
    trials = []
    for arch, arch_spec in spec.archs.items():
        for size, fields in arch_spec.sizes.items():
            for lr in arch_spec.lrs or spec.train.lrs:
                for seed in range(spec.seeds):
                    trials.append(Trial(arch, size, dict(fields), arch_spec.precision, lr, seed, arch_spec.compile,
                                        arch_spec.width_factor(arch, fields)))
    return trials
