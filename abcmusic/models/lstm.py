"""An LSTM language model over character tokens, carrying its state between calls, with closed-form counts.

Parameter counts follow the package convention (see abcmusic.models): `non_embedding` excludes the embedding and
the head's bias, and the head's weight too when it is not tied to the embedding (n_embd != hidden).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from abcmusic.models import LanguageModel, ModelOutput, ParamCounts

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [n_layer, B, hidden]


@dataclass(frozen=True)
class LSTMConfig:
    vocab_size: int
    n_layer: int
    n_embd: int
    hidden: int
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_embd", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LSTMConfig.{name} must be a positive integer; got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LSTMConfig.dropout must be in [0, 1); got {self.dropout!r}")

    @property
    def tied(self) -> bool:
        return self.n_embd == self.hidden


class LSTMModel(LanguageModel):
    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        # nn.LSTM applies dropout only between layers, and warns if asked to with a single layer.
        self.lstm = nn.LSTM(config.n_embd, config.hidden, config.n_layer, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        # The default N(0, 1) embedding would give huge logits through a tied head; small uniform as in
        # PyTorch's word_language_model example.
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.head.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        if config.tied:
            self.head.weight = self.embedding.weight

    def num_params(self, non_embedding: bool = False) -> int:
        """Distinct parameters; with non_embedding, less the embedding and the head's own weight and bias."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            vocab_indexed = {id(p): p for p in (self.embedding.weight, self.head.weight, self.head.bias)}
            total -= sum(p.numel() for p in vocab_indexed.values())
        return total

    @property
    def max_context(self) -> None:
        return None  # the state carries everything seen

    def initial_state(self, batch_size: int) -> LSTMState:
        zeros = torch.zeros(self.config.n_layer, batch_size, self.config.hidden, device=self.head.weight.device,
                            dtype=self.head.weight.dtype)
        return zeros, zeros.clone()

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, state: LSTMState | None = None
    ) -> ModelOutput:
        """Logits [B, T, vocab], the mean cross-entropy against `targets` if given, and the state after the last
        token, which continues the sequence when passed back in (the caller detaches it for truncated BPTT); no
        state starts from zeros, as `initial_state` does."""
        x = self.dropout(self.embedding(idx))
        x, new_state = self.lstm(x, state)
        logits = self.head(self.dropout(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return ModelOutput(logits, loss, new_state)


def _lstm_weights(config: LSTMConfig) -> int:
    """The LSTM's matmul weights: four gates, each from the layer's input and from the hidden state."""
    inputs = [config.n_embd] + [config.hidden] * (config.n_layer - 1)
    return sum(4 * config.hidden * (n_in + config.hidden) for n_in in inputs)


def lstm_param_counts(config: LSTMConfig) -> ParamCounts:
    """The parameter counts of LSTMModel(config), in closed form, without building it."""
    lstm = _lstm_weights(config) + config.n_layer * 8 * config.hidden  # PyTorch keeps two bias vectors per layer
    embedding = config.vocab_size * config.n_embd
    head = config.vocab_size + (0 if config.tied else config.hidden * config.vocab_size)
    return ParamCounts(total=embedding + lstm + head, non_embedding=lstm)


def lstm_flops_per_token(config: LSTMConfig) -> float:
    """Training FLOPs (forward + backward) per token: 6·(Σ_l 4·hidden·(in_l + hidden) + hidden·vocab).

    That is 6 per weight of the LSTM's and the head's matmuls (2 forward, 4 backward); biases, gate
    nonlinearities and the embedding lookup are left out as negligible.
    """
    return float(6 * (_lstm_weights(config) + config.hidden * config.vocab_size))
