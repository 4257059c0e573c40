"""The plot of a sweep's sample validity against model size, one line per architecture, real tunes for reference."""

from __future__ import annotations

from pathlib import Path


def plot_validity(results: dict[str, dict], test_valid_fraction: float, out_path: Path) -> None:
    """results: run name -> {"arch", "n", "metrics": {"valid_fraction", ...}}, as generate.py --sweep collects."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_arch: dict[str, list[tuple[float, float]]] = {}
    for result in results.values():
        by_arch.setdefault(result["arch"], []).append((result["n"], result["metrics"]["valid_fraction"]))
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for arch, points in sorted(by_arch.items()):
        points.sort()
        axes.plot([n for n, _ in points], [v for _, v in points], marker="o", label=arch.upper())
    axes.axhline(test_valid_fraction, color="grey", linestyle="--",
                 label=f"real test tunes ({test_valid_fraction:.0%})")
    axes.set_xscale("log")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("non-embedding parameters N")
    axes.set_ylabel("valid (abc2midi-playable) fraction")
    axes.set_title("Sample validity against model size")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_path, dpi=120)
    plt.close(figure)
