"""The training loop: a fixed token budget, AdamW, warm-up and cosine decay, clipping, mixed precision, evaluation.

Plain PyTorch: it takes a model (DDP-wrapped or not), token arrays and a `report` callback, and knows nothing of
Ray or MLflow, so it runs the same inside a Ray Train worker, in a benchmark, or on a GPU machine by itself.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from abcmusic.train.compilers import CompilerMissing, compile_refusal
from abcmusic.train.precision import PRECISIONS, autocast, tf32_mode
from abcmusic.train.throughput import synchronize

EVAL_SEED = 1234  # the same validation batches for every model of a sweep


@dataclass(frozen=True)
class TrainConfig:
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
    precision: str = "fp32"
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
        micro = self.micro_batch_size or self.batch_size // world_size
        if (self.batch_size // world_size) % micro:
            raise ValueError(f"per-worker batch {self.batch_size // world_size} is not a multiple of "
                             f"micro_batch_size {micro}")
        if self.tokens < self.tokens_per_step:
            raise ValueError(f"token budget {self.tokens:,} is smaller than one batch "
                             f"({self.batch_size} x {self.context} = {self.tokens_per_step:,} tokens)")

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


def window_batch(stream: np.ndarray, starts: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for windows of `context` tokens starting at `starts`."""
    windows = torch.from_numpy(stream[starts[:, None] + np.arange(context + 1)].astype(np.int64))
    return windows[:, :-1], windows[:, 1:]


def random_starts(stream: np.ndarray, count: int, context: int, generator: torch.Generator) -> np.ndarray:
    if len(stream) <= context + 1:
        raise ValueError(f"a split of {len(stream)} tokens is too short for context {context}")
    return torch.randint(0, len(stream) - context - 1, (count,), generator=generator).numpy()


