"""Datasets on object storage, with a file:// folder standing in for the bucket: prepare.py writes there,
sweep.py and generate.py read from there (through one local copy per machine), and nothing half-uploaded counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from abcmusic.data.remote import local_dataset, read_remote_manifest, upload_dataset
from abcmusic.errors import UserError
from conftest import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bucket_dataset(tiny_project, tmp_path_factory) -> tuple[Path, str]:
    """The tiny demo dataset written by prepare.py straight to a file:// URI."""
    bucket = tmp_path_factory.mktemp("bucket")
    uri = (bucket / "data" / "demo").as_uri()
    result = run_cli("prepare.py", "--demo-tunes", "60", "--out", uri, cwd=tiny_project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"uploading the dataset to {uri}" in result.stdout
    return bucket, uri


def test_prepare_writes_the_same_dataset_to_a_uri(bucket_dataset, tiny_project):
    bucket, _ = bucket_dataset
    remote, local = bucket / "data" / "demo", tiny_project / "data" / "demo"
    assert json.loads((remote / "manifest.json").read_text())["fingerprint"] == json.loads(
        (local / "manifest.json").read_text())["fingerprint"]
    for split in ("train", "val", "test"):
        assert pq.read_table(remote / split).equals(pq.read_table(local / split))
    again = run_cli("prepare.py", "--demo-tunes", "60", "--out", bucket_dataset[1], cwd=tiny_project)
    assert again.returncode == 0 and "already holds this dataset" in again.stdout


def test_a_dataset_without_its_manifest_is_not_a_dataset(tmp_path, bucket_dataset):
    partial = tmp_path / "partial"
    shutil.copytree(bucket_dataset[0] / "data" / "demo", partial)
    (partial / "manifest.json").unlink()  # what a reader sees while an upload is still under way
    assert read_remote_manifest(partial.as_uri()) is None
    with pytest.raises(UserError, match="no prepared dataset at"):
        local_dataset(partial.as_uri())


def test_upload_replaces_an_old_dataset_without_leaving_its_parts(tmp_path, bucket_dataset, monkeypatch):
    target = tmp_path / "target"
    (target / "train").mkdir(parents=True)
    (target / "train" / "stale-part.parquet").write_bytes(b"old")
    upload_dataset(bucket_dataset[0] / "data" / "demo", target.as_uri())
    assert not (target / "train" / "stale-part.parquet").exists()
    monkeypatch.setenv("ABCMUSIC_CACHE", str(tmp_path / "cache"))
    copy = local_dataset(target.as_uri())
    assert copy.is_relative_to(tmp_path / "cache") and (copy / "manifest.json").is_file()
    assert local_dataset(target.as_uri()) == copy  # made once, then reused


def test_sweep_and_generate_read_the_dataset_from_the_uri(bucket_dataset, tiny_project):
    _, uri = bucket_dataset
    result = run_cli("sweep.py", "--experiment", "tiny", "--arch", "gpt", "--sizes", "g1", "--data", uri,
                     "--name", "from-uri", cwd=tiny_project)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("from-uri")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("abcmusic.kind") == "trial"]
    assert len(runs) == 1 and runs[0].data.params["dataset"] == uri
    generated = run_cli("generate.py", "--run", runs[0].info.run_id, "--num", "2", "--max-new-tokens", "100",
                        "--out", str(tiny_project / "gen-from-uri"), cwd=tiny_project)
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert (tiny_project / "gen-from-uri" / "generated_samples.txt").is_file()
