"""Writing a folder or a file whole: write it beside its target under another name, then rename it into place.

A run killed at any point leaves the previous target or none, never a half-written one. A folder is built in a
staging folder `.NAME.incomplete-XXXXXXXX` beside the target; the next run that owns the target removes the ones
killed runs left behind (remove_stale_staging).
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

STAGING_MARK = ".incomplete-"
PREVIOUS_MARK = ".previous-"


def remove_stale_staging(target: Path) -> list[Path]:
    """Delete the staging (and replaced-target) folders that killed runs left beside `target`."""
    if not target.parent.exists():
        return []
    name = glob.escape(target.name)
    stale = sorted(p for mark in (STAGING_MARK, PREVIOUS_MARK) for p in target.parent.glob(f".{name}{mark}*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def new_staging_dir(target: Path) -> Path:
    """A new, empty folder beside `target` to build it in (its parents are created)."""
    staging = target.parent / f".{target.name}{STAGING_MARK}{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    return staging


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """new_staging_dir(target), removed on the way out unless it was renamed into place."""
    staging = new_staging_dir(target)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(staging: Path, target: Path) -> None:
    """Move the finished staging folder to `target`, replacing what was there."""
    previous = None
    if target.exists():
        previous = target.parent / f".{target.name}{PREVIOUS_MARK}{uuid.uuid4().hex[:8]}"
        os.replace(target, previous)
    os.replace(staging, target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def write_file_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)
