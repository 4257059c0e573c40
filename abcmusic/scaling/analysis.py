"""The analysis of a finished (or partly finished) sweep, from its MLflow runs alone: per architecture, the cells
at each size and budget's best learning rate, the laws fitted to them, their plots, and the sweep's summary run."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from abcmusic.errors import UserError
from abcmusic.scaling.cell import Cell
from abcmusic.scaling.fit import fit_power_law, json_safe
from abcmusic.scaling.joint import PARAM_NAMES
from abcmusic.scaling.ladder import analyze_architecture
from abcmusic.scaling.ladder_plot import plot_frontier, plot_held_out, plot_loss_against_d, plot_loss_against_n
from abcmusic.scaling.plot import plot_loss_curves, plot_scaling
from abcmusic.tracking import mlflow_store, model_registry
from abcmusic.tracking.metric_names import history_keys, law_key, read_metric
from abcmusic.tracking.trial_record import TrialRecord


CELL_KEYS = ("val_loss", "val_loss_se", "flops", "epochs")
# Resamples per joint fit: a sweep's summary fits each architecture 3 times (all cells, and without the largest size
# and budget), ~0.2 s per resample on a small CPU; 100 keep that under a minute at the demo's size.
SWEEP_BOOTSTRAP = 100


@dataclass(frozen=True)
class TrialCell:
    """A cell with the trial settings that choose among cells: its architecture and learning rate."""

    arch: str
    lr: float
    cell: Cell


def trial_cells(uri: str, run, convention: str) -> list[TrialCell]:
    """The cells of one finished trial run, from its `cell/*` metric histories (one value per cell, at the cell's
    token count). A run logged before trials had cells is one cell: its final loss at its token budget."""
    record = TrialRecord.from_params(run.data.params)
    n = float(record.n(convention))
    client = mlflow_store.client(uri)
    # A sweep resumed across the renaming of the keys has a cell's values under either key.
    histories = {key: {m.step: m.value for history_key in history_keys(f"cell/{key}")
                       for m in client.get_metric_history(run.info.run_id, history_key)}
                 for key in CELL_KEYS}
    metrics = run.data.metrics
    if not histories["val_loss"]:
        final_val_loss = read_metric(metrics, "final_val_loss")
        if not math.isfinite(final_val_loss):
            return []
        d = read_metric(metrics, "tokens_seen", record.tokens)
        # Such runs logged no FLOPs; their MFU and throughput give the model's FLOPs per token.
        flops_per_token = (read_metric(metrics, "mfu") * read_metric(metrics, "peak_flops") * record.workers
                           / read_metric(metrics, "tokens_per_s"))
        histories = {"val_loss": {d: final_val_loss}, "val_loss_se": {d: read_metric(metrics, "final_val_loss_se")},
                     "flops": {d: flops_per_token * d}, "epochs": {d: math.nan}}
    return [TrialCell(record.arch, record.lr,
                      Cell(size=record.size, n=n, d=float(d), loss=loss,
                           loss_se=histories["val_loss_se"].get(d, math.nan), flops=histories["flops"].get(d, math.nan),
                           epochs=histories["epochs"].get(d, math.nan), seed=record.seed))
            for d, loss in sorted(histories["val_loss"].items())]


def best_lr_cells(cells: list[TrialCell]) -> dict[str, list[Cell]]:
    """Per architecture, the cells of every seed at each (size, budget)'s best learning rate: the lowest mean
    loss over seeds."""
    by_setting: dict[tuple[str, str, int, float], list[Cell]] = defaultdict(list)
    for trial_cell in cells:
        cell = trial_cell.cell
        by_setting[trial_cell.arch, cell.size, round(cell.d), trial_cell.lr].append(cell)
    best: dict[tuple[str, str, int], list[Cell]] = {}
    for (arch, size, d, _lr), seeds in by_setting.items():
        if (arch, size, d) not in best or (statistics.fmean(c.loss for c in seeds)
                                           < statistics.fmean(c.loss for c in best[arch, size, d])):
            best[arch, size, d] = seeds
    chosen: dict[str, list[Cell]] = defaultdict(list)
    for (arch, _size, _d), seeds in sorted(best.items(), key=lambda item: (item[0][0], item[1][0].n, item[0][2])):
        chosen[arch].extend(seeds)
    return dict(chosen)


def largest_budget_points(cells: list[Cell]) -> list[tuple[float, float]]:
    """(N, loss) of the cells at the largest budget: the seed study's L(N)."""
    largest = max(round(cell.d) for cell in cells)
    return [(cell.n, cell.loss) for cell in cells if round(cell.d) == largest]


