"""Benchmark: how much of a dataset's validation and test content is found in its training split, against the level
between different songs, on a corpus whose folders name the song (POP909: <song>/<version>.mid).

For each dataset given, it reports the songs with files in more than one split, the groups that join files of
different songs, and prepare's contamination measure (abcmusic.data.near_duplicates) for the dataset's own
splits and for a reference split of the same tunes by song (every song's files in one split, cut from a hash of
its folder name with the dataset's fractions): the reference is the level between different songs.

    .venv/bin/python benchmarks/split_contamination.py /tmp/pop_off /tmp/pop_group [--midi-dir ../shared/data/midi/pop909]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from abcmusic.data.midi_text import strip_text_events
from abcmusic.data.near_duplicates import ContaminationMeter, HeldOutContent, TuneSketch, sketch_tune
from abcmusic.data.splits import SPLITS, SplitFractions, assign_split
from abcmusic.testing import SHARED_DATA


def contamination(sketches: dict[str, TuneSketch], split_of: dict[str, str]) -> dict[str, dict]:
    paths = list(sketches)
    meter = ContaminationMeter({split: HeldOutContent.of([(i, sketches[p].stretches) for i, p in enumerate(paths)
                                                          if split_of[p] == split]) for split in ("val", "test")})
    for path, split in split_of.items():
        if split == "train":
            meter.add_train(sketches[path].stretches)
    return meter.finish()


def song(path: str) -> str:
    return path.split("/")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--midi-dir", type=Path, default=SHARED_DATA / "midi" / "pop909")
    args = parser.parse_args()
    print(f"{'dataset':<28} {'split':<5} {'tunes':>5} {'songs in 2+ splits':>18} {'cross-song groups':>17} "
          f"{'stretches found in train':>24} {'tunes mostly in train':>21}")
    for dataset in args.datasets:
        manifest = json.loads((dataset / "manifest.json").read_text())
        fractions = SplitFractions(**manifest["config"]["fractions"])
        split_of, sketches = {}, {}
        for split in SPLITS:
            for row in pq.read_table(dataset / split, columns=["source_path", "abc"]).to_pylist():
                split_of[row["source_path"]] = split
                midi, _ = strip_text_events((args.midi_dir / row["source_path"]).read_bytes())
                sketches[row["source_path"]] = sketch_tune(midi, row["abc"])
        songs: dict[str, set[str]] = {}
        for path, split in split_of.items():
            songs.setdefault(song(path), set()).add(split)
        groups_file = dataset / "near_duplicate_groups.jsonl"
        groups = [json.loads(line)["tunes"] for line in groups_file.read_text().splitlines()]
        cross = [sorted({song(p) for p in tunes}) for tunes in groups if len({song(p) for p in tunes}) > 1]
        by_song = {path: assign_split(hashlib.sha256(song(path).encode()).hexdigest(), fractions) for path in split_of}
        for label, assignment in ((dataset.name, split_of), ("  reference: split by song", by_song)):
            for split, found in contamination(sketches, assignment).items():
                straddling = sum(len(s) > 1 for s in songs.values()) if assignment is split_of else 0
                print(f"{label:<28} {split:<5} {found['tunes_measured']:>5} {straddling:>18} "
                      f"{len(cross) if assignment is split_of else '':>17} {found['found_in_train']:>24.1%} "
                      f"{found['tunes_mostly_in_train']:>21.1%}")
        if cross:
            print(f"  groups joining songs: {cross}")


if __name__ == "__main__":
    main()
