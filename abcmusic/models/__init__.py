"""The models: a GPT and an LSTM over character tokens, the interface and the parameter-count convention they share.

Both architectures are `LanguageModel`s: `forward(idx, targets=None, state=None)` returns a `ModelOutput` of
logits, loss and state. Training passes no state: every window stands alone. Sampling starts a batch's state with
`initial_state` and passes each call's state to the next, so that a call runs only the new tokens (the GPT's state
is its key/value cache, the LSTM's its (h, c)); `max_context` says how many tokens a model can have in view.

Both architectures count parameters the same way (Kaplan et al. 2020, who fit scaling laws on non-embedding
parameters): `total` is every distinct parameter, tied weights counted once; `non_embedding` is `total` minus
every vocabulary- or position-indexed tensor: the token embedding, the position embedding (GPT), and the output
head's weight and bias where the head has them of its own (the LSTM's head bias is excluded even when its weight
is tied to the embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn as nn


@dataclass(frozen=True)
class ParamCounts:
    total: int
    non_embedding: int


class ModelOutput(NamedTuple):
    """What every model's forward returns; a NamedTuple, which DDP and torch.compile pass through as it is."""

    logits: torch.Tensor  # [B, T, vocab]
    loss: torch.Tensor | None  # the mean cross-entropy against `targets`, when given
    state: Any  # passed back in, continues these sequences; None where there is none (a GPT given none)


class LanguageModel(nn.Module):
    """The interface training and sampling use; `config` is the architecture's config, with `vocab_size`."""

    config: Any

    @property
    def max_context(self) -> int | None:
        """The most tokens the model can have in view at once, state included; None: no limit."""
        raise NotImplementedError

    def initial_state(self, batch_size: int) -> Any:
        """The state of `batch_size` sequences before their first token, on the model's device and dtype."""
        raise NotImplementedError

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, state: Any = None) -> ModelOutput:
        """Logits for token ids [B, T], the loss against `targets` [B, T] if given; with a `state`, the tokens
        continue the sequences it has seen, and the output's state has seen them too."""
        raise NotImplementedError
