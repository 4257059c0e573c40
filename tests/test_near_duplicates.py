"""Near-duplicate detection, piece by piece: the strict SMF note reader (abcmusic.smf.note_ons, checked against
mido), melodic outlines and interval shingles (abcmusic.data.melody), sketching and grouping versions of a tune,
the held-out contamination meter and verbatim stretch hashes (abcmusic.data.near_duplicates), and the split key
of a group (abcmusic.data.assemble.split_key). MIDI files are built with mido; no Ray, no CLI."""

from __future__ import annotations

import hashlib
import io
import random

import mido
import numpy as np
import pytest

from abcmusic.data.assemble import split_key
from abcmusic.data.melody import interval_shingles, voice_pitches
from abcmusic.data.near_duplicates import (NUM_PERM, ContaminationMeter, HeldOutContent, NearDuplicateConfig,
                                           group_tunes, sketch_tune, stretch_hashes)
from abcmusic.smf import NoteOn, note_ons
from midi_bytes import varlen


def midi_file(*tracks, ticks_per_beat: int = 480, tempo: int = 500_000) -> bytes:
    """A format-1 file: a tempo track, then one track per argument, each a list of voices (channel, notes) where
    a note is (pitch or tuple of pitches sounding together, duration in ticks). Note-offs are velocity-0 note-ons."""
    midi = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo)]))
    for voices in tracks:
        events = []  # (absolute tick, note-off before note-on, channel, pitch, velocity)
        for channel, notes in voices:
            tick = 0
            for pitches, duration in notes:
                for pitch in (pitches if isinstance(pitches, tuple) else (pitches,)):
                    events += [(tick, 1, channel, pitch, 80), (tick + duration, 0, channel, pitch, 0)]
                tick += duration
        track, now = mido.MidiTrack([mido.MetaMessage("track_name", name="voice")]), 0
        for tick, _, channel, pitch, velocity in sorted(events):
            track.append(mido.Message("note_on", channel=channel, note=pitch, velocity=velocity, time=tick - now))
            now = tick
        midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def mido_note_ons(data: bytes) -> list[NoteOn]:
    notes = []
    for track, messages in enumerate(mido.MidiFile(file=io.BytesIO(data)).tracks):
        tick = 0
        for message in messages:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0:
                notes.append(NoteOn(track, tick, message.channel, message.note))
    return notes


def random_walk(seed: int, length: int = 50, start: int = 60) -> list[int]:
    rng = random.Random(seed)
    pitches = [start]
    for _ in range(length - 1):
        pitches.append(pitches[-1] + rng.choice([-4, -3, -2, -1, 1, 2, 3, 4]))
    return pitches


def chunk(kind: bytes, body: bytes) -> bytes:
    return kind + len(body).to_bytes(4, "big") + body


HEADER = b"MThd" + (6).to_bytes(4, "big") + bytes([0, 1, 0, 2, 0x01, 0xE0])
TRACK_0 = chunk(b"MTrk", bytes.fromhex("00 ff5103 07a120  00 ff5804 04021808  00 ff2f00"))
TRACK_1 = chunk(b"MTrk", b"".join([
    bytes.fromhex("00 ff0305") + b"piano",
    bytes.fromhex("00 c005  00 903c40  00 3e40"),  # program change, note-on, chord note in running status
    varlen(200) + bytes.fromhex("3c00"),  # running-status velocity 0: a note-off, not a note
    bytes.fromhex("00 ff0103") + b"abc" + bytes.fromhex("10 4050"),  # running status survives a meta event
    bytes.fromhex("00 804000  00 d010  05 20  00 e10040  00 f00301 02f7"),  # off, pressure x2, bend, sysex
    varlen(70000) + bytes.fromhex("92457f  00 994a60  00 ff2f00"),  # a long delta; a drum note is a note too
]))
HAND_MADE = HEADER + TRACK_0 + TRACK_1


def test_note_ons_match_mido_on_a_hand_made_file():
    expected = [NoteOn(1, 0, 0, 60), NoteOn(1, 0, 0, 62), NoteOn(1, 216, 0, 64), NoteOn(1, 70221, 2, 69),
                NoteOn(1, 70221, 9, 74)]
    assert mido_note_ons(HAND_MADE) == expected
    assert note_ons(HAND_MADE) == expected


