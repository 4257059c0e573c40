"""Integration tests: the real prepare.py, with real Ray and midi2abc, on real MIDI files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abcmusic.data.assemble import split_key
from abcmusic.data.splits import SplitFractions, assign_split
from abcmusic.data.vocab import Vocabulary
from conftest import REPO_ROOT, cli_env, copy_pop909, run_cli

pytestmark = pytest.mark.integration

POP909_SAMPLE = 60


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory) -> Path:
    """Multitrack songs, the bad files, a POP909 sample, nested folders, odd extensions and an exact duplicate."""
    root = tmp_path_factory.mktemp("corpus")
    shutil.copytree(shared_data / "midi" / "multitrack", root / "multitrack")
    shutil.copytree(shared_data / "midi" / "bad", root / "bad")
    pop909 = copy_pop909(shared_data, root, POP909_SAMPLE)
    nested = root / "deeply" / "nested"
    nested.mkdir(parents=True)
    shutil.copy(pop909[0], nested / "UPPER.MIDI")  # same music as pop909[0] (001/001-v1.mid): a duplicate
    (root / "bad" / "not_midi.mid").write_text("this is not a MIDI file\n")
    (root / "bad" / "truncated.mid").write_bytes(pop909[1].read_bytes()[:2000])
    (root / "notes.txt").write_text("not a MIDI file name: never discovered\n")
    return root


@pytest.fixture(scope="module")
def prepared(corpus: Path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("work")
    result = run_cli("prepare.py", "--midi-dir", str(corpus), "--out", "data/sample", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    out = workdir / "data" / "sample"
    manifest = json.loads((out / "manifest.json").read_text())
    return workdir, out, manifest, result


def read_split(out: Path, split: str) -> pa.Table:
    return pq.read_table(out / split)


def n_midi_files(corpus: Path) -> int:
    return sum(1 for p in corpus.rglob("*") if p.suffix.lower() in (".mid", ".midi"))


def test_manifest_counts_every_file(prepared, corpus):
    _, out, manifest, _ = prepared
    files = manifest["files"]
    assert files["found"] == n_midi_files(corpus) == 12 + 5 + POP909_SAMPLE + 3
    assert files["converted"] + files["failed"] == files["found"]
    failed = manifest["failed_by_reason"]
    assert failed["no_notes"] == 1
    assert failed["output_too_large"] == 1
    assert failed["not_midi"] == 1
    assert failed["midi2abc_error"] == 3  # note too short, jigs168, truncated
    assert sum(failed.values()) == files["failed"]
    assert manifest["duplicates"] >= 1  # the planted copy; POP909 has exact duplicates of its own
    assert manifest["tunes"] == manifest["tunes_after_cleaning"] - manifest["duplicates"]
    assert sum(s["tunes"] for s in manifest["splits"].values()) == manifest["tunes"]
    assert manifest["text_events_removed"] > 1000  # the multitrack songs' names, lyrics and markers
    assert manifest["cleaning"]["strip_final_tie"]["changed"] > 0
    assert manifest["vocab_size"] == len(Vocabulary.load(out / "vocab.json"))
    assert manifest["tools"]["midi2abc"].startswith("3.")
    # The validator's reference rate on real test tunes (strip_final_tie is what keeps POP909's near 100%).
    validity = manifest["test_validity"]
    assert validity["judged"] == min(200, manifest["splits"]["test"]["tunes"])
    assert validity["valid_fraction"] is None if validity["judged"] == 0 else validity["valid_fraction"] >= 0.9


def test_rejected_lists_every_failure_and_duplicate(prepared):
    _, out, manifest, _ = prepared
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    by_path = {r["source_path"]: r for r in rejected}
    assert by_path["bad/empty_no_notes.mid"]["reason"] == "no_notes"
    assert by_path["bad/fuzzed_huge_output.mid"]["reason"] == "output_too_large"
    assert by_path["bad/not_midi.mid"]["reason"] == "not_midi"
    # The copy and its original: the first in sorted path order is kept, the other is the duplicate.
    planted = by_path["pop909/001/001-v1.mid"]
    assert planted["stage"] == "dedupe" and "deeply/nested/UPPER.MIDI" in planted["detail"]
    assert "deeply/nested/UPPER.MIDI" not in by_path
    assert sum(r["stage"] == "dedupe" for r in rejected) == manifest["duplicates"]
    assert sum(r["stage"] == "convert" for r in rejected) == manifest["files"]["failed"]
    assert all(r["detail"] for r in rejected)


def test_parquet_schema_and_tokens_decode_to_text(prepared):
    _, out, manifest, _ = prepared
    vocab = Vocabulary.load(out / "vocab.json")
    for split in ("train", "val", "test"):
        table = read_split(out, split)
        assert table.schema.names == ["source_path", "content_hash", "abc", "token_ids", "n_tokens"]
        assert table.schema.field("token_ids").type == pa.list_(pa.uint16())
        rows = table.to_pylist()
        known = vocab.token_to_id
        for row in rows:
            expected = "".join(c if c in known else "<unk>" for c in row["abc"])
            assert vocab.decode(row["token_ids"]) == expected
            assert row["n_tokens"] == len(row["token_ids"]) == len(row["abc"])
            assert row["abc"].startswith("X:") and "\nK:" in row["abc"]
            assert not any(line.startswith("T:") for line in row["abc"].splitlines())
        assert manifest["splits"][split]["tokens"] == sum(r["n_tokens"] for r in rows)
    train = read_split(out, "train").to_pylist()
    assert train and all(vocab.decode(r["token_ids"]) == r["abc"] for r in train)  # train has no <unk>


def test_splits_are_disjoint_and_follow_the_hash(prepared):
    """A tune alone follows its own hash; the versions of one piece share the split of their group's key."""
    _, out, manifest, _ = prepared
    fractions = SplitFractions(**manifest["config"]["fractions"])
    split_of, hash_of = {}, {}
    for split in ("train", "val", "test"):
        for row in read_split(out, split).select(["source_path", "content_hash"]).to_pylist():
            assert row["content_hash"] not in hash_of.values(), "a tune is in two splits"
            split_of[row["source_path"]], hash_of[row["source_path"]] = split, row["content_hash"]
    groups = [json.loads(line)["tunes"] for line in (out / "near_duplicate_groups.jsonl").read_text().splitlines()]
    assert len(groups) == manifest["near_duplicates"]["groups"] > 0  # POP909's versions of each song
    group_of = {path: tunes for tunes in groups for path in tunes}
    for path, split in split_of.items():
        members = group_of.get(path, [path])
        assert assign_split(split_key([hash_of[p] for p in members]), fractions) == split


