"""Cleaning rules for the ABC text that midi2abc writes: small steps that each say what they changed or dropped.

A rule is a function `str -> str` (a rewrite) or `str -> str | None` (a check that returns a drop reason).
`clean_tune` runs them in order and reports which rewrites changed the tune and, if it was dropped, why.

Decisions (documented in README.md, "What prepare.py does to each tune"):
- `%` comment lines and trailing `% ...` comments are removed (midi2abc writes track names and key
  descriptions as comments).
- `%%` directives are removed except `%%MIDI program` and `%%MIDI channel`: they carry the instrument and the
  drum channel, which change what the tune sounds like when abc2midi plays it. A `%%MIDI program` that repeats
  the voice's current program is a no-op for abc2midi and is removed.
- Characters outside printable ASCII are removed and tabs become spaces. midi2abc itself writes ASCII only; other
  bytes come from text that leaked through from the MIDI file and are not music.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

FIELD_LINE = re.compile(r"^[A-Za-z]:")
# A note or chord with its length and an optional tie, as midi2abc writes them: ^c'2-, [E-C-A,]3/2, [CEG]-.
NOTE_OR_CHORD = re.compile(r"(?:\[[^\]\[:|]*\]|(?:\^{1,2}|_{1,2}|=)?[A-Ga-g][,']*)[0-9/]*-?")
MIDI_DIRECTIVE = re.compile(r"^%%MIDI\s+(program|channel)\b")
NOT_PRINTABLE = re.compile(r"[^\x20-\x7e\n]")


def is_music_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not FIELD_LINE.match(stripped) and not stripped.startswith("%")


def normalize_line_endings(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def printable_ascii(text: str) -> str:
    return NOT_PRINTABLE.sub("", text.replace("\t", " "))


def strip_comments(text: str) -> str:
    """Drop `%` comment lines (not `%%` directives) and trailing comments after an unescaped `%`."""
    kept = []
    for line in text.split("\n"):
        if line.startswith("%%"):
            kept.append(line)
            continue
        match = re.search(r"(?<!\\)%", line)
        if match is None:
            kept.append(line)
        elif line[: match.start()].strip():
            kept.append(line[: match.start()].rstrip())
        # else: a whole-line comment, dropped
    return "\n".join(kept)


def keep_midi_directives(text: str) -> str:
    """Keep `%%MIDI program|channel`, drop every other `%%` directive."""
    return "\n".join(
        line for line in text.split("\n") if not line.startswith("%%") or MIDI_DIRECTIVE.match(line)
    )


def drop_repeated_program(text: str) -> str:
    """Remove a `%%MIDI program N` that repeats the program already in force in the same voice."""
    kept = []
    current_program: str | None = None
    for line in text.split("\n"):
        if line.startswith("V:"):
            current_program = None
        elif line.startswith("%%MIDI program"):
            program = " ".join(line.split()[2:])
            if program == current_program:
                continue
            current_program = program
        kept.append(line)
    return "\n".join(kept)


def remove_title(text: str) -> str:
    """midi2abc's only `T:` line is `T: from <input path>`: a file name, not music."""
    return "\n".join(line for line in text.split("\n") if not line.startswith("T:"))


def strip_trailing_whitespace(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n"))


def remove_empty_lines(text: str) -> str:
    kept = "\n".join(line for line in text.split("\n") if line.strip())
    # The newline that ends the last line is a terminator, not an empty line.
    return kept + "\n" if kept and text.endswith("\n") else kept


def strip_final_tie(text: str) -> str:
    """Remove ties from the last note or chord of each voice: there is no next note to tie to.

    abc2midi rejects such a tune ("Could not find note to be tied"); midi2abc writes one whenever a note is
    still sounding at the end of a track.
    """
    lines = text.split("\n")
    voice_ends = [i for i, line in enumerate(lines) if line.startswith("V:")] + [len(lines)]
    for end in voice_ends:
        for i in range(end - 1, -1, -1):
            if lines[i].startswith("V:"):
                break  # this voice has no music line
            if not is_music_line(lines[i]):
                continue
            matches = list(NOTE_OR_CHORD.finditer(lines[i]))
            if not matches:
                continue
            last = matches[-1]
            line = lines[i]
            lines[i] = line[: last.start()] + last.group().replace("-", "") + line[last.end():]
            break
    return "\n".join(lines)


def check_structure(text: str) -> str | None:
    """A tune needs an `X:` and a `K:` field and at least one music line after `K:`."""
    lines = text.split("\n")
    if not any(line.startswith("X:") for line in lines):
        return "missing_X"
    key_lines = [i for i, line in enumerate(lines) if line.startswith("K:")]
    if not key_lines:
        return "missing_K"
    if not any(is_music_line(line) for line in lines[key_lines[0] + 1:]):
        return "no_music"
    return None


REWRITES: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("normalize_line_endings", normalize_line_endings),
    ("printable_ascii", printable_ascii),
    ("strip_comments", strip_comments),
    ("keep_midi_directives", keep_midi_directives),
    ("drop_repeated_program", drop_repeated_program),
    ("remove_title", remove_title),
    ("strip_trailing_whitespace", strip_trailing_whitespace),
    ("remove_empty_lines", remove_empty_lines),
    ("strip_final_tie", strip_final_tie),
)
CHECKS: tuple[tuple[str, Callable[[str], str | None]], ...] = (("check_structure", check_structure),)
RULE_NAMES: tuple[str, ...] = tuple(name for name, _ in REWRITES) + tuple(name for name, _ in CHECKS)


@dataclass
class CleanedTune:
    text: str | None  # None when the tune was dropped
    changed_by: list[str] = field(default_factory=list)
    drop_reason: str | None = None


def clean_tune(text: str) -> CleanedTune:
    changed_by = []
    for name, rewrite in REWRITES:
        rewritten = rewrite(text)
        if rewritten != text:
            changed_by.append(name)
            text = rewritten
    for _name, check in CHECKS:
        reason = check(text)
        if reason is not None:
            return CleanedTune(text=None, changed_by=changed_by, drop_reason=reason)
    return CleanedTune(text=text if text.endswith("\n") else text + "\n", changed_by=changed_by)
