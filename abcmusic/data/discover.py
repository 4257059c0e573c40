"""Find MIDI files under a folder, recursively, as sorted paths relative to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

MIDI_SUFFIXES = (".mid", ".midi")


def is_midi_name(name: str) -> bool:
    return name.lower().endswith(MIDI_SUFFIXES) and not name.startswith(".")


def find_midi_files(root: Path) -> list[str]:
    found = []
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if is_midi_name(name):
                found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


def select_midi_paths(relative_paths: Iterable[str]) -> list[str]:
    """find_midi_files' rule for a flat listing ("/"-separated paths, e.g. from object storage): MIDI file names
    outside hidden folders, sorted."""
    found = []
    for path in relative_paths:
        *folders, name = path.split("/")
        if is_midi_name(name) and not any(folder.startswith(".") for folder in folders):
            found.append(path)
    return sorted(found)
