"""Benchmark: what grouping versions of a piece and measuring contamination cost, against the conversion itself.

Two parts, on POP909 files (../shared/data/midi/pop909):
1. Per file, in one process one file after another: the whole conversion (`convert_file`: text-event removal,
   midi2abc, cleaning, and the sketch) against the sketch alone (`sketch_tune`: notes, interval patterns,
   MinHash signatures, stretch hashes), which is what the conversion tasks now do in addition.
2. The driver's steps at two corpus sizes, from real `prepare()` runs: conversion on all CPUs, dedupe and grouping
   (the LSH index), the contamination measure; with each step's growth exponent between the sizes (1 = linear),
   and the grouping's peak memory per voice, measured in this process on the larger size.
Then an extrapolation to the Lakh MIDI Dataset's 178,561 files on one 16-core node, from these rates.

    .venv/bin/python benchmarks/near_duplicates_bench.py [--sizes 1288,2577] [--sample 300]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from abcmusic.data.convert import ConvertLimits, convert_file
from abcmusic.data.discover import find_midi_files
from abcmusic.data.midi_folder import open_midi_folder
from abcmusic.data.midi_text import strip_text_events
from abcmusic.data.near_duplicates import NearDuplicateConfig, group_tunes, sketch_tune
from abcmusic.data.prepare import PrepareConfig, prepare
from abcmusic.testing import SHARED_DATA

LAKH_FILES = 178_561
LAKH_CPUS = 16


def per_file_seconds(root: Path, paths: list[str]) -> tuple[float, float, int]:
    """(seconds per file converting, of which sketching, files converted), one file after another."""
    folder, limits = open_midi_folder(root), ConvertLimits()
    convert_s = sketch_s = 0.0
    converted = 0
    with tempfile.TemporaryDirectory(prefix="near-dup-bench-") as work_dir:
        for path in paths:
            started = time.perf_counter()
            result = convert_file(folder, path, Path(work_dir), limits)
            convert_s += time.perf_counter() - started
            if result.status != "ok":
                continue
            converted += 1
            midi, _ = strip_text_events((root / path).read_bytes())
            started = time.perf_counter()
            sketch_tune(midi, result.abc)
            sketch_s += time.perf_counter() - started
    return convert_s / len(paths), sketch_s / len(paths), converted


def prepare_seconds(root: Path, paths: list[str]) -> dict:
    """A real prepare() of the first len(paths) files (linked into a folder of their own), on all CPUs."""
    with tempfile.TemporaryDirectory(prefix="near-dup-bench-") as scratch:
        corpus = Path(scratch) / "midi"
        for path in paths:
            (corpus / path).parent.mkdir(parents=True, exist_ok=True)
            (corpus / path).symlink_to(root / path)
        manifest = prepare(PrepareConfig(midi_dir=corpus, out_dir=Path(scratch) / "out"), log=lambda line: None)
    return manifest


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def grouping_peak_bytes(root: Path, paths: list[str]) -> tuple[int, int]:
    """(voices indexed, the driver's extra peak resident memory while grouping them): the index and signatures."""
    signatures = []
    for i, path in enumerate(paths):
        midi, _ = strip_text_events((root / path).read_bytes())
        signatures.append((i, sketch_tune(midi, "").voice_signatures))
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from the current resident set
    before = _status_kib("VmRSS")
    grouping = group_tunes(signatures, NearDuplicateConfig().threshold)
    return grouping.voices_compared, (_status_kib("VmHWM") - before) * 1024


def growth(small: float, large: float, n_small: int, n_large: int) -> float:
    return math.log(large / small) / math.log(n_large / n_small) if small > 0 and large > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pop909", type=Path, default=SHARED_DATA / "midi" / "pop909")
    parser.add_argument("--sizes", default="1288,2577")
    parser.add_argument("--sample", type=int, default=300, help="files timed one by one in part 1")
    args = parser.parse_args()
    paths = find_midi_files(args.pop909)
    step = max(1, len(paths) // args.sample)
    convert_s, sketch_s, converted = per_file_seconds(args.pop909, paths[::step][:args.sample])
    print(f"1. per file, one process, {args.sample} files ({converted} converted): conversion {convert_s * 1e3:.1f} ms "
          f"of which sketch {sketch_s * 1e3:.1f} ms ({sketch_s / convert_s:.0%})")

    sizes = [int(s) for s in args.sizes.split(",")]
    runs = {size: prepare_seconds(args.pop909, paths[:size]) for size in sizes}
    print(f"2. prepare() on all CPUs\n{'files':>6} {'tunes':>6} {'voices':>7} {'candidates':>10} {'convert s':>10} "
          f"{'group s':>8} {'contam. s':>10} {'group/convert':>14}")
    for size, m in runs.items():
        near, seconds = m["near_duplicates"], m["seconds"]
        print(f"{size:>6} {m['tunes']:>6} {near['voices_compared']:>7} {near['candidate_voice_pairs']:>10} "
              f"{seconds['convert']:>10.1f} {seconds['dedupe_and_group']:>8.2f} {seconds['contamination']:>10.2f} "
              f"{(seconds['dedupe_and_group'] + seconds['contamination']) / seconds['convert']:>14.1%}")
    small, large = sizes[0], sizes[-1]
    exponents = {key: growth(runs[small]["seconds"][key], runs[large]["seconds"][key], small, large)
                 for key in ("convert", "dedupe_and_group", "contamination")}
    pairs = growth(runs[small]["near_duplicates"]["candidate_voice_pairs"],
                   runs[large]["near_duplicates"]["candidate_voice_pairs"], small, large)
    print("growth exponents (time ~ files^k): " + ", ".join(f"{k} {v:.2f}" for k, v in exponents.items())
          + f", candidate voice pairs {pairs:.2f}")

    voices, peak = grouping_peak_bytes(args.pop909, paths[:large])
    print(f"   grouping {voices:,} voices in this process: peak memory {peak / 2**20:.0f} MiB above the start, "
          f"{peak / voices / 1024:.1f} KiB per voice (LSH index and signatures)")

    m = runs[large]
    scale = LAKH_FILES / large
    driver_s = sum(m["seconds"][k] for k in ("dedupe_and_group", "contamination")) * scale ** max(1.0, max(
        exponents["dedupe_and_group"], exponents["contamination"]))
    convert_lakh_s = convert_s * LAKH_FILES / LAKH_CPUS
    index_gib = m["near_duplicates"]["voices_compared"] * scale * peak / voices / 2**30
    print(f"3. Lakh ({LAKH_FILES:,} files) on {LAKH_CPUS} cores, from POP909's per-file rates: conversion "
          f"{convert_lakh_s / 60:.0f} min (sketch included, {sketch_s / convert_s:.0%} of it); driver's grouping and "
          f"contamination {driver_s / 60:.1f} min (scaled with the larger growth exponent, at least linear); "
          f"the driver's index {index_gib:.1f} GiB at POP909's {voices / large:.1f} voices per file")


if __name__ == "__main__":
    main()
