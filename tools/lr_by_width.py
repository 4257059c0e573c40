"""How each model size's best learning rate moves with its width, from sweeps that differ only in their rate.

    python tools/lr_by_width.py demo-wsd2 demo-lr6 demo-lr12

For each architecture, at the largest budget: every size's loss at each rate; its best rate (the vertex of a
parabola in log rate through the best measured rate and its two neighbours, or the edge rate, marked, when the best
is at an edge of the grid); the exponent p of best rate ∝ width^-p fitted to the interior optima; and the seed
study's α (pure form, with its bootstrap 95% interval) at each single rate and with each size at its best rate.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abcmusic.models.registry import get_architecture  # noqa: E402
from abcmusic.scaling.analysis import trial_cells  # noqa: E402
from abcmusic.scaling.fit import fit_power_law  # noqa: E402
from abcmusic.tracking import mlflow_store  # noqa: E402
from abcmusic.tracking.trial_record import TrialRecord  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parents[1]


def best_rate(rates: list[float], losses: list[float]) -> tuple[float, str]:
    """The loss-optimal rate and how it was found: `vertex` (interior), `<=` or `>=` (the grid's edge)."""
    best = int(np.argmin(losses))
    if best == 0:
        return rates[0], "<="
    if best == len(rates) - 1:
        return rates[-1], ">="
    x = np.log(rates[best - 1:best + 2])
    curvature, slope, _ = np.polyfit(x, losses[best - 1:best + 2], 2)
    return float(np.exp(-slope / (2 * curvature))), "vertex"


def alpha_line(label: str, points: list[tuple[float, float]]) -> str:
    pure = fit_power_law(points).pure
    return f"  alpha {label:<26} {pure.alpha:.3f} [{pure.alpha_ci_low:.3f}, {pure.alpha_ci_high:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="sweep names (MLflow experiments) that differ only in their rate")
    parser.add_argument("--convention", default="non_embedding", choices=("non_embedding", "total"))
    args = parser.parse_args()
    uri = mlflow_store.tracking_uri(PROJECT_DIR)
    client = mlflow_store.client(uri)
    # arch -> size -> rate -> loss at the largest budget; arch -> size -> (N, width)
    losses: dict[str, dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    sizes: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
    for sweep in args.sweeps:
        experiment = client.get_experiment_by_name(sweep)
        if experiment is None:
            print(f"no sweep named {sweep!r} in {uri}", file=sys.stderr)
            return 2
        for run in mlflow_store.finished_trial_runs(uri, experiment.experiment_id):
            record = TrialRecord.from_params(run.data.params)
            cells = trial_cells(uri, run, args.convention)
            if not cells:
                continue
            last = max(cells, key=lambda c: c.cell.d)
            losses[record.arch][record.size][record.lr] = last.cell.loss
            width = record.model_fields[get_architecture(record.arch).width_field]
            sizes[record.arch][record.size] = (last.cell.n, width)
    for arch, by_size in losses.items():
        rates = sorted({rate for by_rate in by_size.values() for rate in by_rate})
        print(f"{arch}: loss at the largest budget; rates {', '.join(f'{r:g}' for r in rates)}")
        widths, optima = [], []
        best_points = []
        for size, by_rate in sorted(by_size.items(), key=lambda item: sizes[arch][item[0]][0]):
            n, width = sizes[arch][size]
            measured = [r for r in rates if r in by_rate]
            rate, how = best_rate(measured, [by_rate[r] for r in measured])
            best_points.append((n, min(by_rate.values())))
            if how == "vertex":
                widths.append(width)
                optima.append(rate)
            print(f"  {size:>6} N {n:>9,.0f} width {width:>4}  "
                  + "  ".join(f"{by_rate[r]:.4f}" if r in by_rate else "   -   " for r in rates)
                  + f"   best {'' if how == 'vertex' else how}{rate:.3g}")
        if len(optima) >= 2:
            slope, intercept = np.polyfit(np.log(widths), np.log(optima), 1)
            print(f"  best rate ∝ width^{slope:.2f} from {len(optima)} interior optima"
                  f" (at width 64: {math.exp(intercept + slope * math.log(64)):.3g})")
        else:
            print(f"  only {len(optima)} interior optimum: no exponent")
        for rate in rates:
            points = [(sizes[arch][size][0], by_rate[rate]) for size, by_rate in by_size.items() if rate in by_rate]
            if len(points) == len(by_size):
                print(alpha_line(f"at {rate:g}", points))
        print(alpha_line("each size at its best", best_points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
