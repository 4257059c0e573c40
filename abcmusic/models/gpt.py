"""A decoder-only transformer language model in the nanoGPT mould, with closed-form parameter and FLOP counts.

Parameter counts follow the package convention (see abcmusic.models): `non_embedding` excludes the token and
position embeddings; the lm_head shares the token embedding's weight and has no bias, so nothing else is excluded.
For sampling, the model's state (see abcmusic.models) is a `KVCache`: the keys and values of the tokens already
seen, so that each new token costs one position's compute instead of a whole window's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from abcmusic.models import LanguageModel, ModelOutput, ParamCounts


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    context: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True  # biases in the Linears and LayerNorms

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer; got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1); got {self.dropout!r}")


class LayerKV(NamedTuple):
    keys: torch.Tensor  # [B, n_head, context, head_size], filled up to `start`
    values: torch.Tensor
    start: int  # the position of the first token of this call


class KVCache:
    """Every layer's keys and values of the positions seen so far, in buffers as long as the context."""

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (batch_size, config.n_head, config.context, config.n_embd // config.n_head)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0  # positions filled; the next token goes at this position

    def layer(self, i: int) -> LayerKV:
        return LayerKV(self.keys[i], self.values[i], self.length)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        dropout_p = self.dropout if self.training else 0.0
        if kv is not None:
            end = kv.start + T
            kv.keys[:, :, kv.start:end] = k
            kv.values[:, :, kv.start:end] = v
        if kv is None or kv.start == 0:  # nothing cached before these tokens: plain causal attention among them
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            # Query i sits at position start + i and sees every cached key and the new ones up to its own.
            mask = None if T == 1 else torch.ones(T, end, dtype=torch.bool, device=x.device).tril(kv.start)
            y = F.scaled_dot_product_attention(q, kv.keys[:, :, :end], kv.values[:, :, :end], attn_mask=mask,
                                               dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv)
        return x + self.mlp(self.ln_2(x))


class GPT(LanguageModel):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.context, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2: scale the projections into the residual stream so its variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Distinct parameters; with non_embedding, less the token and position embeddings."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return total

    @property
    def max_context(self) -> int:
        return self.config.context

    def initial_state(self, batch_size: int) -> KVCache:
        return KVCache(self.config, batch_size, self.lm_head.weight.device, self.lm_head.weight.dtype)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, state: KVCache | None = None
    ) -> ModelOutput:
        """Logits [B, T, vocab] for token ids [B, T], and the mean cross-entropy against `targets` if given.

        With a `state` (a KVCache), the tokens continue the ones cached (at positions state.length onwards),
        attend to them too, and are appended to the cache, which is returned as the output's state.
        """
        B, T = idx.shape
        start = 0 if state is None else state.length
        if start + T > self.config.context:
            raise ValueError(f"sequence length {start + T} exceeds the model's context of {self.config.context}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if state is None else state.layer(i))
        if state is not None:
            state.length += T
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return ModelOutput(logits, loss, state)


def gpt_param_counts(config: GPTConfig) -> ParamCounts:
    """The parameter counts of GPT(config), in closed form, without building it."""
    d, b = config.n_embd, int(config.bias)
    # qkv 3d²(+3d), proj d²(+d), MLP 8d²(+5d), two LayerNorms 2d(+2d).
    per_layer = 12 * d * d + 2 * d + b * 11 * d
    non_embedding = config.n_layer * per_layer + d + b * d  # + final LayerNorm
    embeddings = (config.vocab_size + config.context) * d
    return ParamCounts(total=non_embedding + embeddings, non_embedding=non_embedding)


def gpt_flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs (forward + backward) per token: 6·(N + d·vocab) + 12·n_layer·d·context.

    N is the non-embedding parameter count (each parameter costs 2 FLOPs forward and 4 backward per token);
    d·vocab adds the lm_head matmul, which N leaves out with the tied embedding but which is not free;
    12·n_layer·d·context is attention's QKᵀ and AV over a full context (PaLM, appendix B; nanoGPT's estimate_mfu).
    """
    non_embedding = gpt_param_counts(config).non_embedding
    head = config.n_embd * config.vocab_size
    attention = 12 * config.n_layer * config.n_embd * config.context
    return float(6 * (non_embedding + head) + attention)
