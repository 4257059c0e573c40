"""Find MIDI files under a folder, recursively, as sorted paths relative to it."""

from __future__ import annotations

import os
from pathlib import Path

MIDI_SUFFIXES = (".mid", ".midi")


def find_midi_files(root: Path) -> list[str]:
    found = []
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if name.lower().endswith(MIDI_SUFFIXES) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)