def loss_curves(uri: str, runs: list, convention: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Each run's validation-loss curve (the fixed sample at every evaluation point), per architecture, smallest
    model first: architecture -> "SIZE lr RATE" -> (tokens, loss)."""
    client = mlflow_store.client(uri)
    curves: dict[str, list[tuple[float, str, list[tuple[float, float]]]]] = defaultdict(list)
    for run in runs:
        record = TrialRecord.from_params(run.data.params)
        points = {m.step: m.value for key in history_keys("val_loss")
                  for m in client.get_metric_history(run.info.run_id, key)}
        if points:
            label = f"{record.size} lr {record.lr:.2g}" + (f" seed {record.seed}" if record.seed else "")
            curves[record.arch].append((record.n(convention), label, sorted(points.items())))
    return {arch: {label: points for _, label, points in sorted(trials)} for arch, trials in curves.items()}


def register_best_model(uri: str, name: str, runs: list, alias: str) -> tuple[str, str] | None:
    """Register the model of the run with the lowest final validation loss as models:/NAME@ALIAS; (its run name,
    the version), or None when no finished run has a model."""
    finished = [run for run in runs if math.isfinite(read_metric(run.data.metrics, "final_val_loss"))]
    models = model_registry.models_of_runs(uri, finished)
    with_models = [run for run in finished if run.info.run_id in models]
    if not with_models:
        return None
    best = min(with_models, key=lambda run: (read_metric(run.data.metrics, "final_val_loss"), run.info.run_name))
    return best.info.run_name, model_registry.register(uri, name, models[best.info.run_id], alias)


def analyze(name: str, project_dir: Path, convention: str, model_alias: str = "best",
            log: Callable[[str], None] = print) -> dict:
    """Fit the sweep's laws from its finished MLflow runs alone; log them and their figures on the sweep's parent
    run, register the best model as models:/NAME@MODEL_ALIAS, and write results/NAME/.

    Per architecture: L(N) at the largest budget (the seed study's fit, in scaling.png) and, where the cells span
    enough sizes and budgets, the joint law with its held-out predictions, frontier and IsoFLOP profiles."""
    uri = mlflow_store.tracking_uri(project_dir)
    experiment = mlflow_store.client(uri).get_experiment_by_name(name)
    if experiment is None:
        raise UserError(f"no sweep named {name!r} in the MLflow store at {uri}")
    runs = mlflow_store.finished_trial_runs(uri, experiment.experiment_id)
    cells = best_lr_cells([cell for run in runs for cell in trial_cells(uri, run, convention)])
    points = {arch: largest_budget_points(arch_cells) for arch, arch_cells in cells.items()}
    fits, skipped, laws, not_joint = {}, {}, {}, {}
    for arch, arch_points in points.items():
        try:
            fits[arch] = fit_power_law(arch_points)
        except ValueError as error:
            skipped[arch] = str(error)
        if len({round(cell.d) for cell in cells[arch]}) < 2:
            not_joint[arch] = "every size has one token budget: schedule: wsd with budgets gives the cells it needs"
            continue
        try:
            laws[arch] = analyze_architecture(cells[arch], n_bootstrap=SWEEP_BOOTSTRAP)
        except ValueError as error:
            not_joint[arch] = str(error)
    out_dir = project_dir / "results" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "sweep": name, "param_convention": convention, "trials_finished": len(runs),
        "points": {arch: [list(p) for p in pts] for arch, pts in points.items()},
        "fits": {arch: fit.to_dict() for arch, fit in fits.items()}, "not_fitted": skipped,
        "cells": {arch: [dataclasses.asdict(cell) for cell in arch_cells] for arch, arch_cells in cells.items()},
        "laws": {arch: law.to_dict() for arch, law in laws.items()}, "joint_not_fitted": not_joint,
    }
    (out_dir / "fit.json").write_text(json.dumps(json_safe(summary), indent=1) + "\n")
    if fits:
        plot_scaling(fits, {a: points[a] for a in fits}, out_dir / "scaling.png",
                     parameter_label=f"{convention.replace('_', '-')} parameters N")
    curves = loss_curves(uri, runs, convention)
    if curves:
        plot_loss_curves(curves, out_dir / "loss_curves.png")
    for arch, law in laws.items():
        plot_loss_against_n(law, cells[arch], out_dir / f"{arch}_loss_vs_n.png", title=arch)
        plot_loss_against_d(law, cells[arch], out_dir / f"{arch}_loss_vs_d.png", title=arch)
        plot_frontier(law, cells[arch], out_dir / f"{arch}_frontier.png", title=arch)
        plot_held_out(law, out_dir / f"{arch}_held_out.png", title=arch)
    run_id = mlflow_store.find_or_create_run(uri, experiment.experiment_id, mlflow_store.SUMMARY_KEY,
                                             mlflow_store.summary_params(convention), kind="summary")
    metrics = {}
    for arch, fit in fits.items():
        chosen = fit.chosen_fit
        metrics |= {law_key(arch, "alpha"): chosen.alpha, law_key(arch, "alpha_ci_low"): chosen.alpha_ci_low,
                    law_key(arch, "alpha_ci_high"): chosen.alpha_ci_high, law_key(arch, "a"): chosen.a,
                    law_key(arch, "c"): chosen.c, law_key(arch, "r2"): chosen.r2}
    for arch, law in laws.items():
        metrics |= {law_key(arch, f"joint_{param}"): getattr(law.fit.params, param) for param in PARAM_NAMES}
        for test in law.held_out:
            if test.cells:
                worst = max(abs(cell.error_percent) for cell in test.cells)
                label = test.name.replace(" ", "_")
                metrics[law_key(arch, f"heldout_{label}_max_abs_error_percent")] = worst
                if test.has_intervals:
                    metrics[law_key(arch, f"heldout_{label}_inside_fraction")] = test.n_inside / len(test.cells)
    metrics = {key: value for key, value in metrics.items() if math.isfinite(value)}
    if metrics:
        mlflow_store.log_metrics(uri, run_id, metrics, step=0)
    mlflow_store.log_artifacts(uri, run_id, out_dir)
    mlflow_store.finish_run(uri, run_id)
    registered = register_best_model(uri, name, runs, model_alias)
    for arch, law in laws.items():
        log(f"{arch}: the law L(N, D) from {law.n_cells} cells")
        for line in law.report_lines():
            log(f"  {line}")
    for arch, reason in not_joint.items():
        log(f"{arch}: no joint law L(N, D): {reason}")
    for arch, fit in fits.items():
        chosen = fit.chosen_fit
        log(f"{arch} at the largest budget: L = {chosen.a:.3g} * N^-{chosen.alpha:.4f}"
            + (f" + {chosen.c:.3f}" if chosen.c else "")
            + f"   alpha 95% CI [{chosen.alpha_ci_low:.4f}, {chosen.alpha_ci_high:.4f}], R^2 {chosen.r2:.3f},"
            f" {fit.chosen} form, {fit.n_sizes} sizes" + ("  (offset near the smallest loss: alpha inflated)"
                                                          if fit.offset_near_min_loss else ""))
    for arch, reason in skipped.items():
        log(f"{arch}: not fitted: {reason}")
    if registered is not None:
        log(f"best model: run {registered[0]}, registered as models:/{model_registry.model_name(name)}@{model_alias}"
            f" (version {registered[1]})")
    log(f"fit and plots: {out_dir}/fit.json, {out_dir}/*.png")
    log(f"MLflow: {mlflow_store.experiment_link(uri, experiment.experiment_id)}")
    return summary
