"""A tune's melodic outline, read from its MIDI notes and reduced to what survives a change of key, tempo or
arrangement.

Each voice (a track's notes on one channel; the drum channel left out) becomes the sequence of its highest pitch
at each onset, with repeated pitches merged. Its *shingles* are the n-grams of the intervals between consecutive
pitches: transposing a voice leaves them unchanged, tempo and note lengths never enter them, and an added or
removed voice only adds or removes that voice's own shingles. The notes come from the MIDI file rather than from
midi2abc's ABC because midi2abc 3.59 spells some keys wrongly (in K:F# it writes F sharp as E, which ABC reads as
E sharp), so the same notes could read as different melodies.
"""

from __future__ import annotations

import itertools

import numpy as np

from abcmusic.smf import note_ons

SHINGLE_INTERVALS = 6  # intervals per shingle: seven notes, about two bars of a melody
MAX_INTERVAL = 24  # leaps beyond two octaves are clipped: octave-displaced arpeggios stay comparable
DRUM_CHANNEL = 9  # General MIDI's channel 10, counted from 0


def voice_pitches(midi: bytes) -> list[list[int]]:
    """Each pitched voice's top-note sequence with repeats merged, voices ordered by (track, channel); an
    unreadable file has no voices (ValueError is not raised: a tune without an outline is simply never grouped)."""
    try:
        notes = note_ons(midi)
    except (ValueError, IndexError):
        return []
    notes = sorted((n for n in notes if n.channel != DRUM_CHANNEL), key=lambda n: (n.track, n.channel, n.tick))
    voices = []
    for _, voice_notes in itertools.groupby(notes, key=lambda n: (n.track, n.channel)):
        sequence: list[int] = []
        for _, chord in itertools.groupby(voice_notes, key=lambda n: n.tick):
            top = max(n.pitch for n in chord)
            if not sequence or sequence[-1] != top:
                sequence.append(top)
        voices.append(sequence)
    return voices


def interval_shingles(pitches: list[int], size: int = SHINGLE_INTERVALS) -> np.ndarray:
    """The distinct n-grams of intervals of a pitch sequence, sorted; each n-gram is one exact uint64 (its
    intervals as the digits of a base-49 number), so equal n-grams are equal numbers on every machine."""
    if len(pitches) <= size:
        return np.zeros(0, dtype=np.uint64)
    intervals = np.clip(np.diff(np.asarray(pitches, dtype=np.int64)), -MAX_INTERVAL, MAX_INTERVAL)
    digits = (intervals + MAX_INTERVAL).astype(np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(digits, size)
    place_values = np.uint64(2 * MAX_INTERVAL + 1) ** np.arange(size, dtype=np.uint64)
    return np.unique(windows @ place_values)