def test_vocabulary_is_the_training_characters(prepared):
    _, out, _, _ = prepared
    vocab = Vocabulary.load(out / "vocab.json")
    train_chars = set("".join(read_split(out, "train")["abc"].to_pylist()))
    assert set(vocab.id_to_token[2:]) == train_chars
    assert vocab.id_to_token[:2] == ("<sep>", "<unk>")


def test_summary_table_is_printed(prepared):
    _, _, manifest, result = prepared
    assert "tunes kept" in result.stdout and f"{manifest['tunes']:,}" in result.stdout
    assert "vocabulary size" in result.stdout
    assert "midi2abc [" in result.stderr  # the progress line
    assert "Traceback" not in result.stderr


def test_rerun_is_up_to_date_and_force_rebuilds_identically(prepared, corpus):
    workdir, out, manifest, _ = prepared
    before = {split: read_split(out, split) for split in ("train", "val", "test")}
    again = run_cli("prepare.py", "--midi-dir", str(corpus), "--out", "data/sample", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    assert json.loads((out / "manifest.json").read_text())["created_at"] == manifest["created_at"]

    forced = run_cli("prepare.py", "--midi-dir", str(corpus), "--out", "data/sample", "--force", cwd=workdir)
    assert forced.returncode == 0, forced.stderr
    for split, table in before.items():
        assert read_split(out, split).equals(table), f"{split} differs between two runs on the same input"
    assert not list(out.parent.glob(".sample.*")), "staging folders left behind"


@pytest.mark.parametrize("case", ["missing", "empty", "foreign_out", "out_is_file", "bad_splits", "no_out"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, corpus):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no MIDI here")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    (tmp_path / "a_file").write_text("x")
    args = {
        "missing": ["--midi-dir", str(tmp_path / "nope"), "--out", "data/x"],
        "empty": ["--midi-dir", str(empty), "--out", "data/x"],
        "foreign_out": ["--midi-dir", str(corpus), "--out", str(foreign)],
        "out_is_file": ["--midi-dir", str(corpus), "--out", str(tmp_path / "a_file")],
        "bad_splits": ["--midi-dir", str(corpus), "--out", "data/x", "--splits", "0.5,0.1"],
        "no_out": ["--midi-dir", str(corpus)],
    }[case]
    result = run_cli("prepare.py", *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare.py: error:"), result.stderr
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "data" / "x").exists()


def test_killed_run_leaves_the_previous_dataset_intact(prepared, corpus):
    workdir, out, _, _ = prepared
    manifest = json.loads((out / "manifest.json").read_text())  # the dataset in place before the killed run
    home = workdir / ".home"
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "prepare.py"), "--midi-dir", str(corpus), "--out", "data/sample", "--force"],
        cwd=workdir, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    for line in process.stdout:
        if line.startswith("midi2abc ["):  # conversion is under way
            break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(1)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert list(out.parent.glob(".sample.incomplete-*")), "expected the killed run's staging folder"

    rerun = run_cli("prepare.py", "--midi-dir", str(corpus), "--out", "data/sample", "--force", cwd=workdir)
    assert rerun.returncode == 0, rerun.stderr
    assert "left by an unfinished run" in rerun.stdout
    assert not list(out.parent.glob(".sample.*"))
    for split in ("train", "val", "test"):
        assert json.loads((out / "manifest.json").read_text())["splits"][split] == manifest["splits"][split]


def test_demo_corpus_is_built_prepared_and_cached(tmp_path):
    first = run_cli("prepare.py", "--demo-tunes", "40", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "building the demo corpus: 40 tunes" in first.stdout
    midi_files = list((tmp_path / "data" / "demo-midi-40").rglob("*.mid"))
    assert len(midi_files) >= 35  # abc2midi renders nearly every tune
    manifest = json.loads((tmp_path / "data" / "demo" / "manifest.json").read_text())
    assert manifest["files"]["found"] == len(midi_files)
    assert manifest["tunes"] >= 30 and manifest["splits"]["train"]["tokens"] > 5000

    second = run_cli("prepare.py", "--demo-tunes", "40", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "reusing the demo corpus" in second.stdout and "up to date" in second.stdout
