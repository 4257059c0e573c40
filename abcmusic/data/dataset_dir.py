"""A prepared dataset's folder: what counts as complete, which output folders are refused, and the guarded publish.

A dataset is complete exactly when its manifest.json exists and names this format; it is written last, inside a
staging folder beside the target, and the whole folder is renamed into place (abcmusic.publish). A run killed at
any point leaves either the previous dataset or nothing at the target, never a half-written one.
"""

from __future__ import annotations

import json
from pathlib import Path

from abcmusic.errors import UserError
from abcmusic.publish import publish_dir, write_file_atomically

DATASET_FORMAT = "abcmusic-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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


def write_json_atomically(path: Path, document: dict) -> None:
    write_file_atomically(path, (json.dumps(document, indent=1, sort_keys=False) + "\n").encode())


def publish(staging: Path, out_dir: Path) -> None:
    """Move the finished staging folder to `out_dir`, replacing a previous dataset there."""
    if not (staging / MANIFEST).exists():
        raise RuntimeError(f"refusing to publish {staging}: it has no {MANIFEST}")
    publish_dir(staging, out_dir)
