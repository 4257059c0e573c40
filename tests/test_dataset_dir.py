"""Unit tests for abcmusic.data.dataset_dir and abcmusic.publish: output-folder checks, atomic publish and stale
staging cleanup."""

from __future__ import annotations

import json

import pytest

from abcmusic.data.dataset_dir import (
    DATASET_FORMAT,
    MANIFEST,
    check_output_dir,
    publish,
    read_manifest,
    write_json_atomically,
)
from abcmusic.errors import UserError
from abcmusic.publish import STAGING_MARK, new_staging_dir, remove_stale_staging, staging_dir


def make_dataset(folder, marker: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train").mkdir(exist_ok=True)
    (folder / "train" / "part-00000.parquet").write_text(marker)
    manifest = {"format": DATASET_FORMAT, "format_version": 1, "marker": marker}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return manifest


# --- check_output_dir ---------------------------------------------------------------------------------------

def test_check_output_dir_missing_folder_is_ok(tmp_path):
    assert check_output_dir(tmp_path / "new" / "dataset") is None


def test_check_output_dir_empty_folder_is_ok(tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    assert check_output_dir(out) is None


def test_check_output_dir_file_is_refused(tmp_path):
    out = tmp_path / "dataset"
    out.write_text("not a folder")
    with pytest.raises(UserError, match="file"):
        check_output_dir(out)


def test_check_output_dir_foreign_files_are_refused(tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "notes.txt").write_text("my thesis")
    with pytest.raises(UserError):
        check_output_dir(out)
    assert (out / "notes.txt").read_text() == "my thesis"


def test_check_output_dir_hidden_file_counts_as_foreign(tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / ".keep").write_text("")
    with pytest.raises(UserError):
        check_output_dir(out)


@pytest.mark.parametrize(
    "manifest_text",
    [
        json.dumps({"format": "someone-elses-format"}),
        json.dumps(["abcmusic-dataset"]),
        "{ not json",
        "",
    ],
)
def test_check_output_dir_manifest_of_another_kind_is_refused(tmp_path, manifest_text):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / MANIFEST).write_text(manifest_text)
    with pytest.raises(UserError):
        check_output_dir(out)


def test_check_output_dir_returns_manifest_of_a_dataset(tmp_path):
    out = tmp_path / "dataset"
    manifest = make_dataset(out, "old")
    assert check_output_dir(out) == manifest


def test_read_manifest(tmp_path):
    assert read_manifest(tmp_path / "missing") is None
    manifest = make_dataset(tmp_path / "dataset", "x")
    assert read_manifest(tmp_path / "dataset") == manifest


def test_write_json_atomically(tmp_path):
    path = tmp_path / "manifest.json"
    write_json_atomically(path, {"format": DATASET_FORMAT, "n": 1})
    write_json_atomically(path, {"format": DATASET_FORMAT, "n": 2})
    assert json.loads(path.read_text()) == {"format": DATASET_FORMAT, "n": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


# --- publish ------------------------------------------------------------------------------------------------

def test_publish_into_new_folder(tmp_path):
    out = tmp_path / "dataset"
    staging = new_staging_dir(out)
    assert staging.parent == tmp_path and staging.name.startswith(".dataset.incomplete-")
    manifest = make_dataset(staging, "new")
    publish(staging, out)
    assert read_manifest(out) == manifest
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_publish_replaces_an_old_dataset(tmp_path):
    out = tmp_path / "dataset"
    make_dataset(out, "old")
    (out / "val").mkdir()
    (out / "val" / "only-in-old.parquet").write_text("old")
    staging = new_staging_dir(out)
    new_manifest = make_dataset(staging, "new")

    publish(staging, out)

    assert read_manifest(out) == new_manifest
    assert (out / "train" / "part-00000.parquet").read_text() == "new"
    assert not (out / "val").exists()  # nothing of the old dataset is left inside
    assert not staging.exists()
    # neither the staging folder nor the replaced dataset is left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_publish_refuses_staging_without_manifest(tmp_path):
    out = tmp_path / "dataset"
    old_manifest = make_dataset(out, "old")
    staging = new_staging_dir(out)
    (staging / "train").mkdir()
    (staging / "train" / "part-00000.parquet").write_text("half written")

    with pytest.raises(RuntimeError):
        publish(staging, out)

    assert read_manifest(out) == old_manifest
    assert (out / "train" / "part-00000.parquet").read_text() == "old"
    assert staging.exists()


# --- remove_stale_staging -----------------------------------------------------------------------------------

def test_remove_stale_staging_removes_only_this_datasets_leftovers(tmp_path):
    out = tmp_path / "dataset"
    make_dataset(out, "current")
    stale = [tmp_path / ".dataset.incomplete-1a2b3c4d", tmp_path / ".dataset.incomplete-deadbeef",
             tmp_path / ".dataset.previous-0badf00d"]
    for path in stale:
        make_dataset(path, "stale")
    keep = [
        tmp_path / ".other.incomplete-1a2b3c4d",  # another dataset's staging
        tmp_path / ".dataset2.incomplete-1a2b3c4d",  # a dataset whose name starts like ours
        tmp_path / ".dataset.backup",
        tmp_path / "dataset.incomplete-1a2b3c4d",  # not hidden: not ours
        tmp_path / "unrelated",
    ]
    for path in keep:
        path.mkdir()
    (tmp_path / "notes.txt").write_text("keep me")

    removed = remove_stale_staging(out)

    assert sorted(removed) == sorted(stale)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in keep)
    assert (tmp_path / "notes.txt").exists()
    assert read_manifest(out) == {"format": DATASET_FORMAT, "format_version": 1, "marker": "current"}


def test_remove_stale_staging_with_missing_parent(tmp_path):
    assert remove_stale_staging(tmp_path / "missing" / "dataset") == []


def test_remove_stale_staging_nothing_to_do(tmp_path):
    (tmp_path / "unrelated").mkdir()
    assert remove_stale_staging(tmp_path / "dataset") == []
    assert (tmp_path / "unrelated").exists()


def test_remove_stale_staging_with_glob_characters_in_the_name(tmp_path):
    out = tmp_path / "run[12]"
    own = tmp_path / ".run[12].incomplete-1a2b3c4d"
    other = tmp_path / ".run1.incomplete-1a2b3c4d"  # a different dataset's (maybe running) staging folder
    own.mkdir()
    other.mkdir()
    removed = remove_stale_staging(out)
    assert other.exists()
    assert not own.exists()
    assert removed == [own]


def test_staging_marks_are_what_remove_stale_staging_looks_for(tmp_path):
    out = tmp_path / "dataset"
    staging = new_staging_dir(out)
    assert STAGING_MARK in staging.name
    assert remove_stale_staging(out) == [staging]
    assert not staging.exists()


def test_a_failed_run_leaves_no_staging_folder_and_the_old_target(tmp_path):
    out = tmp_path / "dataset"
    old_manifest = make_dataset(out, "old")
    with pytest.raises(KeyboardInterrupt):
        with staging_dir(out) as staging:
            make_dataset(staging, "half written")
            raise KeyboardInterrupt
    assert read_manifest(out) == old_manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]
