"""The embedded demo corpus: music21's bundled ABC tunes, each rendered to MIDI with abc2midi, cached on disk.

The result is an ordinary folder of MIDI files that goes through the normal MIDI pipeline, so the demo exercises
exactly what a Lakh MIDI run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from abcmusic import tools
from abcmusic.notation.cleaning import normalize_line_endings
from abcmusic.progress import Progress
from abcmusic.publish import publish_dir, remove_stale_staging, staging_dir

DONE_MARK = "demo-corpus.json"  # written last: a folder without it is not a finished corpus
RENDER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DemoTune:
    relative_midi_path: str  # collection/file-stem/NNNNN.mid
    abc: str


def music21_corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def split_tunes(text: str) -> list[str]:
    """Split a multi-tune ABC file at its `X:` lines; the file header (fields before the first tune) is
    prepended to every tune, as ABC's file-header rule says."""
    header: list[str] = []
    tunes: list[list[str]] = []
    for line in normalize_line_endings(text).split("\n"):
        if line.startswith("X:"):
            tunes.append([line])
        elif tunes:
            tunes[-1].append(line)
        elif line and not line.startswith("%") and line[1:2] == ":":
            header.append(line)
    return ["\n".join([tune[0], *header, *tune[1:]]).strip() + "\n" for tune in tunes]


def collect_tunes(corpus_root: Path) -> list[DemoTune]:
    tunes = []
    for abc_file in sorted(corpus_root.rglob("*.abc")):
        relative = abc_file.relative_to(corpus_root).with_suffix("")
        for number, tune in enumerate(split_tunes(abc_file.read_text(encoding="latin-1")), start=1):
            tunes.append(DemoTune(f"{relative.as_posix()}/{number:05d}.mid", tune))
    return tunes


def evenly_spaced(items: list, count: int | None) -> list:
    """`count` items spread over the whole list (every collection is represented), or all of them."""
    if count is None or count >= len(items):
        return items
    return [items[(i * len(items)) // count] for i in range(count)]


def render_tune(tune: DemoTune, out_root: Path) -> bool:
    """abc2midi one tune; True when it wrote a MIDI file."""
    target = out_root / tune.relative_midi_path
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".abc", encoding="latin-1", errors="replace") as abc_file:
        abc_file.write(tune.abc)
        abc_file.flush()
        try:
            subprocess.run(["abc2midi", abc_file.name, "-o", str(target)], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=RENDER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            target.unlink(missing_ok=True)
            return False
    return target.exists() and target.stat().st_size > 0


def build_demo_corpus(target: Path, max_tunes: int | None = None, log: Callable[[str], None] = print) -> Path:
    """Render the demo corpus into `target` unless a finished one with the same settings is already there."""
    import music21

    settings = {"music21": music21.__version__, "max_tunes": max_tunes}
    try:
        done = json.loads((target / DONE_MARK).read_text())
    except (OSError, ValueError):
        done = None
    if done is not None and done.get("settings") == settings:
        log(f"reusing the demo corpus in {target} ({done['rendered']} MIDI files)")
        return target

    tools.require("abc2midi")
    tunes = evenly_spaced(collect_tunes(music21_corpus_root()), max_tunes)
    log(f"building the demo corpus: {len(tunes)} tunes from music21's ABC corpus -> MIDI with abc2midi, into {target}")
    remove_stale_staging(target)
    with staging_dir(target) as staging:
        progress = Progress(len(tunes), "abc2midi")
        rendered = 0
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for ok in pool.map(lambda tune: render_tune(tune, staging), tunes):
                rendered += ok
                progress.update(failed=not ok)
        progress.close()
        (staging / DONE_MARK).write_text(json.dumps(
            {"settings": settings, "tunes": len(tunes), "rendered": rendered, "failed": len(tunes) - rendered},
            indent=1) + "\n")
        publish_dir(staging, target)
    return target
