"""The scaling plot: loss against model size on log-log axes, measured points and each architecture's chosen fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps, rcParams
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, ScalarFormatter

from abcmusic.scaling.fit import ScalingFit, predict


def fit_label(architecture: str, fit: ScalingFit) -> str:
    """E.g. "gpt: α = 0.076 [0.061, 0.090] (pure)"; an offset fit also shows c, and a warning when c is near the
    smallest loss, because such an offset inflates α."""
    form = fit.chosen_fit
    label = f"{architecture}: α = {form.alpha:.3f} [{form.alpha_ci_low:.3f}, {form.alpha_ci_high:.3f}] ({fit.chosen}"
    if fit.chosen == "offset":
        label += f", c = {form.c:.3f}"
    if fit.offset_near_min_loss:
        label += ", offset near min loss"
    return label + ")"


def plot_scaling(fits: dict[str, ScalingFit], points: dict[str, list[tuple[float, float]]], path: Path,
                 parameter_label: str = "non-embedding parameters N") -> Path:
    """Write the PNG and return its path. Built on a bare Figure with the Agg canvas, so no pyplot state or global
    backend is touched."""
    figure = Figure(figsize=(7, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for index, architecture in enumerate(sorted(set(points) | set(fits))):
        color = colors[index % len(colors)]
        measured = np.asarray(points.get(architecture, []), dtype=float).reshape(-1, 2)
        if len(measured):
            axes.scatter(measured[:, 0], measured[:, 1], color=color, alpha=0.6, s=22, edgecolors="none",
                         label=None if architecture in fits else architecture)
        if architecture in fits and len(measured):
            sizes = np.geomspace(measured[:, 0].min(), measured[:, 0].max(), 200)
            axes.plot(sizes, predict(fits[architecture].chosen_fit, sizes), color=color,
                      label=fit_label(architecture, fits[architecture]))
    log_loss_axes(axes, parameter_label, "validation loss L")
    path = Path(path)
    figure.savefig(path, format="png", dpi=120)
    return path


def log_loss_axes(axes: Axes, x_label: str, y_label: str, title: str = "") -> None:
    """Log-log axes for losses against N, D or compute, with a grid and the legend if anything is labelled."""
    axes.set_xscale("log")
    axes.set_yscale("log")
    # Losses span well under a decade: plain numbers read better than 1.2x10^0.
    axes.yaxis.set_major_formatter(ScalarFormatter())
    axes.yaxis.set_minor_formatter(FormatStrFormatter("%.2f"))
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    if title:
        axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")


def plot_loss_curves(curves: dict[str, dict[str, list[tuple[float, float]]]], path: Path) -> Path:
    """Every trial's validation loss against tokens, one panel per architecture (`curves`: architecture -> trial
    label -> (tokens, loss) points, smallest model first), so a sweep's runs compare in one picture."""
    figure = Figure(figsize=(6 * max(1, len(curves)), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (architecture, trials) in enumerate(sorted(curves.items())):
        axes = figure.add_subplot(1, len(curves), index + 1)
        for rank, (label, points) in enumerate(trials.items()):
            measured = np.asarray(sorted(points), dtype=float).reshape(-1, 2)
            color = colormaps["viridis"](0.9 * rank / max(1, len(trials) - 1))  # smallest model dark, largest light
            axes.plot(measured[:, 0], measured[:, 1], marker=".", color=color, label=label)
        log_loss_axes(axes, "tokens", "validation loss", title=architecture)
    path = Path(path)
    figure.savefig(path, format="png", dpi=110)
    return path
