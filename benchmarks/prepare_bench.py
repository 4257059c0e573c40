"""Benchmark: prepare's Ray Data conversion against a plain sequential loop doing the same per-file work.

Both sides run `convert_chunk` (strip text events, midi2abc with limits, clean, pack a Parquet part) on the same
chunks of POP909 files and write the parts; the loop runs them one after another in this process, the way the seed
study converted its corpus. Reported: files/s over the whole stage and in steady state (from the moment 10% of the
files are done to the end, which leaves out worker start-up), Ray's start-up time on its own line, and the peak
resident set (PSS) of this process and all its descendants (the Ray processes included), at two corpus sizes.

    .venv/bin/python benchmarks/prepare_bench.py [--pop909 ../shared/data/midi/pop909] [--sizes 1288,2577]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from abcmusic.data.conversion_job import convert_all, convert_chunk, files_per_task, write_part
from abcmusic.data.convert import ConvertLimits
from abcmusic.data.discover import find_midi_files
from abcmusic.data.prepare import start_ray_for_conversion
from abcmusic.testing import SHARED_DATA
from process_memory import PeakMemory, memory_bytes, process_tree  # beside this file


def rates(finish_times: list[float], started: float) -> tuple[float, float]:
    """(files/s over the whole stage, files/s from 10% done to the end)."""
    finish_times = sorted(finish_times)
    total = len(finish_times) / (finish_times[-1] - started)
    tenth = len(finish_times) // 10
    steady = (len(finish_times) - tenth) / (finish_times[-1] - finish_times[tenth])
    return total, steady


def chunks_of(paths: list[str], chunk_size: int) -> list[dict]:
    return [
        {"chunk_index": i, "file_indices": list(range(start, min(start + chunk_size, len(paths)))),
         "source_paths": paths[start:start + chunk_size]}
        for i, start in enumerate(range(0, len(paths), chunk_size))
    ]


def run_sequential(root: Path, paths: list[str], parts_dir: Path, limits: ConvertLimits, chunk_size: int):
    finish_times = []
    started = time.monotonic()
    with PeakMemory() as memory:
        for chunk in chunks_of(paths, chunk_size):
            rows = convert_chunk(chunk, str(root), limits)
            for row in rows:
                write_part(parts_dir, row)
            finish_times += [time.monotonic()] * len(rows)
    return rates(finish_times, started), memory


def run_ray(root: Path, paths: list[str], parts_dir: Path, limits: ConvertLimits, n_cpus: int):
    finish_times = []
    started = time.monotonic()
    with PeakMemory() as memory:
        for _summary in convert_all(root, paths, parts_dir, limits, n_cpus):
            finish_times.append(time.monotonic())
    return rates(finish_times, started), memory


def measure(mode: str, pop909: Path, size: int) -> dict:
    """One measurement, in this (fresh) process: the loop, or Ray from a cold start."""
    paths = find_midi_files(pop909)[:size]
    limits = ConvertLimits()
    result: dict = {"mode": mode, "size": len(paths)}
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as scratch:
        if mode == "loop":
            (total, steady), memory = run_sequential(pop909, paths, Path(scratch), limits,
                                                     files_per_task(len(paths), os.cpu_count() or 1))
        else:
            ray_start = time.monotonic()
            result["cpus"], _ = start_ray_for_conversion(None, whole_cluster=True)
            result["ray_start_s"] = time.monotonic() - ray_start
            result["idle_pss"], _ = memory_bytes(process_tree(os.getpid()))
            (total, steady), memory = run_ray(pop909, paths, Path(scratch), limits, result["cpus"])
            ray.shutdown()
        result["parts"] = len(list(Path(scratch).iterdir()))
    return result | {"total": total, "steady": steady, "peak_pss": memory.peak_pss, "peak_rss": memory.peak_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pop909", type=Path, default=SHARED_DATA / "midi" / "pop909")
    parser.add_argument("--sizes", default="1288,2577", help="corpus sizes to measure (first N sorted files)")
    parser.add_argument("--one", choices=["loop", "ray"], help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args()
    if not args.pop909.is_dir():
        sys.exit(f"prepare_bench.py: error: {args.pop909} not found")
    if args.one:
        print(json.dumps(measure(args.one, args.pop909, int(args.sizes))))
        return

    # Every measurement runs in a fresh process, so none inherits another's memory, warm workers or caches.
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        for mode in ("loop", "ray"):
            completed = subprocess.run(
                [sys.executable, __file__, "--one", mode, "--sizes", str(size), "--pop909", str(args.pop909)],
                capture_output=True, text=True, check=True)
            results[size, mode] = json.loads(completed.stdout.strip().splitlines()[-1])

    mib = 2**20
    for (size, mode), r in results.items():
        if mode == "ray":
            print(f"ray start-up ({size} files): {r['ray_start_s']:.1f} s, not included in any rate below; "
                  f"{r['cpus']} CPUs; idle Ray processes + driver: {r['idle_pss'] / mib:.0f} MiB")
    print(f"{'files':>6} {'loop files/s':>13} {'ray files/s':>12} {'ratio':>6} {'steady loop':>12} "
          f"{'steady ray':>11} {'steady ratio':>13} {'loop peak MiB':>14} {'ray peak MiB':>13} {'(RSS)':>7}")
    for size in sorted({size for size, _ in results}):
        loop, ray_run = results[size, "loop"], results[size, "ray"]
        assert loop["parts"] == ray_run["parts"], "the two runs wrote different numbers of parts"
        print(f"{size:>6} {loop['total']:>13.1f} {ray_run['total']:>12.1f} {ray_run['total'] / loop['total']:>6.2f} "
              f"{loop['steady']:>12.1f} {ray_run['steady']:>11.1f} {ray_run['steady'] / loop['steady']:>13.2f} "
              f"{loop['peak_pss'] / mib:>14.0f} {ray_run['peak_pss'] / mib:>13.0f} {ray_run['peak_rss'] / mib:>7.0f}")
    print("peak MiB: PSS of the measuring process and all its descendants (for Ray: raylet, GCS and workers); "
          "(RSS) counts shared pages once per process")

if __name__ == "__main__":
    main()
