"""The training loop: a fixed token budget, AdamW, warm-up and cosine decay or warmup-stable-decay with cooldown
branches, clipping, mixed precision, evaluation.

Plain PyTorch: it takes a model (DDP-wrapped or not), token arrays and a `report` callback, and knows nothing of
Ray or MLflow, so it runs the same inside a Ray Train worker, in a benchmark, or on a GPU machine by itself.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from abcmusic.train.compilers import CompilerMissing, compile_refusal
from abcmusic.train.config import CellPlan, TrainConfig
from abcmusic.train.precision import Precision, autocast, tf32_mode
from abcmusic.train.throughput import synchronize

EVAL_SEED = 1234  # the same validation batches for every model of a sweep


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
             precision: Precision) -> float:
    was_training = model.training
    model.eval()
    losses = []
    with tf32_mode(precision):
        for batch_starts in starts:
            x, y = window_batch(stream, batch_starts, context)
            with autocast(device, precision):
                loss = model(x.to(device), y.to(device)).loss
            losses.append(loss.float())
    model.train(was_training)
    return float(torch.stack(losses).double().mean())


@dataclass(frozen=True)
class SplitLoss:
    """A model's loss over a whole split, cut into consecutive windows: the mean over every predicted token, and
    the standard error of that mean with windows as the independent units (tokens within a window are not)."""

    loss: float
    standard_error: float
    tokens: int
    windows: int


@torch.no_grad()
def evaluate_split(model: nn.Module, stream: np.ndarray, context: int, batch: int, device: torch.device,
                   precision: Precision) -> SplitLoss:
    """The loss on every token of `stream` that ends a full window of `context` tokens, the windows laid end to
    end from the start: no sampling, so two models are compared on exactly the same tokens. Under DDP every worker
    evaluates its share of the windows and all get the whole split's result."""
    starts = np.arange(0, len(stream) - context, context)
    if len(starts) == 0:
        raise ValueError(f"a split of {len(stream)} tokens is too short for context {context}")
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        starts = starts[torch.distributed.get_rank()::torch.distributed.get_world_size()]
    module = model.module if hasattr(model, "module") else model  # DDP's forward would sync buffers per call
    was_training = module.training
    module.eval()
    # Per window: the mean loss of its tokens; summed with their squares for the mean and its standard error.
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    with tf32_mode(precision):
        for first in range(0, len(starts), batch):
            x, y = window_batch(stream, starts[first:first + batch], context)
            with autocast(device, precision):
                logits = module(x.to(device)).logits
            token_losses = nn.functional.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(),
                                                       reduction="none")
            window_losses = token_losses.view(len(x), context).double().mean(dim=1)
            sums += torch.stack([window_losses.sum(), window_losses.square().sum(),
                                 torch.tensor(float(len(x)), dtype=torch.float64, device=device)])
    module.train(was_training)
    if distributed:
        torch.distributed.all_reduce(sums)
    total, total_squares, windows = sums.tolist()
    windows = int(windows)
    mean = total / windows
    variance = max(0.0, (total_squares - windows * mean * mean) / (windows - 1)) if windows > 1 else math.nan
    return SplitLoss(mean, math.sqrt(variance / windows), windows * context, windows)


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
# A cell's final evaluation: the model at the end of the cell's cooldown -> its metrics (keys under "cell/").
CellEvaluation = Callable[[nn.Module, CellPlan], dict[str, float]]


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
    evaluate_cell: CellEvaluation | None = None,
    report_cell: Report | None = None,
) -> dict[str, float]:
    """Train for the token budget; return the final metrics.

    `report(metrics, state)` is called by every worker with the same metrics: about 20 times with `state=None`
    for progress, and at each evaluation with the validation loss; at checkpoint steps `state` holds everything
    needed to resume (model, optimizer, step, sampler, cells done). The state holds the live tensors: the callback
    must save (or copy) it before returning.

    Each cell of the schedule (`config.cells()`) ends with `evaluate_cell(model, cell)` (by default the sampled
    validation loss as `cell/val_loss`). Under wsd a cell before the last is a branch: from the constant-rate
    run's state at its cooldown start, the rate decays over the cell's last steps; the cell is evaluated, the run's
    state restored, and `report_cell(cell metrics, state)` called with the state to resume from, which counts the
    cell as done: a resumed run never repeats a finished cell. The last cell's metrics join the final report.

    Besides the last report's metrics, it returns seconds spent training, evaluating and reporting, `tokens_trained`
    (all optimizer steps of this call, branches included), and `startup_seconds` from this call to the first step,
    or to the loop where no step is left (the first optimizer in a process imports torch._dynamo, about 1 s of CPU).
    """
    called = time.perf_counter()
    config.validate(world_size)
    micro = config.micro_batch(world_size)
    accumulation = config.batch_size // world_size // micro
    eval_windows = eval_starts(val_stream, config.eval_batches, micro, config.context)
    eval_at, checkpoint_at = config.report_steps()
    log_every = config.log_every_steps or max(1, config.steps // 20)
    cells = config.cells()

    if config.compile and (refusal := compile_refusal(device.type, f" on {socket.gethostname()}")):
        raise CompilerMissing(refusal)
    raw_model = model.module if hasattr(model, "module") else model
    forward = torch.compile(model) if config.compile else model
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    step = cells_done = 0
    if resume_state is not None:
        raw_model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        generator.set_state(resume_state["generator"][rank])
        step = int(resume_state["step"])
        cells_done = int(resume_state.get("cells_done", 0))
    # A run resumed from its last checkpoint has no step left to run: it ends with that checkpoint's metrics.
    metrics: dict[str, float] = dict(resume_state.get("metrics", {})) if resume_state is not None else {}

    def evaluate_cell_metrics(cell: CellPlan) -> dict[str, float]:
        nonlocal eval_seconds
        started = time.perf_counter()
        measured = (evaluate_cell(model, cell) if evaluate_cell is not None else
                    {"cell/val_loss": evaluate(model, val_stream, eval_windows, config.context, device,
                                               config.precision)})
        seconds = time.perf_counter() - started
        eval_seconds += seconds
        return {"cell/index": cell.index, "cell/tokens": cell.tokens, "cell/steps": cell.steps,
                "cell/cooldown_start_tokens": cell.cooldown_start * config.tokens_per_step,
                "cell/eval_seconds": seconds} | measured

    def optimizer_step(lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One step at `lr`: (summed micro-batch loss, gradient norm), still on the device."""
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
                loss = forward(x.to(device, non_blocking=True), y.to(device, non_blocking=True)).loss
            scaler.scale(loss / accumulation).backward()
            loss_sum += loss.detach().float()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss_sum, grad_norm

    def resume_point(at_step: int, metrics_now: dict[str, Any]) -> dict[str, Any]:
        return {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "step": at_step,
                "generator": _gather_generator_states(generator, world_size), "cells_done": cells_done,
                "metrics": {k: float(v) for k, v in metrics_now.items()}}

    def run_branch(cell: CellPlan) -> None:
        """The cell's cooldown from the current (constant-rate) state, its evaluation, and the state restored."""
        nonlocal train_seconds, tokens_trained, cells_done
        branch_started = time.perf_counter()
        saved = copy.deepcopy({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                               "generator": generator.get_state()})
        started = time.perf_counter()
        for branch_step in range(cell.cooldown_start, cell.steps):
            loss_sum, _ = optimizer_step(config.cooldown_lr(cell, branch_step))
        synchronize(device)
        cooldown_seconds = time.perf_counter() - started
        train_seconds += cooldown_seconds
        tokens_trained += (cell.steps - cell.cooldown_start) * config.tokens_per_step
        cell_metrics = ({"cell/train_loss": float(loss_sum) / accumulation, "cell/cooldown_seconds": cooldown_seconds}
                        | evaluate_cell_metrics(cell))
        raw_model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        cells_done = cell.index + 1
        cell_metrics["cell/seconds"] = time.perf_counter() - branch_started
        if report_cell is not None:
            report_cell(cell_metrics, resume_point(step, metrics))

    model.train()
    train_seconds = eval_seconds = report_seconds = 0.0
    tokens_trained = 0
    best_val_loss, evals_since_best, stop = float("inf"), 0, False
    eval_every = max(1, config.steps // (10 * max(1, config.checkpoints)))  # with early stopping: evaluate often
    pin = device.type == "cuda"  # a copy from pageable memory waits for the GPU; from pinned memory it does not
    startup_seconds = time.perf_counter() - called
    with tf32_mode(config.precision):
        while step < config.steps and not stop:
            if cells_done < len(cells) - 1 and step == cells[cells_done].cooldown_start:
                run_branch(cells[cells_done])
                continue
            started = time.perf_counter()
            lr = config.lr_at(step)
            loss_sum, grad_norm = optimizer_step(lr)
            step += 1
            tokens_trained += config.tokens_per_step
            evaluating = step in eval_at or bool(config.early_stopping_patience and step % eval_every == 0)
            reporting = evaluating or step in checkpoint_at or step % log_every == 0
            # The GPU runs ahead of Python between reports; waiting for it only before one keeps train_seconds
            # exact over every span between reports without stalling each step.
            if reporting:
                synchronize(device)
            train_seconds += time.perf_counter() - started
            if not reporting:
                continue

            metrics = {"step": step, "tokens_seen": step * config.tokens_per_step,
                       "train_loss": float(loss_sum) / accumulation, "lr": lr, "grad_norm": float(grad_norm),
                       "tokens_per_s": tokens_trained / max(train_seconds, 1e-9)}
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
            if step == config.steps or stop:
                # The run's end is its last cell (an early-stopped run's at the step it stopped).
                last = cells[-1] if not stop else dataclasses.replace(
                    cells[-1], steps=step, cooldown_start=min(step, cells[-1].cooldown_start),
                    tokens=step * config.tokens_per_step)
                metrics |= evaluate_cell_metrics(last)
                cells_done = len(cells)
            state = resume_point(step, metrics) if step in checkpoint_at else None
            if step < config.steps and not stop:
                # At the last step the timings are left to the returned metrics, which also count this last report.
                metrics |= {"train_seconds": train_seconds, "eval_seconds": eval_seconds,
                            "report_seconds": report_seconds}
            report_start = time.perf_counter()
            report(metrics, state)
            report_seconds += time.perf_counter() - report_start
    return metrics | {"train_seconds": train_seconds, "eval_seconds": eval_seconds, "report_seconds": report_seconds,
                      "startup_seconds": startup_seconds, "tokens_trained": tokens_trained}


def _gather_generator_states(generator: torch.Generator, world_size: int) -> list[torch.Tensor]:
    """Every worker's sampler state, so that any worker can resume any rank."""
    state = generator.get_state()
    if world_size == 1 or not torch.distributed.is_initialized():
        return [state]
    gathered = [torch.empty_like(state) for _ in range(world_size)]
    torch.distributed.all_gather_object(gathered, state)
    return gathered
