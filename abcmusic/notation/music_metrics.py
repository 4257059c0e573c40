"""Musical metrics of ABC tunes (rests, pitch classes, bar lengths against the meter) from a tolerant body scanner.

The scanner reads the ABC that midi2abc writes and what a model samples in its style; it is not a full parser and
never raises: a character it cannot read is skipped and counted in `TuneMetrics.n_unknown_chars`.

Decisions:
- Durations are exact `Fraction`s of a whole note: a note's length multiplier times the unit length `L:`. Without
  `L:` the unit is the ABC standard's default: 1/16 when the header meter is below 3/4, else 1/8 (also for no meter).
  `M:C` is 4/4, `M:C|` is 2/2, `M:none` (or an unreadable meter) means bars are not compared with a meter.
- `rest_share` is by duration: rest time / (note time + rest time), a chord counting its duration once. It is None
  when the tune has no timed element at all.
- `pitch_classes` counts note heads (each note of a chord once; grace notes not at all), with the note's own
  accidental, else an accidental carried from earlier in the bar on the same letter and octave (ABC standard),
  else the key signature of `K:` (tonic plus mode; explicit extra accidentals in `K:` are ignored).
- `pitch_class_entropy` is in bits, 0 .. log2(12); it is 0.0 for a tune with no notes, so that a sample made of rests
  pulls a batch's mean entropy down instead of disappearing from it.
- Bars are counted per voice. A bar is the music between two bar lines (or a voice's start/end) that has some
  duration; `[1`/`|2` endings and repeat signs are bar lines like any other. The first and the last bar of a voice
  are not compared when shorter than the meter (a pickup, its complement at the end, or a sample cut off mid-bar);
  every other bar is compared, with exact arithmetic, against the meter in force when the bar ends. A multi-measure
  rest `Zn` makes its bar count as n bars of the meter. Music after `&` (voice overlay) is not timed.
- Broken rhythm `>`/`<` (and `>>`, `>>>`) scales the element before by 2 - 1/2^n and the element after by 1/2^n.
  Tuplets `(p:q:r` use the standard defaults (q = 3 for p in 2, 4, 8; q = 2 for 3 and 6; for 5, 7, 9, q = 3 in a
  compound meter else 2; r = p).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

from abcmusic.notation.cleaning import normalize_line_endings

PITCH_CLASS_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
LETTER_PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
SHARP_ORDER = "FCGDAEB"  # the first n letters are sharpened by a key with n sharps; reversed for flats
TONIC_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}
MODE_FIFTHS = {"maj": 0, "ion": 0, "mix": -1, "dor": -2, "min": -3, "aeo": -3, "m": -3, "phr": -4, "loc": -5,
               "lyd": 1}
DECORATION_LETTERS = set("~.HLMOPSTuvy")  # the standard's one-character decorations and the spacer y
IGNORED_CHARS = set(" \t\\-)`$*")  # line continuation, ties, slur ends, spacing: no effect on these metrics
FIELD_LINE = re.compile(r"^([A-Za-z]):(.*)$")
INLINE_FIELD = re.compile(r"\[([A-Za-z]):([^\]\n]*)\]?")
BAR_LINE = re.compile(r":*(?:\[\||\|+\]?|::+)(?::*)(?:\[?[0-9]+(?:[,-][0-9]+)*)?")
ENDING = re.compile(r"\[[0-9]+(?:[,-][0-9]+)*")
DURATION = re.compile(r"([0-9]*)((?:/[0-9]*)*)")
TUPLET = re.compile(r"\(([0-9]+)(?::([0-9]*))?(?::([0-9]*))?")
BROKEN_RHYTHM = re.compile(r">+|<+")
NOTE = re.compile(r"(\^\^|\^|__|_|=)?([A-Ga-g])([,']*)")


@dataclass
class TuneMetrics:
    n_chars: int
    n_notes: int  # note heads, chord notes counted one by one
    n_rests: int  # rest elements (z, x, Z)
    note_duration: Fraction  # whole notes, chords counted once
    rest_duration: Fraction
    rest_share: float | None  # rest_duration / (note_duration + rest_duration); None when both are 0
    pitch_classes: tuple[int, ...]  # 12 counts, C to B
    pitch_class_entropy: float  # bits; 0.0 when there are no notes
    n_bars: int  # bars with some duration, all voices
    n_bars_compared: int  # bars compared with a meter (see the module docstring for which are not)
    n_bars_matching_meter: int
    bar_match_share: float | None  # n_bars_matching_meter / n_bars_compared; None when nothing was compared
    n_voices: int  # voices with some timed music
    n_unknown_chars: int  # characters the scanner skipped without understanding them


def parse_meter(value: str) -> Fraction | None:
    """The length of a bar in whole notes, or None for free meter (`none`, empty, unreadable)."""
    value = value.strip()
    if value in ("C", "C|"):  # 4/4 and 2/2: the same bar length
        return Fraction(1)
    match = re.match(r"^\(?([0-9+ ]+)\)?\s*/\s*([0-9]+)", value)
    if match is None:
        return None
    try:
        numerator = sum(int(part) for part in match.group(1).split("+") if part.strip())
        denominator = int(match.group(2))
    except ValueError:
        return None
    if numerator <= 0 or denominator <= 0:
        return None
    return Fraction(numerator, denominator)


def is_compound(meter_value: str) -> bool:
    match = re.match(r"^\s*([0-9]+)\s*/\s*([0-9]+)", meter_value)
    return match is not None and int(match.group(1)) % 3 == 0 and int(match.group(1)) > 3


def parse_unit_length(value: str) -> Fraction | None:
    match = re.match(r"^\s*([0-9]+)\s*/\s*([0-9]+)", value)
    if match is None or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        return None
    return Fraction(int(match.group(1)), int(match.group(2)))


def default_unit_length(meter: Fraction | None) -> Fraction:
    """ABC standard: 1/16 when the meter is below 0.75, else 1/8; free meter gets 1/8."""
    return Fraction(1, 16) if meter is not None and meter < Fraction(3, 4) else Fraction(1, 8)


def key_signature(value: str) -> dict[str, int]:
    """Alteration in semitones per upper-case letter for a `K:` value such as `F#`, `Bb`, `Am`, `D dor`, `none`."""
    match = re.match(r"^\s*([A-G])([#b]?)\s*([A-Za-z]*)", value)
    if match is None:
        return {}
    fifths = TONIC_FIFTHS[match.group(1)] + {"#": 7, "b": -7, "": 0}[match.group(2)]
    mode = match.group(3).lower()
    if mode and mode != "m":
        mode = mode[:3]
    fifths += MODE_FIFTHS.get(mode, 0)  # an unknown word (e.g. `clef`) leaves the key major
    fifths = max(-7, min(7, fifths))
    if fifths >= 0:
        return {letter: 1 for letter in SHARP_ORDER[:fifths]}
    return {letter: -1 for letter in SHARP_ORDER[::-1][:-fifths]}


def entropy_bits(counts: Sequence[int]) -> float:
    total = sum(counts)
    if total == 0:
        return 0.0
    return max(0.0, -sum(c / total * math.log2(c / total) for c in counts if c))


@dataclass
class _Voice:
    meter: Fraction | None
    meter_value: str
    unit: Fraction
    key: dict[str, int]
    bar_duration: Fraction = Fraction(0)
    bar_measures: int = 1  # more than 1 when the bar holds a multi-measure rest
    bar_accidentals: dict[tuple[str, int], int] = field(default_factory=dict)
    in_overlay: bool = False
    tuplet_left: int = 0
    tuplet_factor: Fraction = Fraction(1)
    pending_factor: Fraction = Fraction(1)  # from a broken rhythm, for the next element
    last_element: tuple[bool, Fraction] | None = None  # (is_rest, duration) of the previous timed element
    bars: list[tuple[Fraction, Fraction | None, int]] = field(default_factory=list)  # duration, meter, measures


class _Scanner:
    """One pass over a tune: header fields set the defaults, body characters are read one element at a time."""

    def __init__(self) -> None:
        self.meter: Fraction | None = None
        self.meter_value = ""
        self.unit: Fraction | None = None
        self.key: dict[str, int] = {}
        self.in_header = True
        self.voices: dict[str, _Voice] = {}
        self.voice: _Voice | None = None
        self.n_notes = 0
        self.n_rests = 0
        self.note_duration = Fraction(0)
        self.rest_duration = Fraction(0)
        self.pitch_classes = [0] * 12
        self.n_unknown = 0

    # --- fields -------------------------------------------------------------------------------------------------

    def end_header(self) -> None:
        if self.in_header:
            self.in_header = False
            if self.unit is None:
                self.unit = default_unit_length(self.meter)

    def new_voice(self) -> _Voice:
        self.end_header()
        return _Voice(meter=self.meter, meter_value=self.meter_value, unit=self.unit, key=dict(self.key))

    def current_voice(self) -> _Voice:
        if self.voice is None:
            self.voice = self.voices.setdefault("", self.new_voice())
        return self.voice

    def apply_field(self, letter: str, value: str) -> None:
        value = value.split("%", 1)[0].strip()
        if letter == "V":
            if self.in_header:
                return  # a voice declared in the header: music for it follows after K:
            name = value.split()[0] if value.split() else ""
            if name not in self.voices:
                self.voices[name] = self.new_voice()
            self.voice = self.voices[name]
            return
        if letter not in "MLK":
            return
        # In the header the fields set the defaults every voice starts from; in the body, the current voice's.
        target = self if self.in_header else self.current_voice()
        if letter == "M":
            target.meter, target.meter_value = parse_meter(value), value
        elif letter == "L":
            target.unit = parse_unit_length(value) or target.unit
        else:
            target.key = key_signature(value)
            self.end_header()  # K: ends the header; in the body it changes nothing more

    # --- timed elements and bars --------------------------------------------------------------------------------

    def add_element(self, voice: _Voice, is_rest: bool, multiplier: Fraction, measures: int = 0) -> None:
        duration = multiplier * voice.pending_factor
        voice.pending_factor = Fraction(1)
        if voice.tuplet_left > 0:
            duration *= voice.tuplet_factor
            voice.tuplet_left -= 1
        self.account(voice, is_rest, duration)
        voice.last_element = (is_rest, duration)
        if measures > 1:
            voice.bar_measures += measures - 1

    def account(self, voice: _Voice, is_rest: bool, duration: Fraction) -> None:
        if is_rest:
            self.rest_duration += duration
        else:
            self.note_duration += duration
        if not voice.in_overlay:
            voice.bar_duration += duration

    def broken_rhythm(self, voice: _Voice, symbol: str, count: int) -> None:
        if voice.last_element is None:
            self.n_unknown += count
            return
        shortened = Fraction(1, 2 ** count)
        lengthened = 2 - shortened
        before, after = (lengthened, shortened) if symbol == ">" else (shortened, lengthened)
        is_rest, duration = voice.last_element
        self.account(voice, is_rest, duration * (before - 1))
        voice.last_element = (is_rest, duration * before)
        voice.pending_factor = after

    def close_bar(self, voice: _Voice) -> None:
        if voice.bar_duration > 0:
            voice.bars.append((voice.bar_duration, voice.meter, voice.bar_measures))
        voice.bar_duration = Fraction(0)
        voice.bar_measures = 1
        voice.bar_accidentals = {}
        voice.in_overlay = False
        voice.last_element = None

    # --- body ---------------------------------------------------------------------------------------------------

    def read_duration(self, line: str, pos: int) -> tuple[Fraction, int]:
        match = DURATION.match(line, pos)
        digits, slashes = match.group(1), match.group(2)
        numerator = int(digits) if digits else 1
        denominator = 1
        for part in slashes.split("/")[1:]:
            denominator *= int(part) if part else 2
        if denominator == 0:
            return Fraction(0), match.end()
        return Fraction(numerator, denominator), match.end()

    def read_note(self, voice: _Voice, line: str, pos: int) -> tuple[Fraction, int] | None:
        """A note with its length at `pos`: counts its pitch class; None when there is no note there."""
        match = NOTE.match(line, pos)
        if match is None:
            return None
        accidental, letter, octave_marks = match.groups()
        upper = letter.upper()
        octave = (1 if letter.islower() else 0) + octave_marks.count("'") - octave_marks.count(",")
        if accidental is not None:
            alteration = {"^^": 2, "^": 1, "__": -2, "_": -1, "=": 0}[accidental]
            voice.bar_accidentals[(upper, octave)] = alteration
        else:
            alteration = voice.bar_accidentals.get((upper, octave), voice.key.get(upper, 0))
        self.pitch_classes[(LETTER_PITCH_CLASS[upper] + alteration) % 12] += 1
        self.n_notes += 1
        return self.read_duration(line, match.end())

    def skip_delimited(self, line: str, pos: int, closing: str) -> int:
        end = line.find(closing, pos + 1)
        if end < 0:
            self.n_unknown += 1
            return pos + 1
        return end + 1

    def read_chord(self, voice: _Voice, line: str, pos: int) -> int:
        """`[` at pos opens a chord: its length is its first note's length times a length after `]`."""
        first_length: Fraction | None = None
        pos += 1
        while pos < len(line) and line[pos] != "]":
            char = line[pos]
            note = self.read_note(voice, line, pos)
            if note is not None:
                length, pos = note
                if first_length is None:
                    first_length = length
            elif char in "!+\"":
                pos = self.skip_delimited(line, pos, char)
            elif char in IGNORED_CHARS or char in DECORATION_LETTERS or char == "(":
                pos += 1
            elif char in "|[":
                break  # a chord left open: the rest is read as ordinary music
            else:
                self.n_unknown += 1
                pos += 1
        closed = pos < len(line) and line[pos] == "]"
        outer_length, pos = self.read_duration(line, pos + 1) if closed else (Fraction(1), pos)
        if first_length is None:
            self.n_unknown += 1  # `[]`: no note to time
        else:
            self.add_element(voice, False, first_length * outer_length * voice.unit)
        return pos

    def read_tuplet(self, voice: _Voice, match: re.Match) -> None:
        p = int(match.group(1))
        if p < 2:
            self.n_unknown += len(match.group())
            return
        if match.group(2):
            q = int(match.group(2))
        elif p in (3, 6):
            q = 2
        elif p in (2, 4, 8):
            q = 3
        else:
            q = 3 if is_compound(voice.meter_value) else 2
        voice.tuplet_factor = Fraction(q, p)
        voice.tuplet_left = int(match.group(3)) if match.group(3) else p

    def scan_music_line(self, line: str) -> None:
        voice = self.current_voice()
        pos = 0
        while pos < len(line):
            char = line[pos]
            if char == "%":
                return
            note = self.read_note(voice, line, pos)
            if note is not None:
                length, pos = note
                self.add_element(voice, False, length * voice.unit)
                continue
            if char in "zx":
                length, pos = self.read_duration(line, pos + 1)
                self.n_rests += 1
                self.add_element(voice, True, length * voice.unit)
                continue
            if char == "Z":
                match = DURATION.match(line, pos + 1)
                measures = int(match.group(1)) if match.group(1) else 1
                self.n_rests += 1
                bar = voice.meter if voice.meter is not None else Fraction(1)
                self.add_element(voice, True, bar * measures, measures)
                pos = match.end()
                continue
            if char == "[":
                inline = INLINE_FIELD.match(line, pos)
                if inline is not None:
                    self.apply_field(inline.group(1), inline.group(2))
                    voice = self.current_voice()
                    pos = inline.end()
                    continue
                ending = ENDING.match(line, pos)
                if ending is not None:
                    pos = ending.end()
                    continue
            bar = BAR_LINE.match(line, pos)
            if bar is not None and bar.end() > pos:
                self.close_bar(voice)
                pos = bar.end()
                continue
            if char == "[":
                pos = self.read_chord(voice, line, pos)
                continue
            if char in "><":
                run = BROKEN_RHYTHM.match(line, pos)
                self.broken_rhythm(voice, char, min(len(run.group()), 3))
                pos = run.end()
                continue
            if char == "(":
                tuplet = TUPLET.match(line, pos)
                if tuplet is not None:
                    self.read_tuplet(voice, tuplet)
                    pos = tuplet.end()
                else:
                    pos += 1  # a slur
                continue
            if char in "!+\"":
                pos = self.skip_delimited(line, pos, char)
                continue
            if char == "{":
                pos = self.skip_delimited(line, pos, "}")  # grace notes take no time
                continue
            if char == "&":
                voice.in_overlay = True
                pos += 1
                continue
            if char not in IGNORED_CHARS and char not in DECORATION_LETTERS:
                self.n_unknown += 1
            pos += 1

    def scan(self, text: str) -> None:
        for line in normalize_line_endings(text).split("\n"):
            stripped = line.strip()
            if not stripped or stripped.startswith("%"):
                continue
            field_match = FIELD_LINE.match(stripped)
            if field_match is not None:
                self.apply_field(field_match.group(1), field_match.group(2))
                continue
            self.end_header()  # music before K: is read anyway: samples may lack headers
            self.scan_music_line(line)

    def bar_counts(self) -> tuple[int, int, int]:
        n_bars = n_compared = n_matching = 0
        for voice in self.voices.values():
            self.close_bar(voice)
            for index, (duration, meter, measures) in enumerate(voice.bars):
                n_bars += measures
                if meter is None:
                    continue
                expected = meter * measures
                if duration < expected and index in (0, len(voice.bars) - 1):
                    continue  # pickup, its complement, or a sample cut off mid-bar
                n_compared += measures
                n_matching += measures if duration == expected else 0
        return n_bars, n_compared, n_matching


