"""The one place that maps an architecture name to its config, model, parameter counts and FLOPs per token.

Parameter counts follow one convention for every architecture (Kaplan et al. 2020): `total` counts every distinct
parameter once (tied weights once); `non_embedding` leaves out every vocabulary- or position-indexed tensor: token
and position embeddings, and an output head's weight and bias where the head has them of its own.
Configs are frozen dataclasses of plain values, so `dataclasses.asdict(config)` and `make_config(arch, **d)`
round-trip through the JSON stored beside the weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from abcmusic.models import LanguageModel, ParamCounts
from abcmusic.models.gpt import GPT, GPTConfig, gpt_flops_per_token, gpt_param_counts
from abcmusic.models.lstm import LSTMConfig, LSTMModel, lstm_flops_per_token, lstm_param_counts


@dataclass(frozen=True)
class Architecture:
    name: str
    config_class: type
    model_class: type[LanguageModel]
    param_counts: Callable[[Any], ParamCounts]
    flops_per_token: Callable[[Any], float]
    width_field: str  # the config field that is the model's width: what a width rule scales the learning rate by


ARCHITECTURES: dict[str, Architecture] = {
    "gpt": Architecture("gpt", GPTConfig, GPT, gpt_param_counts, gpt_flops_per_token, "n_embd"),
    "lstm": Architecture("lstm", LSTMConfig, LSTMModel, lstm_param_counts, lstm_flops_per_token, "hidden"),
}


def get_architecture(arch: str) -> Architecture:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def make_config(arch: str, **fields: Any) -> Any:
    """The architecture's config from its fields, e.g. a dict read from YAML or JSON."""
    config_class = get_architecture(arch).config_class
    names = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise ValueError(f"unknown {arch} config field(s) {', '.join(unknown)}; fields are {', '.join(names)}")
    missing = [f.name for f in dataclasses.fields(config_class)
               if f.name not in fields and f.default is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{arch} config is missing field(s) {', '.join(missing)}")
    return config_class(**fields)


def build_model(arch: str, config_dict: dict[str, Any]) -> LanguageModel:
    """A freshly initialized model of the architecture from its config as a plain dict."""
    return get_architecture(arch).model_class(make_config(arch, **config_dict))
