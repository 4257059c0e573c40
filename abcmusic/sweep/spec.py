"""Sweep specifications: the dataclasses that `experiments/*.yaml` map onto one to one, and the trial grid."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from abcmusic.errors import UserError, first_line
from abcmusic.train.loop import TrainConfig

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
PARAM_CONVENTIONS = ("non_embedding", "total")


@dataclass(frozen=True)
class ArchSpec:
    sizes: dict[str, dict[str, int]]  # size name -> model fields (vocab_size and context come from the data)
    precision: str = "fp32"
    lrs: tuple[float, ...] = ()  # overrides the sweep's lrs for this architecture when set
    compile: bool = False  # torch.compile the training step: faster on a GPU, but each trial first compiles


@dataclass(frozen=True)
class TrainSpec:
    tokens: int
    context: int
    batch_size: int
    micro_batch_size: int | None = None
    lrs: tuple[float, ...] = (TrainConfig.lr,)
    # The training loop's own defaults, so that the two never drift apart.
    min_lr_fraction: float = TrainConfig.min_lr_fraction
    warmup_fraction: float = TrainConfig.warmup_fraction
    weight_decay: float = TrainConfig.weight_decay
    grad_clip: float = TrainConfig.grad_clip
    dropout: float = 0.0
    eval_points: int = TrainConfig.eval_points
    checkpoints: int = TrainConfig.checkpoints
    eval_batches: int = TrainConfig.eval_batches
    early_stopping_patience: int = TrainConfig.early_stopping_patience  # 0: train the full budget


@dataclass(frozen=True)
class ResourceSpec:
    workers_per_trial: int = 1
    cpus_per_worker: int = 1
    gpus_per_trial: int | None = None  # None: one per worker when the cluster has GPUs, else none
    # Custom Ray resources each worker also asks for, e.g. {"a10g": 1} to land on one node type.
    worker_resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    data: str
    train: TrainSpec
    archs: dict[str, ArchSpec]
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    seeds: int = 1
    param_convention: str = "non_embedding"  # which parameter count the fit uses (Kaplan et al. use non-embedding)


@dataclass(frozen=True)
class Trial:
    arch: str
    size: str
    model_fields: dict[str, int]
    precision: str
    lr: float
    seed: int
    compile: bool = False

    @property
    def key(self) -> str:
        """Stable name of the trial within its sweep (used for Ray storage and MLflow lookups)."""
        return f"{self.arch}-{self.size}-lr{self.lr:g}-s{self.seed}"


def _build(cls, data: Any, where: str):
    """Construct dataclass `cls` from YAML data, refusing unknown or missing keys with the YAML path in the error."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        if cls is SweepSpec and name == "train":
            value = _build(TrainSpec, value, f"{where}.train")
        elif cls is SweepSpec and name == "resources":
            value = _build(ResourceSpec, value, f"{where}.resources")
        elif cls is SweepSpec and name == "archs":
            if not isinstance(value, dict) or not value:
                raise UserError(f"{where}.archs: expected at least one architecture")
            value = {arch: _build(ArchSpec, spec, f"{where}.archs.{arch}") for arch, spec in value.items()}
        elif name == "lrs":
            value = tuple(float(v) for v in (value if isinstance(value, list) else [value]))
        values[name] = value
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    return cls(**values)


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
    spec = _build(SweepSpec, data, path.name)
    if spec.param_convention not in PARAM_CONVENTIONS:
        raise UserError(f"{path.name}: param_convention must be one of {', '.join(PARAM_CONVENTIONS)}")
    return spec


def spec_hash(spec: SweepSpec) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode()).hexdigest()[:12]


def build_grid(spec: SweepSpec) -> list[Trial]:
    """Every (architecture, size, learning rate, seed) of the spec, in spec order."""
    trials = []
    for arch, arch_spec in spec.archs.items():
        for size, fields in arch_spec.sizes.items():
            for lr in arch_spec.lrs or spec.train.lrs:
                for seed in range(spec.seeds):
                    trials.append(Trial(arch, size, dict(fields), arch_spec.precision, lr, seed, arch_spec.compile))
    return trials


def train_config(spec: SweepSpec, trial: Trial) -> TrainConfig:
    """The training loop's config for one trial of the spec."""
    t = spec.train
    return TrainConfig(
        tokens=t.tokens, context=t.context, batch_size=t.batch_size, micro_batch_size=t.micro_batch_size,
        lr=trial.lr, min_lr_fraction=t.min_lr_fraction, warmup_fraction=t.warmup_fraction,
        weight_decay=t.weight_decay, grad_clip=t.grad_clip, precision=trial.precision, eval_points=t.eval_points,
        checkpoints=t.checkpoints, eval_batches=t.eval_batches, early_stopping_patience=t.early_stopping_patience,
        compile=trial.compile, seed=trial.seed,
    )
