"""Datasets on object storage (s3://, gs://, file://, ... anything pyarrow's filesystems open).

A dataset at a URI is read through a local copy, made once per machine and reused while the dataset's manifest
fingerprint is the same: every Train worker on every node then reads the same bucket, and the hot loop reads a
local file. Uploading writes every file first and manifest.json last, so a reader never takes a half-uploaded
dataset for a complete one (object stores have no atomic folder rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from abcmusic.data.dataset_dir import MANIFEST
from abcmusic.errors import UserError, first_line
from abcmusic.publish import staging_dir
from abcmusic.storage import is_uri, open_filesystem

CACHE_ENV = "ABCMUSIC_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "abcmusic")


def _filesystem(uri: str):
    return open_filesystem(uri, f"cannot open {uri}")


def read_remote_manifest(uri: str) -> dict | None:
    filesystem, path = _filesystem(uri)
    try:
        with filesystem.open_input_stream(f"{path.rstrip('/')}/{MANIFEST}") as stream:
            manifest = json.loads(stream.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {uri}/{MANIFEST}: {first_line(error)}") from None
    return manifest if isinstance(manifest, dict) and "fingerprint" in manifest else None


def local_dataset(location: str | Path) -> Path:
    """A local folder holding the dataset at `location`: the folder itself, or this machine's copy of a URI."""
    location = str(location)
    if not is_uri(location):
        return Path(location)
    manifest = read_remote_manifest(location)
    if manifest is None:
        raise UserError(f"no prepared dataset at {location}; run: python prepare.py --out {location}")
    target = cache_root() / "datasets" / manifest["fingerprint"][:16]
    if (target / MANIFEST).is_file():
        return target
    import pyarrow.fs

    filesystem, path = _filesystem(location)
    # Every Train worker on this machine may be copying the same dataset: each copies into its own staging
    # folder, the first to finish publishes, and no one removes another's staging folder.
    with staging_dir(target) as staging:
        pyarrow.fs.copy_files(path, str(staging), source_filesystem=filesystem,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        try:
            staging.rename(target)
        except OSError:  # another process on this machine finished the same copy first
            pass
    return target


def upload_dataset(local_dir: Path, uri: str) -> None:
    """Copy a complete local dataset to `uri`: the manifest last, after every other file."""
    import pyarrow.fs

    filesystem, path = _filesystem(uri)
    path = path.rstrip("/")
    local = pyarrow.fs.LocalFileSystem()
    try:
        filesystem.delete_file(f"{path}/{MANIFEST}")  # the old dataset there stops counting as complete first,
    except (FileNotFoundError, OSError):
        pass
    filesystem.delete_dir_contents(path, missing_dir_ok=True)  # and none of its Parquet parts is read again
    filesystem.create_dir(path, recursive=True)
    for local_file in sorted(local_dir.rglob("*")):
        if local_file.is_dir() or local_file.name == MANIFEST:
            continue
        relative = local_file.relative_to(local_dir).as_posix()
        if "/" in relative:
            filesystem.create_dir(f"{path}/{relative.rsplit('/', 1)[0]}", recursive=True)
        pyarrow.fs.copy_files(str(local_file), f"{path}/{relative}", source_filesystem=local,
                              destination_filesystem=filesystem)
    pyarrow.fs.copy_files(str(local_dir / MANIFEST), f"{path}/{MANIFEST}", source_filesystem=local,
                          destination_filesystem=filesystem)
