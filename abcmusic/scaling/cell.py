"""One cell of a scaling ladder: a model size trained to one token budget, and what it cost and reached."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Cells whose epochs exceed 1 by less than this saw each unique token once, up to rounding of the token counts.
EPOCH_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Cell:
    """One (N, D) point of a trial at the best learning rate for its size and budget. `loss` is the final validation
    loss over the whole split and `loss_se` its standard error (nan when unknown), reported but not used by the fits:
    every cell shares the split, and with it most of that error. `flops` is the training FLOPs of the cell (the
    model's per-token FLOPs times d) and `epochs` is d over the unique training tokens."""

    size: str
    n: float
    d: float
    loss: float
    loss_se: float
    flops: float
    epochs: float
    seed: int

    @property
    def repeated(self) -> bool:
        """Whether the cell saw some training tokens more than once."""
        return self.epochs > 1.0 + EPOCH_TOLERANCE

    @property
    def unique_tokens(self) -> float:
        """Distinct training tokens the cell saw: all of d up to one epoch, the whole training split beyond."""
        return self.d / max(self.epochs, 1.0)


def check_cells(cells: Sequence[Cell]) -> None:
    """Raise ValueError naming the first cell whose numbers cannot enter a log-log fit."""
    for cell in cells:
        for name in ("n", "d", "loss", "flops", "epochs"):
            value = getattr(cell, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"cell {cell.size} at D={cell.d:.4g}: {name} must be finite and positive, "
                                 f"got {value!r}")


def columns(cells: Sequence[Cell]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, loss) of the cells as arrays, the form the joint fit takes."""
    return (np.array([cell.n for cell in cells], dtype=float), np.array([cell.d for cell in cells], dtype=float),
            np.array([cell.loss for cell in cells], dtype=float))


def distinct(values: Sequence[float]) -> list[float]:
    """The sorted distinct values, where values within a relative 1e-9 are one: token budgets computed per size
    from steps and batch sizes can differ in the last bits."""
    levels: list[float] = []
    for value in sorted(values):
        if not levels or not math.isclose(value, levels[-1], rel_tol=1e-9):
            levels.append(value)
    return levels
