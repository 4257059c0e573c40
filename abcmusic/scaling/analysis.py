"""The analysis of a finished (or partly finished) sweep, from its MLflow runs alone: per architecture, the
points at each size's best learning rate, the power-law fit, its plot, and the sweep's summary run."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Callable

from abcmusic.errors import UserError
from abcmusic.scaling.fit import fit_power_law
from abcmusic.scaling.plot import plot_scaling
from abcmusic.tracking import mlflow_store
from abcmusic.tracking.trial_record import TrialRecord


def run_records(runs: list, convention: str) -> list[tuple[str, float, float, float]]:
    """(architecture, N, learning rate, final val loss) of every finished trial run that has a final loss."""
    records = []
    for run in runs:
        final_val_loss = run.data.metrics.get("final_val_loss", math.nan)
        if math.isfinite(final_val_loss):
            record = TrialRecord.from_params(run.data.params)
            records.append((record.arch, float(record.n(convention)), record.lr, final_val_loss))
    return records


def best_lr_points(records: list[tuple[str, float, float, float]]) -> dict[str, list[tuple[float, float]]]:
    """Per architecture, (N, loss) of every seed at each size's best learning rate (the lowest mean over seeds)."""
    losses: dict[tuple[str, float, float], list[float]] = defaultdict(list)
    for arch, n, lr, loss in records:
        losses[arch, n, lr].append(loss)
    best: dict[tuple[str, float], tuple[float, list[float]]] = {}
    for (arch, n, _lr), seeds in losses.items():
        mean = statistics.fmean(seeds)
        if (arch, n) not in best or mean < best[arch, n][0]:
            best[arch, n] = (mean, seeds)
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (arch, n), (_mean, seeds) in sorted(best.items()):
        points[arch].extend((n, loss) for loss in seeds)
    return dict(points)


def analyze(name: str, project_dir: Path, convention: str, log: Callable[[str], None] = print) -> dict:
    """Fit L(N) per architecture from the sweep's finished MLflow runs alone; log a summary run and results/NAME/."""
    uri = mlflow_store.tracking_uri(project_dir)
    experiment = mlflow_store.client(uri).get_experiment_by_name(name)
    if experiment is None:
        raise UserError(f"no sweep named {name!r} in the MLflow store at {uri}")
    runs = mlflow_store.finished_trial_runs(uri, experiment.experiment_id)
    points = best_lr_points(run_records(runs, convention))
    fits, skipped = {}, {}
    for arch, arch_points in points.items():
        try:
            fits[arch] = fit_power_law(arch_points)
        except ValueError as error:
            skipped[arch] = str(error)
    out_dir = project_dir / "results" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "sweep": name, "param_convention": convention, "trials_finished": len(runs),
        "points": {arch: [list(p) for p in pts] for arch, pts in points.items()},
        "fits": {arch: fit.to_dict() for arch, fit in fits.items()}, "not_fitted": skipped,
    }
    (out_dir / "fit.json").write_text(json.dumps(summary, indent=1) + "\n")
    if fits:
        plot_scaling(fits, {a: points[a] for a in fits}, out_dir / "scaling.png",
                     parameter_label=f"{convention.replace('_', '-')} parameters N")
    run_id = mlflow_store.find_or_create_run(uri, experiment.experiment_id, mlflow_store.SUMMARY_KEY,
                                             {"param_convention": convention}, kind="summary")
    metrics = {}
    for arch, fit in fits.items():
        chosen = fit.chosen_fit
        metrics |= {f"{arch}_alpha": chosen.alpha, f"{arch}_alpha_ci_low": chosen.alpha_ci_low,
                    f"{arch}_alpha_ci_high": chosen.alpha_ci_high, f"{arch}_a": chosen.a, f"{arch}_c": chosen.c,
                    f"{arch}_r2": chosen.r2}
    if metrics:
        mlflow_store.log_metrics(uri, run_id, metrics, step=0)
    mlflow_store.log_artifacts(uri, run_id, out_dir)
    mlflow_store.finish_run(uri, run_id)
    for arch, fit in fits.items():
        chosen = fit.chosen_fit
        log(f"{arch}: L = {chosen.a:.3g} * N^-{chosen.alpha:.4f}" + (f" + {chosen.c:.3f}" if chosen.c else "")
            + f"   alpha 95% CI [{chosen.alpha_ci_low:.4f}, {chosen.alpha_ci_high:.4f}], R^2 {chosen.r2:.3f},"
            f" {fit.chosen} form, {fit.n_sizes} sizes" + ("  (offset near the smallest loss: alpha inflated)"
                                                          if fit.offset_near_min_loss else ""))
    for arch, reason in skipped.items():
        log(f"{arch}: not fitted: {reason}")
    log(f"fit and plot: {out_dir}/fit.json, {out_dir}/scaling.png; MLflow: mlflow ui --backend-store-uri {uri}")
    return summary
