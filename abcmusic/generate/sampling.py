"""Sampling token sequences from a language model, carrying its state (a GPT's key/value cache, an LSTM's (h, c)).

A sample is a prompt followed by new tokens drawn one at a time from softmax(logits / temperature), restricted to
the `top_k` most likely tokens when set, until the stop token (the tune separator) or `max_new_tokens`.

Window policy. A model with a limited context (a GPT: `max_context` is its `context`) sees at most `context` tokens,
and a GPT's positions are absolute, so its cache cannot slide one token at a time. Instead the visible window starts
at the beginning of the sequence and grows; when the next token's window would hold more than `context` tokens, it
restarts from the last `max(1, context // 2)` tokens (the prompt included: a prompt longer than the context is cut
the same way). With the cache, a restart refills it from those tokens in one forward pass; each later token is one
position. So a restart costs about as much as `context // 2` single-token steps, once every
`context - context // 2 + 1` tokens: the cost stays linear. Without the cache (`use_cache=False`), every step runs
the whole visible window from scratch: the same policy, the same logits up to floating-point rounding, hence the
same tokens; it is the reference and the benchmark's baseline. A model without a limit (an LSTM) sees the whole
sequence: with the cache it carries its state and runs one token a step, without it runs the whole prefix every
step.

Prompts of the same length are sampled together as one batch (at most `batch_size` rows), e.g. unconditional
samples all starting at [separator]; rows that have stopped keep running until every row has stopped or the
limit is reached, and their extra tokens are dropped. One torch.Generator seeded with `seed` drives the whole call,
so the same call gives the same samples; a row's tokens do depend on what else is in its batch.

Lead-ins. Training cuts random windows from the stream of tunes, so the model only ever sees a tune begin after
the end of another one, and almost never sees the separator as the first token of a window. Started cold at
[separator], the demo's best LSTM gave the `X` that begins every tune a probability of 0.38 (0.997 after a tune
ending). `lead_ins` gives each sample such an ending: a tune the model writes itself from [separator], kept only
as its last few tokens up to and including the separator it closes with, and never part of the sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from abcmusic.models import LanguageModel

# (tokens [B, capacity], length) -> logits [B, vocab] of the token after tokens[:, :length]
NextLogits = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0
    use_cache: bool = True  # False: recompute the visible window each step (the reference, and the baseline)
    batch_size: int = 64  # at most this many rows sampled together

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ValueError(f"temperature must be a number above 0; got {self.temperature!r}")
        for name in ("max_new_tokens", "batch_size") + (("top_k",) if self.top_k is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1; got {value!r}")


@dataclass(frozen=True)
class Sample:
    prompt_ids: tuple[int, ...]
    new_ids: tuple[int, ...]  # generated tokens, excluding the stop token
    truncated: bool  # hit max_new_tokens without producing the stop token

    @property
    def drawn_tokens(self) -> int:
        """Tokens the sampler drew for this sample: the new ones, and the stop token when it came."""
        return len(self.new_ids) + (not self.truncated)


def window_start(start: int, length: int, context: int) -> int:
    """Where a model's visible window begins for a sequence of `length` tokens, given where it began before."""
    if length - start <= context:
        return start
    return length - max(1, context // 2)


def sample(
    model: LanguageModel,
    prompts: Sequence[Sequence[int]],
    stop_id: int | None,
    config: SamplingConfig,
    device: torch.device | str = "cpu",
) -> list[Sample]:
    """One sample per prompt, in the prompts' order; `stop_id` None never stops early (for benchmarks).

    The model is moved to `device` and left there; its training mode is restored afterwards. On a CPU, a step is
    too small to share between threads: call torch.set_num_threads(1) first, above all on a busy machine.
    """
    if not isinstance(model, LanguageModel):
        raise TypeError(f"can only sample from a LanguageModel (abcmusic.models), not {type(model).__name__}")
    vocab_size = model.config.vocab_size
    if stop_id is not None and not 0 <= stop_id < vocab_size:
        raise ValueError(f"stop id {stop_id} is outside the model's vocabulary of {vocab_size} tokens")
    prompts = [tuple(int(token) for token in prompt) for prompt in prompts]
    for prompt in prompts:
        if not prompt:
            raise ValueError("every prompt needs at least one token (unconditional samples start at the separator)")
        if not all(0 <= token < vocab_size for token in prompt):
            raise ValueError(f"prompt token outside the model's vocabulary of {vocab_size} tokens")

    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    by_length: dict[int, list[int]] = {}  # prompt length -> prompt indices, in first-seen order
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    samples: list[Sample | None] = [None] * len(prompts)
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            for indices in by_length.values():
                for first in range(0, len(indices), config.batch_size):
                    batch = indices[first:first + config.batch_size]
                    prompt_ids = torch.tensor([prompts[i] for i in batch], dtype=torch.long, device=device)
                    new_ids = _sample_batch(model, prompt_ids, stop_id, config, generator)
                    for i, row in zip(batch, new_ids.tolist()):
                        samples[i] = _to_sample(prompts[i], row, stop_id)
    finally:
        model.train(was_training)
    return samples


def lead_ins(
    model: LanguageModel,
    count: int,
    separator_id: int,
    config: SamplingConfig,
    keep: int,
    device: torch.device | str = "cpu",
) -> tuple[list[tuple[int, ...]], int]:
    """`count` contexts that each end a tune the model wrote itself: the last `keep` tokens of [separator] + tune
    + [separator]; and how many tokens were drawn for them. A tune that reaches `config.max_new_tokens` without the
    separator is closed with one. Drawn with seed `config.seed + 1`, so they do not replay the random numbers of
    the samples that follow them."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
        raise ValueError(f"a lead-in keeps at least 2 tokens (a tune's last token and the separator); got {keep!r}")
    drawn = sample(model, [(separator_id,)] * count, separator_id, replace(config, seed=config.seed + 1), device)
    contexts = [((separator_id,) + one.new_ids + (separator_id,))[-keep:] for one in drawn]
    return contexts, sum(one.drawn_tokens for one in drawn)


def _to_sample(prompt: tuple[int, ...], row: list[int], stop_id: int | None) -> Sample:
    if stop_id is not None and stop_id in row:
        return Sample(prompt, tuple(row[:row.index(stop_id)]), truncated=False)
    return Sample(prompt, tuple(row), truncated=True)


def _sample_batch(
    model: LanguageModel, prompt_ids: torch.Tensor, stop_id: int | None, config: SamplingConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """New tokens [B, steps] after prompts [B, n], until every row has drawn `stop_id` or the limit."""
    batch_size, prompt_length = prompt_ids.shape
    tokens = torch.empty(batch_size, prompt_length + config.max_new_tokens, dtype=torch.long,
                         device=prompt_ids.device)
    tokens[:, :prompt_length] = prompt_ids
    next_logits = _next_logits_function(model, config.use_cache, batch_size)
    stopped = torch.zeros(batch_size, dtype=torch.bool, device=prompt_ids.device)
    length = prompt_length
    while length < tokens.size(1):
        next_ids = _draw(next_logits(tokens, length), config, generator)
        tokens[:, length] = next_ids
        length += 1
        if stop_id is not None:
            stopped |= next_ids == stop_id
            if stopped.all():
                break
    return tokens[:, prompt_length:length]


def _draw(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator) -> torch.Tensor:
    logits = logits.float() / config.temperature
    if config.top_k is not None and config.top_k < logits.size(-1):
        kth_largest = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


def _next_logits_function(model: LanguageModel, use_cache: bool, batch_size: int) -> NextLogits:
    """A function giving the next token's logits, called once per step with the sequence one token longer.

    The visible window is tokens[:, start:length]; with the cache, the state has seen tokens[:, start:fed] and
    the model runs only the rest; without it, `fed` stays at `start`. When the window restarts, so does the state.
    """
    context = model.max_context
    start = fed = 0
    state = model.initial_state(batch_size) if use_cache else None

    def next_logits(tokens: torch.Tensor, length: int) -> torch.Tensor:
        nonlocal start, fed, state
        restart = start if context is None else window_start(start, length, context)
        if restart != start:
            start = fed = restart
            state = model.initial_state(batch_size) if use_cache else None
        output = model(tokens[:, fed:length], state=state)
        if use_cache:
            state, fed = output.state, length
        return output.logits[:, -1]
    return next_logits
