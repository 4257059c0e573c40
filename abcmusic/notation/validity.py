"""Playability of ABC tunes: does abc2midi turn the text into a MIDI file with notes, without errors?

A tune is valid when, in this order:
1. the text is not empty (`empty`);
2. it has an `X:` and a `K:` field line (`missing_header:X`, `missing_header:K`; leading blanks are allowed,
   as abc2midi allows them) and exactly one `X:` line (`multiple_tunes`, see below); abc2midi is not run
   when one of these fails;
3. abc2midi finishes within the timeout (`timeout`: the process is killed), is not killed by a signal and
   exits 0 or with an error it reported (`abc2midi_crash` otherwise), and stays under the output cap (`output_too_large`: the MIDI and its own messages
   are limited with `prlimit --fsize`, as `abcmusic/data/convert.py` limits midi2abc; abc2midi 4.84 also
   gives up by itself, exit 1 "file runaway", at about 500 KB of MIDI, some 55,000 notes);
4. abc2midi prints no `Error ...` line (`abc2midi_error: <message>`, one reason per distinct line);
5. it wrote the MIDI file (`no_midi_written`), the file is a well-formed standard MIDI file
   (`corrupt_midi: <why>`), and it holds at least one note-on with velocity > 0 (`no_notes`).
Reasons are "code" or "code: detail"; `reasons[0]` is the first failing step above. abc2midi exits 0 even
for garbage, so its messages (all on stdout) are what decide step 4.

Decisions:
- Warnings never make a tune invalid: a tune whose only problems are abc2midi warnings is playable, and
  abc2midi plays it; the warnings are kept in `Verdict.warnings`. No stricter parser of our own is added.
  On the shared broken cases this means (abc2midi 4.84):
  `bad_barlen.abc` is valid with no warning at all (abc2midi takes the overlong first bar as an anacrusis);
  `bad_barlen2.abc` and `bad_tie_slur.abc` (abc2midi says nothing of the unbalanced slur or the dangling
  `(3`, and warns only about a bar's length) are valid with warnings. `bad_voice.abc` gets only warnings too (empty `V:`
  read as `V:1`, unknown clef ignored, short voice), but abc2midi writes its `%%MIDI program 999` as the data
  byte 0xE7, so the MIDI file is malformed and the tune is invalid (`corrupt_midi`), as mido also finds.
  Every other broken case has an abc2midi error or a missing header.
- One tune per text: a text with more than one `X:` line is invalid (`multiple_tunes`). With `-o` abc2midi
  writes only the first tune and does not even parse the others, so judging the first would call text
  valid that nobody checked; the training data holds one tune per sample, so a second `X:` is a defect of
  the sample. Text after a blank line that ends the tune is ignored, as abc2midi ignores it.
- With `midi_out`, the MIDI is kept whenever abc2midi finished and wrote a well-formed MIDI file, even for
  an invalid tune (the verdict says whether it is playable); otherwise nothing is written there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from abcmusic.smf import note_ons
from abcmusic.tools import require

DEFAULT_TIMEOUT_S = 10.0
# Output cap for the MIDI file and abc2midi's message log (bytes). A generated sample is a few KB of ABC;
# a 100 KB tune gives about 150 KB of MIDI.
DEFAULT_MAX_OUTPUT_BYTES = 8 * 1024 * 1024
# At most this many error reasons and warnings are kept per tune; the rest are counted in one last entry.
MAX_MESSAGES = 50

EMPTY = "empty"
MISSING_HEADER = "missing_header"
MULTIPLE_TUNES = "multiple_tunes"
TIMEOUT = "timeout"
ABC2MIDI_CRASH = "abc2midi_crash"
OUTPUT_TOO_LARGE = "output_too_large"
ABC2MIDI_ERROR = "abc2midi_error"
NO_MIDI_WRITTEN = "no_midi_written"
CORRUPT_MIDI = "corrupt_midi"
NO_NOTES = "no_notes"

X_LINE = re.compile(r"^[ \t]*X:", re.MULTILINE)
K_LINE = re.compile(r"^[ \t]*K:", re.MULTILINE)
ERROR_LINE = re.compile(r"^(?:%%|\*\*)?error\b|internal error", re.IGNORECASE)
ERROR_PREFIX = re.compile(r"^(?:%%|\*\*)?error(?:\*\*)?(?:\s+in\b)?\s*:?\s*", re.IGNORECASE)
WARNING_LINE = re.compile(r"^(?:\*\*)?warning\b", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reasons: tuple[str, ...]  # empty when valid; each "code: detail" or just "code"
    warnings: tuple[str, ...]  # abc2midi Warning lines (trimmed), recorded even when valid
    n_notes: int  # note-ons in the written MIDI (0 when none written)


def _invalid(*reasons: str, warnings: tuple[str, ...] = (), n_notes: int = 0) -> Verdict:
    return Verdict(False, tuple(reasons), warnings, n_notes)


def _capped(lines: list[str], what: str) -> list[str]:
    unique = list(dict.fromkeys(lines))
    if len(unique) <= MAX_MESSAGES:
        return unique
    return unique[:MAX_MESSAGES] + [f"... and {len(unique) - MAX_MESSAGES} more {what}"]


def _printable(line: str) -> str:
    # abc2midi echoes the offending byte ("Unrecognized character: \xc3"); keep reasons one readable line.
    return "".join(char if " " <= char <= "~" else f"\\x{ord(char):02x}" for char in line)


def parse_messages(log_text: str) -> tuple[list[str], list[str]]:
    """Split abc2midi's output into error messages (prefix removed) and warning lines (trimmed), as printable
    ASCII."""
    errors, warnings = [], []
    for raw_line in log_text.split("\n"):  # not splitlines(): it also breaks at \x85, \x1c and the like
        line = _printable(raw_line.rstrip("\r")).strip()
        if ERROR_LINE.search(line):
            errors.append(ERROR_PREFIX.sub("", line) or line)
        elif WARNING_LINE.match(line):
            warnings.append(line)
    return errors, warnings


def count_note_ons(midi: bytes) -> int:
    """Note-on events with velocity > 0 over all tracks of a standard MIDI file; ValueError if malformed."""
    return len(note_ons(midi))


def _run_abc2midi(work_dir: Path, timeout_s: float, max_output_bytes: int) -> tuple[str | None, str]:
    """Run abc2midi on work_dir/in.abc; return (failure reason or None, its message log)."""
    log_path = work_dir / "abc2midi.log"
    command = ["prlimit", f"--fsize={max_output_bytes}", "abc2midi", "in.abc", "-o", "out.mid"]
    with open(log_path, "wb") as log:
        # Own session, so that a timeout kills the whole process group (prlimit execs abc2midi in place).
        process = subprocess.Popen(
            command, cwd=work_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            return f"{TIMEOUT}: abc2midi ran longer than {timeout_s:g} s", ""
    log_text = log_path.read_bytes().decode("latin-1")
    midi_path = work_dir / "out.mid"
    if returncode == -signal.SIGXFSZ or (midi_path.exists() and midi_path.stat().st_size >= max_output_bytes) or (
        log_path.stat().st_size >= max_output_bytes
    ):
        return f"{OUTPUT_TOO_LARGE}: abc2midi output reached the {max_output_bytes} byte cap", log_text
    if returncode != 0 and "file runaway" in log_text:
        # abc2midi's own cap: it stops writing a MIDI track at about 500 KB and exits 1.
        return f"{OUTPUT_TOO_LARGE}: abc2midi stopped at its own MIDI size limit (file runaway)", log_text
    if returncode > 0 and parse_messages(log_text)[0]:
        return None, log_text  # abc2midi gave up on an error it reported (e.g. a zero length denominator)
    if returncode != 0:
        how = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit {returncode}"
        lines = [line.strip() for line in log_text.splitlines() if line.strip()]
        last = f": {lines[-1][:200]}" if lines else ""
        return f"{ABC2MIDI_CRASH}: {how}{last}", log_text
    return None, log_text


def validate_tune(
    abc_text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, midi_out: Path | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> Verdict:
    """Judge one tune with abc2midi (see the module docstring); never raises for any text.

    When midi_out is given and abc2midi writes a well-formed MIDI file, the MIDI is kept there (generate.py
    saves it per sample), for invalid tunes too; raises UserError when abc2midi or prlimit is not installed.
    """
    require("abc2midi", "prlimit")
    if not abc_text.strip():
        return _invalid(EMPTY)
    header_reasons = [f"{MISSING_HEADER}:{field}" for field, line in (("X", X_LINE), ("K", K_LINE))
                      if not line.search(abc_text)]
    n_tunes = len(X_LINE.findall(abc_text))
    if n_tunes > 1:
        header_reasons.append(f"{MULTIPLE_TUNES}: {n_tunes} X: fields (one tune per text)")
    if header_reasons:
        return _invalid(*header_reasons)

    with tempfile.TemporaryDirectory(prefix="abc2midi-") as tmp:
        work_dir = Path(tmp)
        (work_dir / "in.abc").write_bytes(abc_text.encode("utf-8", errors="replace"))
        failure, log_text = _run_abc2midi(work_dir, timeout_s, max_output_bytes)
        errors, warning_lines = parse_messages(log_text)
        warnings = tuple(_capped(warning_lines, "warnings"))
        if failure:
            return _invalid(failure, warnings=warnings)
        reasons = [f"{ABC2MIDI_ERROR}: {message}" for message in _capped(errors, "errors")]
        midi_path = work_dir / "out.mid"
        n_notes = 0
        if not midi_path.exists():
            reasons.append(NO_MIDI_WRITTEN)
        else:
            try:
                n_notes = count_note_ons(midi_path.read_bytes())
            except ValueError as error:
                reasons.append(f"{CORRUPT_MIDI}: {error}")
            else:
                if n_notes == 0:
                    reasons.append(NO_NOTES)
                if midi_out is not None:
                    Path(midi_out).parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(midi_path, midi_out)
    return Verdict(not reasons, tuple(reasons), warnings, n_notes)


def validate_tunes(
    abc_texts: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S, max_workers: int | None = None,
) -> list[Verdict]:
    """Same order as the input; runs abc2midi processes concurrently (threads: the work is subprocesses)."""
    require("abc2midi", "prlimit")
    if not abc_texts:
        return []
    workers = max_workers or min(len(abc_texts), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda text: validate_tune(text, timeout_s=timeout_s), abc_texts))


def valid_fraction(verdicts: Sequence[Verdict]) -> float:
    """Fraction of valid verdicts; 0.0 for none."""
    return sum(verdict.valid for verdict in verdicts) / len(verdicts) if verdicts else 0.0


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


def reason_counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """How many verdicts carry each reason code (a tune with 5 abc2midi errors counts once), most common first."""
    counts = Counter(code for verdict in verdicts for code in dict.fromkeys(map(reason_code, verdict.reasons)))
    return dict(counts.most_common())
