"""Convert one MIDI file to cleaned ABC: strip text events, run midi2abc with limits, apply the cleaning rules, and
sketch the tune for near-duplicate grouping.

Every outcome is a `ConvertedFile`; nothing here raises for a bad input file.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from abcmusic.notation.cleaning import clean_tune
from abcmusic.data.midi_folder import LocalMidiFolder, MidiTooLarge, UriMidiFolder
from abcmusic.data.midi_text import NotMidiError, strip_text_events
from abcmusic.data.near_duplicates import TuneSketch, sketch_tune
from abcmusic.errors import first_line

# Failure reasons, as counted in the manifest.
NOT_MIDI = "not_midi"
UNREADABLE = "unreadable"
MIDI_TOO_LARGE = "midi_too_large"
MIDI2ABC_ERROR = "midi2abc_error"
NO_NOTES = "no_notes"
TIMEOUT = "timeout"
OUTPUT_TOO_LARGE = "output_too_large"
EMPTY_OUTPUT = "empty_output"


@dataclass(frozen=True)
class ConvertLimits:
    timeout_s: float = 20.0
    max_abc_bytes: int = 8 * 1024 * 1024
    max_midi_bytes: int = 16 * 1024 * 1024


@dataclass
class ConvertedFile:
    source_path: str
    status: str  # "ok", "failed" (conversion) or "dropped" (by a cleaning check)
    reason: str = ""
    detail: str = ""
    abc: str = ""
    content_hash: str = ""
    text_events_removed: int = 0
    changed_by: list[str] = field(default_factory=list)
    sketch: TuneSketch | None = None  # for "ok" tunes


def content_hash(abc: str) -> str:
    return hashlib.sha256(abc.encode("utf-8")).hexdigest()


def _first_message(log_path: Path) -> str:
    with open(log_path, "rb") as log:
        head = log.read(4096).decode("latin-1")
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    return lines[0][:200] if lines else ""


def run_midi2abc(midi_path: Path, abc_path: Path, log_path: Path, limits: ConvertLimits) -> tuple[str, str]:
    """Run midi2abc; return ("", "") on success or (reason, detail).

    Always `-o`: without it midi2abc mixes its error lines into the ABC on stdout. The file-size limit
    (prlimit's RLIMIT_FSIZE) stops runaway output at the cap, for the ABC and the log alike.
    """
    command = ["prlimit", f"--fsize={limits.max_abc_bytes}", "midi2abc", str(midi_path), "-o", str(abc_path)]
    try:
        with open(log_path, "wb") as log:
            completed = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=limits.timeout_s
            )
    except subprocess.TimeoutExpired:
        return TIMEOUT, f"midi2abc ran longer than {limits.timeout_s:g} s"
    if completed.returncode == -signal.SIGXFSZ or (
        abc_path.exists() and abc_path.stat().st_size >= limits.max_abc_bytes
    ):
        return OUTPUT_TOO_LARGE, f"midi2abc output reached the {limits.max_abc_bytes} byte cap"
    if completed.returncode != 0:
        # A non-zero exit is a failure even when midi2abc printed partial ABC.
        message = _first_message(log_path)
        reason = NO_NOTES if "has no notes" in message else MIDI2ABC_ERROR
        return reason, f"exit {completed.returncode}: {message}"
    if not abc_path.exists() or abc_path.stat().st_size == 0:
        return EMPTY_OUTPUT, _first_message(log_path)
    return "", ""


def convert_file(folder: LocalMidiFolder | UriMidiFolder, source_path: str, work_dir: Path,
                 limits: ConvertLimits) -> ConvertedFile:
    """Convert `source_path` of `folder`; `work_dir` is a private scratch folder, emptied again before returning."""
    midi_in = work_dir / "in.mid"
    abc_out = work_dir / "out.abc"
    log = work_dir / "midi2abc.log"
    try:
        try:
            midi = folder.read(source_path, limits.max_midi_bytes)
        except MidiTooLarge as error:
            return ConvertedFile(source_path, "failed", MIDI_TOO_LARGE, f"{error.size} bytes")
        except OSError as error:
            return ConvertedFile(source_path, "failed", UNREADABLE, error.strerror or first_line(error))
        try:
            midi, removed = strip_text_events(midi)
        except NotMidiError as error:
            return ConvertedFile(source_path, "failed", NOT_MIDI, str(error))
        midi_in.write_bytes(midi)
        reason, detail = run_midi2abc(midi_in, abc_out, log, limits)
        if reason:
            return ConvertedFile(source_path, "failed", reason, detail, text_events_removed=removed)
        raw_abc = abc_out.read_bytes().decode("latin-1")  # any byte decodes; printable_ascii deals with the rest
        cleaned = clean_tune(raw_abc)
        if cleaned.text is None:
            return ConvertedFile(
                source_path, "dropped", cleaned.drop_reason or "", "", text_events_removed=removed,
                changed_by=cleaned.changed_by,
            )
        return ConvertedFile(
            source_path, "ok", abc=cleaned.text, content_hash=content_hash(cleaned.text),
            text_events_removed=removed, changed_by=cleaned.changed_by, sketch=sketch_tune(midi, cleaned.text),
        )
    finally:
        for path in (midi_in, abc_out, log):
            path.unlink(missing_ok=True)