@pytest.mark.parametrize("data", [
    HAND_MADE[:-5],  # truncated inside the last track
    b"MThx" + HAND_MADE[4:],  # bad header
    HAND_MADE[:13],  # shorter than a header
    HEADER[:11] + b"\x03" + HEADER[12:] + TRACK_0 + TRACK_1,  # declares 3 tracks, has 2
    HEADER + TRACK_0 + chunk(b"MTrk", bytes.fromhex("00 3c40 00 ff2f00")),  # data byte with no running status
    HEADER + TRACK_0 + chunk(b"MTrk", bytes.fromhex("00 f1 00 00 ff2f00")),  # a status byte not allowed in files
])
def test_note_ons_reject_malformed_files(data):
    with pytest.raises(ValueError):
        note_ons(data)


def test_note_ons_match_mido_on_a_real_file(shared_data):
    path = shared_data / "midi" / "pop909" / "001" / "001.mid"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    data = path.read_bytes()
    notes = note_ons(data)
    assert len(notes) > 1000 and notes == mido_note_ons(data)


def test_voice_pitches_take_top_notes_merge_repeats_and_skip_drums():
    data = midi_file(
        [(3, [(70, 240), (72, 240)]), (9, [(36, 120)] * 8), (1, [(60, 120), ((64, 67, 55), 120), (67, 120),
                                                                   (67, 240), (65, 120), (60, 120)])],
        [(0, [(50, 480), (52, 480)])],
    )
    assert voice_pitches(data) == [[60, 67, 65, 60], [70, 72], [50, 52]]
    assert voice_pitches(b"not midi") == []
    assert voice_pitches(HAND_MADE[:-5]) == []


def test_interval_shingles_are_transposition_invariant_and_exact():
    melody = random_walk(1)
    shingles = interval_shingles(melody)
    assert shingles.dtype == np.uint64 and np.array_equal(shingles, np.unique(shingles))
    assert 30 < len(shingles) <= len(melody) - 6
    for shift in (-5, 3, 7):
        assert np.array_equal(interval_shingles([p + shift for p in melody]), shingles)
    assert len(np.intersect1d(interval_shingles(random_walk(2)), shingles)) <= 2
    # Seven rising semitones: one shingle, six intervals of +1, each the digit 1 + 24 in base 49.
    assert interval_shingles(list(range(60, 67))).tolist() == [25 * sum(49**k for k in range(6))]
    assert len(interval_shingles(list(range(60, 66)))) == 0
    # Leaps beyond two octaves are clipped to two octaves.
    assert np.array_equal(interval_shingles([60, 90, 60, 62, 64, 65, 67, 69]),
                          interval_shingles([60, 84, 60, 62, 64, 65, 67, 69]))


def sketch(*tracks, **file_options):
    return sketch_tune(midi_file(*tracks, **file_options), "").voice_signatures


def test_versions_of_a_melody_are_grouped_under_the_smallest_id():
    melody = random_walk(7)
    accompaniment = [((48, 55), 960)] * 12
    tunes = {
        12: sketch([(0, [(p, 240) for p in melody])]),
        3: sketch([(0, [(p + 5, 240) for p in melody])]),  # transposed
        # Slower, other note lengths, chords under the melody and a new accompaniment track.
        7: sketch([(0, [((p - 2, p - 9) if i % 4 == 0 else p - 2, 120 * (1 + i % 3)) for i, p in enumerate(melody)])],
                  [(1, accompaniment)], tempo=900_000, ticks_per_beat=96),
        5: sketch([(0, [(p, 240) for p in random_walk(8)])]),  # another melody
    }
    assert all(signatures.shape == (1, NUM_PERM) and signatures.dtype == np.uint64
               for signatures in tunes.values())
    grouping = group_tunes(tunes.items(), threshold=0.2)
    assert grouping.group_of == {12: 3, 3: 3, 7: 3, 5: 5}
    assert grouping.groups() == [[3, 7, 12]]
    assert grouping.voices_compared == 4 and grouping.matched_pairs >= 2
    assert grouping.candidate_pairs >= grouping.matched_pairs
    reversed_grouping = group_tunes(reversed(list(tunes.items())), threshold=0.2)
    assert reversed_grouping.group_of == grouping.group_of
    assert reversed_grouping.matched_pairs == grouping.matched_pairs


def test_a_tune_too_short_to_compare_stays_alone():
    melody = random_walk(7)
    short = sketch_tune(midi_file([(0, [(p, 240) for p in melody[:9]])]), "")
    assert short.voice_signatures.shape == (0, NUM_PERM)
    grouping = group_tunes([(1, short.voice_signatures), (2, sketch([(0, [(p, 240) for p in melody])]))], 0.2)
    assert grouping.group_of == {1: 1, 2: 2} and grouping.groups() == [] and grouping.voices_compared == 1


