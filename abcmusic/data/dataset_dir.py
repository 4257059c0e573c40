"""A prepared dataset's folder: what counts as complete, where an unfinished run writes, and the atomic publish.

A dataset is complete exactly when its manifest.json exists and names this format; it is written last, inside a
staging folder beside the target, and the whole folder is renamed into place. A run killed at any point leaves
either the previous dataset or nothing at the target, never a half-written one.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import uuid
from pathlib import Path

from abcmusic.errors import UserError

DATASET_FORMAT = "abcmusic-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STAGING_MARK = ".incomplete-"
PREVIOUS_MARK = ".previous-"


def read_manifest(dataset_dir: Path) -> dict | None:
    """The manifest of a complete dataset, or None if `dataset_dir` holds none."""
    try:
        manifest = json.loads((dataset_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == DATASET_FORMAT else None


def check_output_dir(out_dir: Path) -> dict | None:
    """Refuse an output path that holds anything but a dataset of ours; return its manifest if it is one."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return None
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise UserError(f"--out {out_dir} holds other files (it is not an abcmusic dataset); choose an empty or new folder")
    return manifest


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Delete the staging (and replaced-dataset) folders that killed runs left beside `out_dir`."""
    if not out_dir.parent.exists():
        return []
    name = glob.escape(out_dir.name)
    stale = sorted(p for mark in (STAGING_MARK, PREVIOUS_MARK) for p in out_dir.parent.glob(f".{name}{mark}*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def new_staging_dir(out_dir: Path) -> Path:
    staging = out_dir.parent / f".{out_dir.name}{STAGING_MARK}{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    return staging


def write_json_atomically(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(temporary, path)


def publish(staging: Path, out_dir: Path) -> None:
    """Move the finished staging folder to `out_dir`, replacing a previous dataset there."""
    if not (staging / MANIFEST).exists():
        raise RuntimeError(f"refusing to publish {staging}: it has no {MANIFEST}")
    previous = None
    if out_dir.exists():
        previous = out_dir.parent / f".{out_dir.name}{PREVIOUS_MARK}{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, previous)
    os.replace(staging, out_dir)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
