"""Plots of one architecture's ladder: loss against N per budget, loss against D per size, the compute frontier,
and the held-out predictions against what the cells reached. Each is a bare Figure with the Agg canvas, so no
pyplot state or global backend is touched; multi-epoch cells are drawn hollow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from abcmusic.scaling.cell import Cell, distinct
from abcmusic.scaling.joint import compute_optimal, predict_loss
from abcmusic.scaling.ladder import ArchitectureLaw
from abcmusic.scaling.plot import log_loss_axes
from abcmusic.scaling.prediction import PREDICTION_PERCENTILES

CURVE_POINTS = 200
HELD_OUT_MARKERS = {"largest N": "o", "largest D": "s"}


def plot_loss_against_n(law: ArchitectureLaw, cells: Sequence[Cell], path: Path, title: str = "") -> Path:
    """The cells' loss against N, one colour per budget D, with the fitted surface's L(N) at each D."""
    figure, (axes,) = _figure(1)
    budgets = distinct([cell.d for cell in cells])
    sizes = np.geomspace(min(cell.n for cell in cells), max(cell.n for cell in cells), CURVE_POINTS)
    for color, d in zip(_colors(len(budgets)), budgets):
        at_budget = [cell for cell in cells if math.isclose(cell.d, d, rel_tol=1e-9)]
        _scatter_cells(axes, [cell.n for cell in at_budget], at_budget, color)
        axes.plot(sizes, predict_loss(law.fit.params, sizes, d), color=color, label=f"D = {d:.3g}")
    _log_loss_axes(axes, "parameters N", title or "loss against N at each budget, with the fitted L(N, D)")
    return _save(figure, path)


def plot_loss_against_d(law: ArchitectureLaw, cells: Sequence[Cell], path: Path, title: str = "") -> Path:
    """The cells' loss against D, one line per size, with the fitted surface's L(D) at each size."""
    figure, (axes,) = _figure(1)
    tokens = np.geomspace(min(cell.d for cell in cells), max(cell.d for cell in cells), CURVE_POINTS)
    for color, (size, n) in zip(_colors(len(_sizes(cells))), _sizes(cells)):
        of_size = [cell for cell in cells if cell.size == size]
        _scatter_cells(axes, [cell.d for cell in of_size], of_size, color)
        axes.plot(tokens, predict_loss(law.fit.params, n, tokens), color=color, label=f"{size} (N = {n:.3g})")
    _log_loss_axes(axes, "training tokens D", title or "loss against D for each size, with the fitted L(N, D)")
    return _save(figure, path)


def plot_frontier(law: ArchitectureLaw, cells: Sequence[Cell], path: Path, title: str = "") -> Path:
    """Left: every cell in the (C, L) plane by size, and the IsoFLOP minima. Right: N_opt(C) from the surface with
    its bootstrap band, and the IsoFLOP minima with their fitted power law."""
    figure, (loss_axes, size_axes) = _figure(2, width=12)
    for color, (size, _n) in zip(_colors(len(_sizes(cells))), _sizes(cells)):
        of_size = sorted((cell for cell in cells if cell.size == size), key=lambda cell: cell.flops)
        loss_axes.plot([cell.flops for cell in of_size], [cell.loss for cell in of_size], color=color, alpha=0.5)
        _scatter_cells(loss_axes, [cell.flops for cell in of_size], of_size, color, label=size)
    minima = law.isoflop.minima
    if minima:
        loss_axes.scatter([p.flop for p in minima], [p.loss_min for p in minima], marker="*", s=120, color="black",
                          zorder=3, label="IsoFLOP minima")
    _log_loss_axes(loss_axes, "training FLOPs C", "cells in compute and loss")

    frontier = law.frontier
    flops = np.geomspace(min(cell.flops for cell in cells), max(cell.flops for cell in cells), CURVE_POINTS)
    size_axes.plot(flops, frontier.n_opt(flops), color="C0",
                   label=f"surface: N_opt ∝ C^{frontier.n_exponent.estimate:.3f}")
    band = _n_opt_band(law, flops)
    if band is not None:
        size_axes.fill_between(flops, *band, color="C0", alpha=0.2, label="surface 95% bootstrap band")
    if minima:
        size_axes.scatter([p.flop for p in minima], [p.n_opt for p in minima], marker="*", s=120, color="black",
                          zorder=3, label="IsoFLOP minima")
    if math.isfinite(law.isoflop.exponent) and len(minima) >= 2:
        anchor_flop, anchor_n = _geometric_mean([p.flop for p in minima]), _geometric_mean([p.n_opt for p in minima])
        size_axes.plot(flops, anchor_n * (flops / anchor_flop) ** law.isoflop.exponent, color="black",
                       linestyle="--", label=f"IsoFLOP: N_opt ∝ C^{law.isoflop.exponent:.3f}")
    for _size, n in _sizes(cells):
        size_axes.axhline(n, color="grey", linewidth=0.5, alpha=0.5)
    size_axes.set_xscale("log")
    size_axes.set_yscale("log")
    size_axes.set_xlabel(f"training FLOPs C (= {frontier.flops_per_parameter_token:.3g}·N·D)")
    size_axes.set_ylabel("loss-optimal parameters N_opt (grey: the sizes)")
    size_axes.set_title("compute-optimal size")
    size_axes.grid(True, which="both", alpha=0.3)
    size_axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_held_out(law: ArchitectureLaw, path: Path, title: str = "") -> Path:
    """Left: predicted against actual loss of the held-out cells with their 95% prediction intervals, and y = x.
    Right: the same as errors in percent of the actual loss, where misses of a fraction of a percent show."""
    figure, (loss_axes, error_axes) = _figure(2, width=12)
    values = []
    for test in law.held_out:
        if not test.cells:
            continue
        actual = np.array([cell.actual for cell in test.cells])
        predicted = np.array([cell.predicted for cell in test.cells])
        marker = HELD_OUT_MARKERS.get(test.name, "o")
        if test.has_intervals:
            low = np.array([cell.interval_low for cell in test.cells])
            high = np.array([cell.interval_high for cell in test.cells])
            label = f"{test.name} held out: {test.n_inside} of {len(test.cells)} inside"
            loss_error = [predicted - low, high - predicted]
            values += [*low, *high]
        else:
            label, loss_error = f"{test.name} held out: no prediction intervals", None
        loss_axes.errorbar(actual, predicted, yerr=loss_error, fmt=marker, capsize=3, label=label)
        error_axes.errorbar(actual, (predicted - actual) / actual * 100.0,
                            yerr=None if loss_error is None else [error / actual * 100.0 for error in loss_error],
                            fmt=marker, capsize=3, label=label)
        values += [*actual, *predicted]
    if values:
        low, high = min(values), max(values)
        line = np.array([low, high])
        loss_axes.plot(line, line, color="grey", linestyle="--", label="predicted = actual")
        error_axes.axhline(0.0, color="grey", linestyle="--")
        loss_axes.legend(fontsize="small")
        error_axes.legend(fontsize="small")
    else:
        loss_axes.text(0.5, 0.5, "no held-out test could run", ha="center", va="center",
                       transform=loss_axes.transAxes)
    loss_axes.set_xlabel("actual loss")
    loss_axes.set_ylabel("predicted loss (95% prediction interval)")
    error_axes.set_xlabel("actual loss")
    error_axes.set_ylabel("(predicted − actual) / actual, %")
    for axes in (loss_axes, error_axes):
        axes.grid(True, alpha=0.3)
    figure.suptitle(title or "the law refitted without the held-out cells, predicting them")
    return _save(figure, path)


def _figure(columns: int, width: float = 7.0) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width, 5), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(1, columns, index + 1) for index in range(columns)]


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    figure.savefig(path, format="png", dpi=120)
    return path


def _colors(count: int) -> list:
    return [colormaps["viridis"](value) for value in np.linspace(0.0, 0.9, max(count, 1))]


def _sizes(cells: Sequence[Cell]) -> list[tuple[str, float]]:
    """(size, N) of each size, smallest first."""
    return sorted({(cell.size, cell.n) for cell in cells}, key=lambda size: size[1])


def _scatter_cells(axes: Axes, x: Sequence[float], cells: Sequence[Cell], color, label: str | None = None) -> None:
    repeated = np.array([cell.repeated for cell in cells], dtype=bool)
    x, loss = np.asarray(x, dtype=float), np.array([cell.loss for cell in cells])
    axes.scatter(x[~repeated], loss[~repeated], color=color, s=24, zorder=2, label=label)
    if repeated.any():
        axes.scatter(x[repeated], loss[repeated], facecolors="none", edgecolors=[color], s=24, zorder=2)


def _log_loss_axes(axes: Axes, x_label: str, title: str) -> None:
    log_loss_axes(axes, x_label, "validation loss L (hollow: more than one epoch)", title)


def _n_opt_band(law: ArchitectureLaw, flops: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The percentile band of N_opt(C) over the fit's bootstrap solutions, at C = k·N·D."""
    scaled = 6.0 * flops / law.frontier.flops_per_parameter_token
    # A degenerate solution's N_opt overflows or is undefined; those curves are left out below.
    with np.errstate(all="ignore"):
        curves = [compute_optimal(params).n_opt(scaled) for params in law.fit.bootstrap_params]
    curves = [curve for curve in curves if np.all(np.isfinite(curve))]
    if len(curves) < 2:
        return None
    low, high = np.percentile(np.array(curves), PREDICTION_PERCENTILES, axis=0)
    return low, high


def _geometric_mean(values: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))