def test_real_versions_of_one_song_are_grouped(shared_data):
    song = shared_data / "midi" / "pop909"
    paths = [song / "001" / f"{name}.mid" for name in ("001", "001-v1", "001-v2", "001-v3")] + [song / "002" / "002.mid"]
    if not all(path.is_file() for path in paths):
        pytest.skip("POP909 songs 001 and 002 not found")
    sketches = [(i, sketch_tune(path.read_bytes(), "").voice_signatures) for i, path in enumerate(paths)]
    assert group_tunes(sketches, threshold=0.2).groups() == [[0, 1, 2, 3]]


def values(*items: int) -> np.ndarray:
    return np.array(items, dtype=np.uint64)


def test_contamination_meter_counts_values_and_tunes_found_in_train():
    big = 2**63
    meter = ContaminationMeter({
        "val": HeldOutContent.of([(10, values(1, 2, 3, 4)), (11, values(5, 6, 7, 8)), (12, values())]),
        "test": HeldOutContent.of([(20, values(1, big + 1, big + 2, 9))]),
        "empty": HeldOutContent.of([]),
        "hollow": HeldOutContent.of([(30, values())]),
    })
    meter.add_train(values(3, 1, 100))
    meter.add_train(values())
    meter.add_train(values(big + 1, 2, 5, big + 3))
    summary = meter.finish()
    # val: 1, 2, 3 and 5 of 8 values found; tune 10 has 3 of 4 (mostly), tune 11 has 1 of 4; tune 12 is empty.
    assert summary["val"] == {"found_in_train": 0.5, "tunes_mostly_in_train": 0.5, "tunes_measured": 2}
    # test: 2 of 4 found, which is not more than half.
    assert summary["test"] == {"found_in_train": 0.5, "tunes_mostly_in_train": 0.0, "tunes_measured": 1}
    empty = {"found_in_train": None, "tunes_mostly_in_train": None, "tunes_measured": 0}
    assert summary["empty"] == empty and summary["hollow"] == empty
    nothing = ContaminationMeter({"val": HeldOutContent.of([])})
    nothing.add_train(values(1, 2))
    assert nothing.finish() == {"val": empty}


MUSIC = ["|: GABc dedB | dedB dedB | c2ec B2dB | c2A2 A2BA :|",
         "|: g2bg fgaf | gfga bgeg | f2d2 e2c2 | d2B2 BcdB :|"]


def test_stretch_hashes_ignore_header_lines_and_short_music():
    plain = stretch_hashes("X:1\nT:Tune\nM:4/4\nL:1/8\nK:G\n" + "\n".join(MUSIC) + "\n")
    assert 0 < len(plain) < 2 * (len(MUSIC[0]) + 1) and np.array_equal(plain, np.unique(plain))
    assert np.all(plain % np.uint64(8) == 0)
    decorated = f"X:9\nT:Other title\nM:3/4\nV:1\nK:D\n{MUSIC[0]}\n% a comment\nV:2\nK:Em\n{MUSIC[1]}\nw: la la\n"
    assert np.array_equal(stretch_hashes(decorated), plain)
    changed = stretch_hashes("X:1\nK:G\n" + "\n".join(MUSIC).replace("dedB", "edcB") + "\n")
    assert not np.array_equal(changed, plain)
    assert len(stretch_hashes("X:1\nT:A long title that is well over thirty-two characters\nK:C\nCDEF GABc|\n")) == 0


def test_split_key_names_groups_independently_of_member_order():
    a, b, c = (hashlib.sha256(text).hexdigest() for text in (b"a", b"b", b"c"))
    assert split_key([b]) == b
    low = min(a, b, c)
    assert split_key([a, b, c]) == split_key([c, a, b]) == hashlib.sha256(f"group of {low}".encode()).hexdigest()
    assert split_key([a, b, c]) != low


def test_near_duplicate_config_validates_mode_and_threshold():
    assert NearDuplicateConfig() == NearDuplicateConfig("group", 0.2)
    assert NearDuplicateConfig("off", 1.0).threshold == 1.0
    for mode, threshold in [("keep", 0.2), ("group", 0.0), ("drop", -0.1), ("group", 1.5), ("group", float("nan"))]:
        with pytest.raises(ValueError):
            NearDuplicateConfig(mode, threshold)