def eval_starts(stream: np.ndarray, n_batches: int, batch: int, context: int) -> np.ndarray:
    """The fixed, seeded evaluation windows: the same for every model, run and worker."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    return random_starts(stream, n_batches * batch, context, generator).reshape(n_batches, batch)


@torch.no_grad()
def evaluate(model: nn.Module, stream: np.ndarray, starts: np.ndarray, context: int, device: torch.device,
             precision: str) -> float:
    was_training = model.training
    model.eval()
    losses = []
    with tf32_mode(precision):
        for batch_starts in starts:
            x, y = window_batch(stream, batch_starts, context)
            with autocast(device, precision):
                _, loss, *_ = model(x.to(device), y.to(device))
            losses.append(loss.float())
    model.train(was_training)
    return float(torch.stack(losses).double().mean())


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, LayerNorm gains or LSTM bias vectors); on a GPU,
    the fused kernel (one launch for all parameters instead of several per tensor)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(config.beta1, config.beta2), fused=all(p.is_cuda for p in params) or None,
    )


Report = Callable[[dict[str, Any], dict[str, Any] | None], None]


def train(
    model: nn.Module,
    train_stream: np.ndarray,
    val_stream: np.ndarray,
    config: TrainConfig,
    report: Report,
    *,
    device: torch.device = torch.device("cpu"),
    rank: int = 0,
    world_size: int = 1,
    resume_state: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Train for the token budget; return the final metrics.

    `report(metrics, state)` is called by every worker with the same metrics: about 20 times with `state=None`
    for progress, and at each evaluation with the validation loss; at checkpoint steps `state` holds everything
    needed to resume (model, optimizer, step, sampler). The state holds the live tensors: the callback must save
    (or copy) it before returning.

    Besides the last report's metrics, it returns seconds spent training, evaluating and reporting, and
    `startup_seconds` from this call to the first step, or to the loop where no step is left (the first
    optimizer in a process imports torch._dynamo, about 1 s of CPU).
    """
    called = time.perf_counter()
    config.validate(world_size)
    per_worker = config.batch_size // world_size
    micro = config.micro_batch_size or per_worker
    accumulation = per_worker // micro
    eval_windows = eval_starts(val_stream, config.eval_batches, micro, config.context)
    eval_at, checkpoint_at = config.report_steps()
    log_every = config.log_every_steps or max(1, config.steps // 20)

    if config.compile and (refusal := compile_refusal(device.type, f" on {socket.gethostname()}")):
        raise CompilerMissing(refusal)
    raw_model = model.module if hasattr(model, "module") else model
    forward = torch.compile(model) if config.compile else model
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    step = 0
    if resume_state is not None:
        raw_model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        generator.set_state(resume_state["generator"][rank])
        step = int(resume_state["step"])
    start_step = step
    # A run resumed from its last checkpoint has no step left to run: it ends with that checkpoint's metrics.
    metrics: dict[str, float] = dict(resume_state.get("metrics", {})) if resume_state is not None else {}

    model.train()
    train_seconds = eval_seconds = report_seconds = 0.0
    best_val_loss, evals_since_best, stop = float("inf"), 0, False
    eval_every = max(1, config.steps // (10 * max(1, config.checkpoints)))  # with early stopping: evaluate often
    pin = device.type == "cuda"  # a copy from pageable memory waits for the GPU; from pinned memory it does not
    startup_seconds = time.perf_counter() - called
    with tf32_mode(config.precision):
        while step < config.steps and not stop:
            started = time.perf_counter()
            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro_step in range(accumulation):
                x, y = window_batch(train_stream, random_starts(train_stream, micro, config.context, generator),
                                    config.context)
                if pin:
                    x, y = x.pin_memory(), y.pin_memory()
                sync = micro_step == accumulation - 1 or not hasattr(model, "no_sync")
                with contextlib.nullcontext() if sync else model.no_sync(), autocast(device, config.precision):
                    _, loss, *_ = forward(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                scaler.scale(loss / accumulation).backward()
                loss_sum += loss.detach().float()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            evaluating = step in eval_at or bool(config.early_stopping_patience and step % eval_every == 0)
            reporting = evaluating or step in checkpoint_at or step % log_every == 0
            # The GPU runs ahead of Python between reports; waiting for it only before one keeps train_seconds
            # exact over every span between reports without stalling each step.
            if reporting:
                synchronize(device)
            train_seconds += time.perf_counter() - started
            if not reporting:
                continue

            tokens_seen = step * config.tokens_per_step
            tokens_this_run = (step - start_step) * config.tokens_per_step
            metrics = {"step": step, "tokens_seen": tokens_seen, "train_loss": float(loss_sum) / accumulation,
                       "lr": lr, "grad_norm": float(grad_norm),
                       "tokens_per_s": tokens_this_run / max(train_seconds, 1e-9)}
            state = None
            if evaluating:
                eval_start = time.perf_counter()
                metrics["val_loss"] = evaluate(model, val_stream, eval_windows, config.context, device,
                                               config.precision)
                eval_seconds += time.perf_counter() - eval_start
                if metrics["val_loss"] < best_val_loss:
                    best_val_loss, evals_since_best = metrics["val_loss"], 0
                else:
                    evals_since_best += 1
                if config.early_stopping_patience and evals_since_best >= config.early_stopping_patience:
                    metrics["early_stopped"] = 1
                    checkpoint_at = checkpoint_at | {step}
                    stop = True
            if step in checkpoint_at:
                state = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                         "generator": _gather_generator_states(generator, world_size),
                         "metrics": {k: float(v) for k, v in metrics.items()}}
            if step < config.steps and not stop:
                # At the last step the timings are left to the returned metrics, which also count this last report.
                metrics |= {"train_seconds": train_seconds, "eval_seconds": eval_seconds,
                            "report_seconds": report_seconds}
            report_start = time.perf_counter()
            report(metrics, state)
            report_seconds += time.perf_counter() - report_start
    return metrics | {"train_seconds": train_seconds, "eval_seconds": eval_seconds, "report_seconds": report_seconds,
                      "startup_seconds": startup_seconds}


def _gather_generator_states(generator: torch.Generator, world_size: int) -> list[torch.Tensor]:
    """Every worker's sampler state, so that any worker can resume any rank."""
    state = generator.get_state()
    if world_size == 1 or not torch.distributed.is_initialized():
        return [state]
    gathered = [torch.empty_like(state) for _ in range(world_size)]
    torch.distributed.all_gather_object(gathered, state)
    return gathered
