"""The training loop's one config: the token budget, batch, optimizer, schedule, precision and evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from abcmusic.train.precision import PRECISIONS, Precision


@dataclass(frozen=True)
class TrainConfig:
    """Everything `train()` needs besides the model and the data. In a sweep, an experiment's `train:` block sets
    every field but the four of each trial's own (TRIAL_FIELDS)."""

    tokens: int  # the budget: optimizer steps x batch_size x context
    context: int
    batch_size: int  # sequences per optimizer step, summed over all workers
    micro_batch_size: int | None = None  # sequences per forward pass on one worker; None: the worker's whole share
    lr: float = 1e-3
    min_lr_fraction: float = 0.1
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    precision: Precision = "fp32"
    eval_points: int = 8  # validation evaluations at log-spaced token counts, the last at the end
    checkpoints: int = 10  # evenly spaced checkpoints; the last, at the end, also has the final validation loss
    eval_batches: int = 8
    log_every_steps: int = 0  # progress reports between evaluations; 0: about 20 per trial
    early_stopping_patience: int = 0  # stop after this many evaluations without a new best val loss; 0: never
    compile: bool = False  # torch.compile the training forward and backward (evaluation runs eagerly)
    seed: int = 0

    def validate(self, world_size: int = 1) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false; got {self.compile!r}")
        if min(self.context, self.batch_size, self.eval_batches, self.eval_points) <= 0 or self.lr <= 0:
            raise ValueError("context, batch_size, eval_batches, eval_points and lr must be positive")
        if self.batch_size % world_size:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by {world_size} workers")
        micro = self.micro_batch(world_size)
        if (self.batch_size // world_size) % micro:
            raise ValueError(f"per-worker batch {self.batch_size // world_size} is not a multiple of "
                             f"micro_batch_size {micro}")
        if self.tokens < self.tokens_per_step:
            raise ValueError(f"token budget {self.tokens:,} is smaller than one batch "
                             f"({self.batch_size} x {self.context} = {self.tokens_per_step:,} tokens)")

    def micro_batch(self, world_size: int) -> int:
        """Sequences per forward pass on each of `world_size` workers."""
        return self.micro_batch_size or self.batch_size // world_size

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    @property
    def steps(self) -> int:
        return self.tokens // self.tokens_per_step

    def lr_at(self, step: int) -> float:
        """Linear warm-up to `lr`, then cosine decay to `min_lr_fraction * lr` at the last step."""
        warmup = max(1, round(self.warmup_fraction * self.steps))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        min_lr = self.min_lr_fraction * self.lr
        return min_lr + 0.5 * (self.lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))

    def report_steps(self) -> tuple[set[int], set[int]]:
        """(steps after which to evaluate: log-spaced, steps after which to checkpoint: evenly spaced); both end at
        the last step; steps count from 1."""
        steps = self.steps
        log_spaced = {int(round(s)) for s in np.geomspace(max(1, steps / 100), steps, self.eval_points)}
        even = {max(1, round(steps * (i + 1) / self.checkpoints)) for i in range(self.checkpoints)}
        return log_spaced | {steps}, even | {steps}


TRIAL_FIELDS = ("lr", "precision", "compile", "seed")  # set per trial of a sweep, not by its `train:` block
