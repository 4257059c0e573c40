"""The MLflow key of every metric the project logs: `section/name`, so that MLflow's chart view shows one section
per concern. The UI orders sections alphabetically (keys without a slash come last, as "Model metrics"), so the
loss curves are under `loss/`, the first; no other section's name sorts before it.

Training code names its metrics plainly (`val_loss`, `tokens_per_s`, `cell/val_loss`); only what is sent to MLflow
is renamed, here. Runs logged before the names had sections are read through `read_metric` and `history_keys`.
"""

from __future__ import annotations

import math
from typing import Any

TRIAL_KEYS: dict[str, str] = {
    # the curves
    "train_loss": "loss/train",
    "val_loss": "loss/val",  # a fixed sample of validation batches at each evaluation point
    # the optimizer
    "lr": "optim/lr",
    "grad_norm": "optim/grad_norm",
    # where the run stands
    "step": "progress/step",
    "tokens_seen": "progress/tokens_seen",
    "tokens_trained": "progress/tokens_trained",  # the run's steps and its cooldown branches'
    "resumed_at_tokens": "progress/resumed_at_tokens",
    "early_stopped": "progress/early_stopped",
    # the run's result: its end evaluated on the whole validation and test splits
    "final_val_loss": "result/val_loss",
    "final_val_loss_se": "result/val_loss_se",
    "final_val_tokens": "result/val_tokens",
    "sampled_val_loss": "result/sampled_val_loss",
    "test_loss": "result/test_loss",
    "test_loss_se": "result/test_loss_se",
    "test_tokens": "result/test_tokens",
    # speed
    "tokens_per_s": "perf/tokens_per_s",
    "mfu": "perf/mfu",
    "peak_flops": "perf/peak_flops",
    # where the time went
    "train_seconds": "time/train_seconds",
    "eval_seconds": "time/eval_seconds",
    "report_seconds": "time/report_seconds",
    "setup_seconds": "time/setup_seconds",
    "ray_setup_seconds": "time/ray_setup_seconds",
    "resource_wait_seconds": "time/resource_wait_seconds",
    "teardown_seconds": "time/teardown_seconds",
}
CELL_PREFIX = "cell/"  # the loop's name for a wsd cell's metrics
CELL_SECTION = "scaling/"  # one value per (N, D) cell, at the cell's token count: what the law is fitted to
LAW_SECTION = "scaling_law"  # the sweep's fitted numbers, on its parent run: scaling_law/ARCH/NAME
SAMPLES_SECTION = "samples"  # generate.py's measures of a model's samples: samples/NAME


def mlflow_key(name: str) -> str:
    """The MLflow key of a training metric (a name the project does not know is logged as it is)."""
    if name.startswith(CELL_PREFIX):
        return CELL_SECTION + name[len(CELL_PREFIX):]
    return TRIAL_KEYS.get(name, name)


def mlflow_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {mlflow_key(name): value for name, value in metrics.items()}


def law_key(arch: str, name: str) -> str:
    return f"{LAW_SECTION}/{arch}/{name}"


def samples_key(name: str) -> str:
    return f"{SAMPLES_SECTION}/{name.removeprefix('samples_')}"


def plain_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics under the training code's names, whether it logged sectioned keys or (older) plain names."""
    plain = {key: name for name, key in TRIAL_KEYS.items()}
    return {(CELL_PREFIX + key[len(CELL_SECTION):] if key.startswith(CELL_SECTION) else plain.get(key, key)): value
            for key, value in metrics.items()}


def read_metric(metrics: dict[str, float], name: str, default: float = math.nan) -> float:
    """A run's last value of training metric `name`, under its sectioned key or, for older runs, its plain name."""
    return metrics.get(mlflow_key(name), metrics.get(name, default))


def history_keys(name: str) -> tuple[str, str]:
    """The keys training metric `name` may be logged under: its sectioned key, and the name older runs used."""
    return mlflow_key(name), name
