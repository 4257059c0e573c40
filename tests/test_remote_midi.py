"""prepare.py --midi-dir URI: MIDI files read from object storage, with a file:// folder standing in for the bucket.

The same files give the same dataset whether they are named by a path or a URI; only the manifest's midi_dir says
which. Real Ray and midi2abc, on a small folder of the shared real MIDI files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from abcmusic.data.convert import ConvertLimits, convert_file
from abcmusic.data.midi_folder import open_midi_folder
from conftest import REPO_ROOT, cli_env, copy_pop909, run_cli

pytestmark = pytest.mark.integration

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def midi_dir(shared_data: Path, tmp_path_factory) -> Path:
    """A few songs of each kind, bad files, nested folders, an upper-case extension, spaces in names (the URI
    percent-encodes them) and files never discovered."""
    root = tmp_path_factory.mktemp("midi") / "lmd full"
    root.mkdir()
    for path in sorted((shared_data / "midi" / "multitrack").glob("*.mid"))[:3]:
        shutil.copy(path, root / path.name)
    (root / "bad").mkdir()
    for path in (shared_data / "midi" / "bad").glob("*.mid"):
        shutil.copy(path, root / "bad" / path.name)
    pop909 = copy_pop909(shared_data, root, 12)
    (root / "deeply" / "nested").mkdir(parents=True)
    shutil.copy(pop909[0], root / "deeply" / "nested" / "UPPER.MIDI")  # a duplicate, found by either listing
    (root / ".hidden").mkdir()
    shutil.copy(pop909[1], root / ".hidden" / "skipped.mid")
    (root / "bad" / "not_midi.mid").write_text("this is not a MIDI file\n")
    (root / "notes.txt").write_text("not a MIDI file name\n")
    return root


@pytest.fixture(scope="module")
def prepared(midi_dir: Path, tmp_path_factory):
    """The dataset from the local path, and the one from the file:// URI, written to a file:// bucket."""
    workdir = tmp_path_factory.mktemp("work")
    local = run_cli("prepare.py", "--midi-dir", str(midi_dir), "--out", "data/local", cwd=workdir)
    assert local.returncode == 0, local.stderr[-3000:]
    bucket = workdir / "bucket"
    out_uri = (bucket / "data" / "lmd").as_uri()
    remote = run_cli("prepare.py", "--midi-dir", midi_dir.as_uri(), "--out", out_uri, cwd=workdir)
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert f"uploading the dataset to {out_uri}" in remote.stdout
    return workdir, workdir / "data" / "local", bucket / "data" / "lmd", out_uri


def without_run_details(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("created_at", "seconds", "midi_dir")}


def test_a_uri_lists_the_files_a_path_lists(midi_dir):
    by_path = open_midi_folder(midi_dir).list_midi_files()
    assert by_path == open_midi_folder(midi_dir.as_uri()).list_midi_files()
    assert open_midi_folder(midi_dir.as_uri() + "/").list_midi_files() == by_path
    paths = [f.path for f in by_path]
    assert "deeply/nested/UPPER.MIDI" in paths and "notes.txt" not in paths
    assert not any(p.startswith(".hidden") for p in paths)


def test_reading_from_a_uri_keeps_the_size_limit_and_reports_unreadable_files(midi_dir, tmp_path):
    folder = open_midi_folder(midi_dir.as_uri())
    too_large = convert_file(folder, "bad/fuzzed_huge_output.mid", tmp_path, ConvertLimits(max_midi_bytes=1000))
    assert (too_large.status, too_large.reason) == ("failed", "midi_too_large")
    missing = convert_file(folder, "no/such.mid", tmp_path, ConvertLimits())
    assert (missing.status, missing.reason) == ("failed", "unreadable") and missing.detail
    assert list(tmp_path.iterdir()) == []


def test_a_file_uri_gives_the_dataset_of_its_local_path(prepared, midi_dir):
    _, local, remote, _ = prepared
    for split in SPLITS:
        a, b = pq.read_table(local / split), pq.read_table(remote / split)
        assert a.num_rows > 0 or split != "train"
        assert a.column("content_hash").to_pylist() == b.column("content_hash").to_pylist(), split
        assert a.equals(b), split  # source paths, abc text and token ids, row for row
    manifest_local = json.loads((local / "manifest.json").read_text())
    manifest_remote = json.loads((remote / "manifest.json").read_text())
    assert manifest_local["midi_dir"] == str(midi_dir)
    assert manifest_remote["midi_dir"] == midi_dir.as_uri()  # as typed
    assert manifest_remote["files"]["found"] == 3 + 6 + 12 + 1  # the hidden folder and notes.txt left out
    assert "%20" in manifest_remote["midi_dir"]
    assert manifest_remote["files"]["failed"] > 0 and manifest_remote["duplicates"] >= 1
    assert without_run_details(manifest_local) == without_run_details(manifest_remote)  # fingerprint included
    for name in ("vocab.json", "rejected.jsonl"):
        assert (local / name).read_text() == (remote / name).read_text(), name


def test_a_second_run_from_the_uri_is_up_to_date(prepared, midi_dir):
    workdir, _, _, out_uri = prepared
    again = run_cli("prepare.py", "--midi-dir", midi_dir.as_uri(), "--out", out_uri, cwd=workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "up to date" in again.stdout and "already holds this dataset" in again.stdout
    # The URI names the files the local path names: the dataset built from that path is up to date too.
    same = run_cli("prepare.py", "--midi-dir", midi_dir.as_uri(), "--out", "data/local", cwd=workdir)
    assert same.returncode == 0 and "up to date" in same.stdout, same.stderr[-3000:]


UNREACHABLE_S3 = "s3://abcmusic-test/lmd?endpoint_override=127.0.0.1:9&scheme=http"  # nothing listens on port 9


@pytest.mark.parametrize("case", ["missing", "a_file", "no_midi", "unknown_scheme", "unreachable"])
def test_a_bad_midi_uri_is_one_line_and_exit_2(case, tmp_path, midi_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no MIDI here")
    midi_uri = {
        "missing": (tmp_path / "nope").as_uri(),
        "a_file": (midi_dir / "pop909" / "001" / "001.mid").as_uri(),
        "no_midi": empty.as_uri(),
        "unknown_scheme": "nosuch://bucket/lmd",
        "unreachable": UNREACHABLE_S3,
    }[case]
    out = tmp_path / "bucket" / "lmd"
    home = tmp_path / ".home"
    home.mkdir()
    # Dummy credentials: the S3 client must not look for real ones (or an EC2 metadata service) first.
    env = cli_env(home) | {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                           "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run([sys.executable, str(REPO_ROOT / "prepare.py"), "--midi-dir", midi_uri,
                             "--out", out.as_uri()], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"prepare.py: error: --midi-dir {midi_uri}"), result.stderr
    assert not (tmp_path / "bucket").exists()