def tune_metrics(text: str) -> TuneMetrics:
    """Metrics of one tune; never raises on malformed text."""
    scanner = _Scanner()
    scanner.scan(text)
    n_bars, n_compared, n_matching = scanner.bar_counts()
    timed = scanner.note_duration + scanner.rest_duration
    return TuneMetrics(
        n_chars=len(text),
        n_notes=scanner.n_notes,
        n_rests=scanner.n_rests,
        note_duration=scanner.note_duration,
        rest_duration=scanner.rest_duration,
        rest_share=float(scanner.rest_duration / timed) if timed > 0 else None,
        pitch_classes=tuple(scanner.pitch_classes),
        pitch_class_entropy=entropy_bits(scanner.pitch_classes),
        n_bars=n_bars,
        n_bars_compared=n_compared,
        n_bars_matching_meter=n_matching,
        bar_match_share=n_matching / n_compared if n_compared else None,
        n_voices=sum(1 for voice in scanner.voices.values() if voice.bars),
        n_unknown_chars=scanner.n_unknown,
    )


def summarise(metrics: Sequence[TuneMetrics]) -> dict[str, float]:
    """Batch numbers. Means are over tunes (each tune weighs the same) except `bar_match_share`, which pools bars,
    and `pooled_pitch_class_entropy`, the entropy of all tunes' pitch classes added together."""
    n_tunes = len(metrics)
    if n_tunes == 0:
        return {"tunes": 0.0}
    rest_shares = [m.rest_share for m in metrics if m.rest_share is not None]
    pooled_classes = [sum(m.pitch_classes[i] for m in metrics) for i in range(12)]
    n_compared = sum(m.n_bars_compared for m in metrics)
    n_chars = sum(m.n_chars for m in metrics)
    return {
        "tunes": float(n_tunes),
        "mean_rest_share": sum(rest_shares) / len(rest_shares) if rest_shares else math.nan,
        "share_of_tunes_without_notes": sum(m.n_notes == 0 for m in metrics) / n_tunes,
        "mean_pitch_class_entropy": sum(m.pitch_class_entropy for m in metrics) / n_tunes,
        "pooled_pitch_class_entropy": entropy_bits(pooled_classes),
        "bar_match_share": sum(m.n_bars_matching_meter for m in metrics) / n_compared if n_compared else math.nan,
        "bars_compared": float(n_compared),
        "mean_bars_per_tune": sum(m.n_bars for m in metrics) / n_tunes,
        "mean_tune_chars": n_chars / n_tunes,
        "mean_notes_per_tune": sum(m.n_notes for m in metrics) / n_tunes,
        "unknown_char_share": sum(m.n_unknown_chars for m in metrics) / n_chars if n_chars else 0.0,
    }
