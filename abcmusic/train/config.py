"""The training loop's one config: the token budget, batch, optimizer, schedule, precision and evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from abcmusic.train.precision import PRECISIONS, Precision

Schedule = Literal["cosine", "wsd"]
SCHEDULES = ("cosine", "wsd")
CooldownShape = Literal["1-sqrt", "linear"]
COOLDOWN_SHAPES = ("1-sqrt", "linear")


@dataclass(frozen=True)
class CellPlan:
    """One (N, D) cell of a trial: the model after `steps` optimizer steps whose learning rate decays from
    `cooldown_start` on. Under `wsd` every cell but the last is a branch off the constant-rate run; the last is the
    run's own end, as is the only cell of a cosine run."""

    index: int
    steps: int
    cooldown_start: int
    tokens: int


@dataclass(frozen=True)
class TrainConfig:
    """Everything `train()` needs besides the model and the data. In a sweep, an experiment's `train:` block sets
    every field but the four of each trial's own (TRIAL_FIELDS)."""

    tokens: int  # the budget (the largest one under wsd): optimizer steps x batch_size x context
    context: int
    batch_size: int  # sequences per optimizer step, summed over all workers
    micro_batch_size: int | None = None  # sequences per forward pass on one worker; None: the worker's whole share
    lr: float = 1e-3
    min_lr_fraction: float = 0.1
    warmup_fraction: float = 0.05  # of the (largest) budget
    # cosine: one cell at the end of a cosine decay. wsd (warmup-stable-decay, Hägele et al. 2024): a constant rate
    # after warm-up, and for each of `budgets` a cooldown branch over its last `cooldown_fraction`.
    schedule: Schedule = "cosine"
    budgets: tuple[float, ...] = ()  # wsd: fractions of `tokens` (<= 1) or token counts (> 1); `tokens` is always one
    cooldown_fraction: float = 0.2
    # 1-sqrt matches a cosine run at the same budget more closely than linear does (Hägele et al., fig. 5)
    cooldown_shape: CooldownShape = "1-sqrt"
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
        self._validate_schedule()

    def _validate_schedule(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.cooldown_shape not in COOLDOWN_SHAPES:
            raise ValueError(f"cooldown_shape must be one of {', '.join(COOLDOWN_SHAPES)}; got {self.cooldown_shape!r}")
        if self.schedule == "cosine":
            if self.budgets:
                raise ValueError("budgets need schedule: wsd (a cosine run has one budget, its tokens)")
            return
        if not 0 < self.cooldown_fraction < 1:
            raise ValueError(f"cooldown_fraction must be between 0 and 1; got {self.cooldown_fraction}")
        if self.early_stopping_patience:
            raise ValueError("early stopping needs schedule: cosine (a wsd run's cells have fixed budgets)")
        for budget in self.budgets:
            if not 0 < budget <= self.tokens:
                raise ValueError(f"budget {budget:g} must be a fraction in (0, 1] or a token count up to tokens "
                                 f"({self.tokens:,})")
        cells = self.cells()
        if cells[0].cooldown_start < self.warmup_steps or cells[0].cooldown_start == cells[0].steps:
            raise ValueError(f"the smallest budget ({cells[0].tokens:,} tokens, {cells[0].steps} steps) leaves no "
                             f"room for warm-up ({self.warmup_steps} steps) and a cooldown")

    def micro_batch(self, world_size: int) -> int:
        """Sequences per forward pass on each of `world_size` workers."""
        return self.micro_batch_size or self.batch_size // world_size

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    @property
    def steps(self) -> int:
        return self.tokens // self.tokens_per_step

    @property
    def warmup_steps(self) -> int:
        return max(1, round(self.warmup_fraction * self.steps))

    def cells(self) -> tuple[CellPlan, ...]:
        """The trial's cells, smallest budget first; the last one is the end of the run."""
        if self.schedule == "cosine":
            return (CellPlan(0, self.steps, self.steps, self.steps * self.tokens_per_step),)
        budgets = {round(b * self.tokens) if b <= 1 else int(b) for b in self.budgets} | {self.tokens}
        steps = sorted({max(1, tokens // self.tokens_per_step) for tokens in budgets})
        return tuple(CellPlan(index, cell_steps, round((1 - self.cooldown_fraction) * cell_steps),
                              cell_steps * self.tokens_per_step) for index, cell_steps in enumerate(steps))

    @property
    def trained_tokens(self) -> int:
        """Tokens of every optimizer step the run takes: its own steps and every cooldown branch's."""
        branches = sum(cell.steps - cell.cooldown_start for cell in self.cells()[:-1])
        return (self.steps + branches) * self.tokens_per_step

    def lr_at(self, step: int) -> float:
        """The run's own rate at `step`: linear warm-up to `lr`, then under cosine a cosine decay to
        `min_lr_fraction * lr` at the last step; under wsd constant until the last cell's cooldown."""
        warmup = self.warmup_steps
        if step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == "wsd":
            return self.cooldown_lr(self.cells()[-1], step)
        progress = (step - warmup) / max(1, self.steps - warmup)
        min_lr = self.min_lr_fraction * self.lr
        return min_lr + 0.5 * (self.lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))

    def cooldown_lr(self, cell: CellPlan, step: int) -> float:
        """A wsd cell's rate after warm-up: `lr` before its cooldown, then decaying to `min_lr_fraction * lr` at its
        last step."""
        if step < cell.cooldown_start:
            return self.lr
        progress = min(1.0, (step + 1 - cell.cooldown_start) / (cell.steps - cell.cooldown_start))
        remaining = 1 - math.sqrt(progress) if self.cooldown_shape == "1-sqrt" else 1 - progress
        min_lr = self.min_lr_fraction * self.lr
        return min_lr + (self.lr - min_lr) * remaining

    def report_steps(self) -> tuple[set[int], set[int]]:
        """(steps after which to evaluate: log-spaced, steps after which to checkpoint: evenly spaced); both end at
        the last step; steps count from 1."""
        steps = self.steps
        log_spaced = {int(round(s)) for s in np.geomspace(max(1, steps / 100), steps, self.eval_points)}
        even = {max(1, round(steps * (i + 1) / self.checkpoints)) for i in range(self.checkpoints)}
        return log_spaced | {steps}, even | {steps}


TRIAL_FIELDS = ("lr", "precision", "compile", "seed")  # set per trial of a sweep, not by its `train:` block
