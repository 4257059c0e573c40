"""Integration tests: versions of one piece (transposed, at another tempo, without a voice) stay in one split.

The real prepare.py, with real Ray and midi2abc, on real POP909 songs and on copies of them made with mido.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import mido
import pyarrow.parquet as pq
import pytest

from conftest import run_cli

pytestmark = pytest.mark.integration

SONGS = [f"{n:03d}" for n in range(1, 17)]  # POP909 songs 001-016: 60 files, no song filed twice
TRANSPOSITIONS = (-5, -3, 1, 4, 6)


def transposed(midi: mido.MidiFile, semitones: int) -> mido.MidiFile:
    copy = mido.MidiFile(file=io.BytesIO(_bytes(midi)))
    for track in copy.tracks:
        for message in track:
            if message.type in ("note_on", "note_off") and message.channel != 9:
                message.note = min(127, max(0, message.note + semitones))
    return copy


def slower_without_last_track(midi: mido.MidiFile) -> mido.MidiFile:
    """Half the tempo, and the last (accompaniment) track removed."""
    copy = mido.MidiFile(file=io.BytesIO(_bytes(midi)))
    copy.tracks = copy.tracks[:-1]
    for track in copy.tracks:
        for message in track:
            if message.type == "set_tempo":
                message.tempo *= 2
    return copy


def _bytes(midi: mido.MidiFile) -> bytes:
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """POP909 songs 001-016 with all their versions, plus made versions of four songs' main files in a folder of
    their own; returns the folder and each made copy's original."""
    root = tmp_path_factory.mktemp("versions")
    for song in SONGS:
        shutil.copytree(shared_data / "midi" / "pop909" / song, root / "pop909" / song)
    originals = {}
    for song in SONGS[:4]:
        original = f"pop909/{song}/{song}.mid"
        midi = mido.MidiFile(root / original)
        copies = {f"made/{song}-transposed{s:+d}.mid": transposed(midi, s) for s in TRANSPOSITIONS}
        copies[f"made/{song}-slower-fewer-voices.mid"] = slower_without_last_track(midi)
        for path, copy in copies.items():
            (root / path).parent.mkdir(exist_ok=True)
            (root / path).write_bytes(_bytes(copy))
            originals[path] = original
    return root, originals


def prepare(corpus_root: Path, workdir: Path, out: str, *flags: str) -> tuple[Path, dict]:
    result = run_cli("prepare.py", "--midi-dir", str(corpus_root), "--out", out, *flags, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir / out, json.loads((workdir / out / "manifest.json").read_text())


def splits_by_path(out: Path) -> dict[str, str]:
    return {path: split for split in ("train", "val", "test")
            for path in pq.read_table(out / split, columns=["source_path"])["source_path"].to_pylist()}


def song_of(path: str, originals: dict[str, str]) -> str:
    return originals.get(path, path).split("/")[1]


@pytest.fixture(scope="module")
def grouped(corpus, tmp_path_factory):
    return prepare(corpus[0], tmp_path_factory.mktemp("work"), "grouped")


def test_every_version_joins_its_song_and_songs_stay_apart(grouped, corpus):
    out, manifest = grouped
    _, originals = corpus
    groups = [json.loads(line) for line in (out / "near_duplicate_groups.jsonl").read_text().splitlines()]
    group_of = {path: i for i, group in enumerate(groups) for path in group["tunes"]}
    for copy, original in originals.items():
        assert copy in group_of and group_of[copy] == group_of[original], f"{copy} is not grouped with {original}"
    for group in groups:  # no false merge between different songs
        assert len({song_of(path, originals) for path in group["tunes"]}) == 1, group["tunes"]
    near = manifest["near_duplicates"]
    assert near["groups"] == len(groups) and near["tunes_in_groups"] == sum(len(g["tunes"]) for g in groups)
    assert near["largest_group"] == max(len(g["tunes"]) for g in groups)


def test_no_song_is_in_two_splits(grouped, corpus):
    out, manifest = grouped
    _, originals = corpus
    splits_of_song: dict[str, set[str]] = {}
    for path, split in splits_by_path(out).items():
        splits_of_song.setdefault(song_of(path, originals), set()).add(split)
    assert all(len(splits) == 1 for splits in splits_of_song.values()), splits_of_song
    held_out = [split for split in ("val", "test") if manifest["splits"][split]["tunes"]]
    assert held_out
    for split in held_out:  # no held-out tune is a copy of a training tune
        assert manifest["contamination"][split]["tunes_mostly_in_train"] == 0.0


def test_drop_keeps_one_version_per_group(corpus, grouped, tmp_path):
    out, manifest = prepare(corpus[0], tmp_path, "dropped", "--near-duplicates", "drop")
    grouped_out, grouped_manifest = grouped
    groups = [json.loads(line)["tunes"] for line in (out / "near_duplicate_groups.jsonl").read_text().splitlines()]
    kept = splits_by_path(out)
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    versions = {r["source_path"]: r for r in rejected if r["stage"] == "near_duplicates"}
    for group in groups:
        assert group[0] in kept and not any(path in kept for path in group[1:])
        assert all(versions[path]["representative"] == group[0] and versions[path]["reason"] == "near_duplicate"
                   for path in group[1:])
    assert manifest["near_duplicates"]["dropped"] == len(versions) == sum(len(g) - 1 for g in groups)
    assert manifest["tunes"] == grouped_manifest["tunes"] - len(versions)
    assert all(kept[path] == split for path, split in splits_by_path(grouped_out).items() if path in kept)


def test_off_splits_every_tune_by_its_own_hash(corpus, grouped, tmp_path):
    from abcmusic.data.splits import SplitFractions, assign_split

    out, manifest = prepare(corpus[0], tmp_path, "off", "--near-duplicates", "off")
    assert (out / "near_duplicate_groups.jsonl").read_text() == ""
    assert manifest["near_duplicates"] == {"mode": "off", "threshold": 0.2}
    fractions = SplitFractions(**manifest["config"]["fractions"])
    rows = [row for split in ("train", "val", "test")
            for row in pq.read_table(out / split, columns=["content_hash"]).to_pylist()]
    assert len(rows) == grouped[1]["tunes"]
    for split in ("train", "val", "test"):
        for content_hash in pq.read_table(out / split, columns=["content_hash"])["content_hash"].to_pylist():
            assert assign_split(content_hash, fractions) == split
    # With versions split independently, held-out tunes are largely copies of training ones.
    mostly = [manifest["contamination"][split]["tunes_mostly_in_train"] for split in ("val", "test")]
    assert max(m for m in mostly if m is not None) > 0.5


def test_bad_threshold_is_one_line_and_exit_2(corpus, tmp_path):
    result = run_cli("prepare.py", "--midi-dir", str(corpus[0]), "--out", "x", "--near-duplicate-threshold", "1.5",
                     cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "threshold" in result.stderr
    assert not (tmp_path / "x").exists()
