"""Unit tests for abcmusic.data.midi_text.strip_text_events, on hand-built and real Standard MIDI Files."""

from __future__ import annotations

import io
import struct

import pytest

from abcmusic.data.midi_text import NotMidiError, strip_text_events
from abcmusic.testing import SHARED_DATA
from midi_bytes import varlen

MIDI_DATA = SHARED_DATA / "midi"


# --- building MIDI files by hand ----------------------------------------------------------------------------

def meta(meta_type: int, data: bytes) -> bytes:
    return bytes([0xFF, meta_type]) + varlen(len(data)) + data


def event(delta: int, body: bytes) -> bytes:
    return varlen(delta) + body


def chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">I", len(body)) + body


def header(n_tracks: int, midi_format: int = 1, division: int = 480) -> bytes:
    return b"MThd" + struct.pack(">IHHH", 6, midi_format, n_tracks, division)


END_OF_TRACK = meta(0x2F, b"")
TEMPO_120 = meta(0x51, bytes.fromhex("07A120"))
TIME_SIGNATURE = meta(0x58, bytes([4, 2, 24, 8]))
SYSEX = bytes.fromhex("F0057E7F0901F7")  # F0, length 5, 7E 7F 09 01 F7 (GM system on)

# (delta, event bytes, is_text) for a conductor track and a piano track. The piano track uses running status
# (status byte omitted) right after a note-on and right after a removed lyric.
CONDUCTOR_EVENTS = [
    (0, meta(0x03, b"Conductor"), True),  # track name
    (0, TEMPO_120, False),
    (0, TIME_SIGNATURE, False),
    (1920, meta(0x06, b"Chorus"), True),  # marker
    (0, END_OF_TRACK, False),
]
PIANO_EVENTS = [
    (0, meta(0x03, b"Piano"), True),  # track name
    (0, bytes([0xC0, 0x05]), False),  # program change
    (0, bytes([0x90, 0x3C, 0x64]), False),  # note on C4
    (0, bytes([0x43, 0x64]), False),  # running status: note on G4
    (100, meta(0x05, b"la"), True),  # lyric
    (100, bytes([0x3C, 0x00]), False),  # running status: note off C4 (velocity 0)
    (240, SYSEX, False),
    (60, bytes([0x90, 0x43, 0x00]), False),  # note off G4
    (10, meta(0x01, b"some text"), True),  # text
    (20, meta(0x06, b"m"), True),  # marker
    (30, bytes([0xB0, 0x07, 0x64]), False),  # control change: volume
    (0, meta(0x51, bytes.fromhex("0F4240")), False),  # tempo change (not text)
    (5, meta(0x05, b"end"), True),  # lyric
    (7, END_OF_TRACK, False),
]


def track_with_text(events) -> bytes:
    return b"".join(event(delta, body) for delta, body, _ in events)


def track_without_text(events) -> bytes:
    """The expected result: text events left out, each one's delta added to the next kept event."""
    out, carried = b"", 0
    for delta, body, is_text in events:
        if is_text:
            carried += delta
        else:
            out += event(carried + delta, body)
            carried = 0
    return out


def hand_built_file() -> bytes:
    return header(2) + chunk(b"MTrk", track_with_text(CONDUCTOR_EVENTS)) + chunk(b"MTrk", track_with_text(PIANO_EVENTS))


def hand_built_file_stripped() -> bytes:
    return (header(2) + chunk(b"MTrk", track_without_text(CONDUCTOR_EVENTS))
            + chunk(b"MTrk", track_without_text(PIANO_EVENTS)))


def absolute_events(events) -> list[tuple[int, bytes]]:
    out, now = [], 0
    for delta, body, is_text in events:
        now += delta
        if not is_text:
            out.append((now, body))
    return out


# --- hand-built files ---------------------------------------------------------------------------------------

def test_strip_removes_text_events_and_carries_their_delta_times():
    stripped, removed = strip_text_events(hand_built_file())
    assert removed == 7
    assert stripped == hand_built_file_stripped()


def test_strip_carried_delta_needs_a_longer_varlen():
    # 100 + 100 = 200 ticks does not fit in one varlen byte: the kept event must get 0x81 0x48.
    stripped, _ = strip_text_events(hand_built_file())
    assert bytes([0x81, 0x48, 0x3C, 0x00]) in stripped
    assert bytes([0x8F, 0x00]) + END_OF_TRACK in stripped  # the 1920-tick marker's delta moved to end of track


def test_strip_keeps_absolute_times_of_other_events_per_mido():
    mido = pytest.importorskip("mido")
    stripped, _ = strip_text_events(hand_built_file())
    parsed = mido.MidiFile(file=io.BytesIO(stripped))
    assert parsed.ticks_per_beat == 480
    assert len(parsed.tracks) == 2
    for track, events in zip(parsed.tracks, (CONDUCTOR_EVENTS, PIANO_EVENTS)):
        now, seen = 0, []
        for message in track:
            now += message.time
            seen.append((now, bytes(message.bytes())))
        expected = []
        for tick, body in absolute_events(events):
            if body[0] < 0x80:  # running status in the file; mido gives the full message
                body = bytes([0x90]) + body
            elif body[0] == 0xF0:  # mido's sysex bytes: F0 data F7 without the length
                body = bytes([0xF0]) + body[2:]
            expected.append((tick, body))
        assert seen == expected


def test_strip_keeps_non_text_meta_events():
    stripped, _ = strip_text_events(hand_built_file())
    assert TEMPO_120 in stripped
    assert TIME_SIGNATURE in stripped
    assert meta(0x51, bytes.fromhex("0F4240")) in stripped
    assert stripped.count(END_OF_TRACK) == 2
    for text in (b"Conductor", b"Chorus", b"Piano", b"la", b"some text", b"end"):
        assert text not in stripped


def test_strip_removes_every_text_meta_type_01_to_0f():
    events = [(i, meta(t, b"x%d" % t), True) for i, t in enumerate(range(0x01, 0x10))]
    events += [(3, bytes([0x90, 0x3C, 0x64]), False), (0, meta(0x7F, b"\x00\x00\x41"), False),
               (0, meta(0x20, b"\x00"), False), (1, END_OF_TRACK, False)]
    midi = header(1, midi_format=0) + chunk(b"MTrk", track_with_text(events))
    stripped, removed = strip_text_events(midi)
    assert removed == 15
    assert stripped == header(1, midi_format=0) + chunk(b"MTrk", track_without_text(events))
    # the 15 removed deltas (0 + 1 + ... + 14 = 105) plus the note's 3 arrive at the note
    assert stripped[22:25] == varlen(108) + b"\x90\x3C"


def test_file_without_text_events_comes_back_byte_identical():
    midi = hand_built_file_stripped()
    stripped, removed = strip_text_events(midi)
    assert removed == 0
    assert stripped == midi


def test_strip_is_idempotent():
    once, _ = strip_text_events(hand_built_file())
    twice, removed = strip_text_events(once)
    assert removed == 0
    assert twice == once


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"MThd",
        b"MThd\x00\x00\x00\x06\x00\x01",  # shorter than a header
        b"RIFF\x00\x00\x00\x10RMIDdata" + b"\x00" * 16,
        b"X: 1\nT: not a midi file\nK:C\nabc|\n",
        b"\x00" * 64,
    ],
)
def test_non_midi_input_raises_not_midi_error(data):
    with pytest.raises(NotMidiError):
        strip_text_events(data)


def test_not_midi_error_is_a_value_error():
    assert issubclass(NotMidiError, ValueError)


VALID_TRACK_EVENTS = [(0, meta(0x03, b"Lead"), True), (0, bytes([0x90, 0x3C, 0x64]), False),
                      (480, bytes([0x80, 0x3C, 0x40]), False), (0, END_OF_TRACK, False)]


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00\x3C\x40", id="data-byte-without-running-status"),
        pytest.param(b"\x00\xF4\x01\x02", id="undefined-status-F4"),
        pytest.param(b"\x80\x80\x80\x80\x00\x90\x3C\x64", id="varlen-longer-than-4-bytes"),
        pytest.param(b"\x00\xFF\x03\x40short", id="meta-longer-than-track"),
    ],
)
def test_track_that_cannot_be_walked_is_copied_unchanged(garbage):
    # the broken track starts with a text event: it must stay, since the track is copied as it was
    broken_body = event(0, meta(0x03, b"Broken")) + event(10, meta(0x51, bytes.fromhex("07A120"))) + garbage
    midi = header(2) + chunk(b"MTrk", track_with_text(VALID_TRACK_EVENTS)) + chunk(b"MTrk", broken_body)
    stripped, removed = strip_text_events(midi)
    assert removed == 1  # only the valid track's name
    assert stripped == header(2) + chunk(b"MTrk", track_without_text(VALID_TRACK_EVENTS)) + chunk(b"MTrk", broken_body)


def test_truncated_track_does_not_raise_and_keeps_its_bytes():
    truncated = b"MTrk" + struct.pack(">I", 100) + event(0, meta(0x03, b"Cut")) + b"\x00\x90\x3C"
    midi = header(2) + chunk(b"MTrk", track_with_text(VALID_TRACK_EVENTS)) + truncated
    stripped, removed = strip_text_events(midi)
    assert removed == 1
    assert stripped == header(2) + chunk(b"MTrk", track_without_text(VALID_TRACK_EVENTS)) + truncated
    assert stripped.endswith(truncated)


def test_trailing_bytes_shorter_than_a_chunk_header_are_kept():
    tail = b"\x00\x01\x02"
    midi = header(1) + chunk(b"MTrk", track_with_text(VALID_TRACK_EVENTS)) + tail
    stripped, removed = strip_text_events(midi)
    assert removed == 1
    assert stripped == header(1) + chunk(b"MTrk", track_without_text(VALID_TRACK_EVENTS)) + tail


def test_unknown_chunk_is_copied_unchanged():
    alien = chunk(b"XFIH", event(0, meta(0x03, b"not a track")))
    midi = header(1) + alien + chunk(b"MTrk", track_with_text(VALID_TRACK_EVENTS))
    stripped, removed = strip_text_events(midi)
    assert removed == 1
    assert stripped == header(1) + alien + chunk(b"MTrk", track_without_text(VALID_TRACK_EVENTS))


def test_longer_header_is_kept():
    long_header = b"MThd" + struct.pack(">IHHH", 8, 1, 1, 480) + b"\xAA\xBB"
    midi = long_header + chunk(b"MTrk", track_with_text(VALID_TRACK_EVENTS))
    stripped, removed = strip_text_events(midi)
    assert removed == 1
    assert stripped == long_header + chunk(b"MTrk", track_without_text(VALID_TRACK_EVENTS))


# --- real files, checked with mido ---------------------------------------------------------------------------

TEXT_TYPES = {"text", "copyright", "track_name", "instrument_name", "lyrics", "marker", "cue_marker"}


def real_midi_files() -> list:
    if not MIDI_DATA.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"shared data not found at {MIDI_DATA}"))]
    files = sorted((MIDI_DATA / "multitrack").glob("*.mid")) + sorted(MIDI_DATA.glob("pop909/*/*.mid"))[:40]
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no MIDI files under {MIDI_DATA}"))]
    return [pytest.param(path, id=str(path.relative_to(MIDI_DATA))) for path in files]


def mido_events(data: bytes):
    """(track, absolute tick, type, bytes) of every message, as mido reads the file."""
    import mido

    parsed = mido.MidiFile(file=io.BytesIO(data))
    out = []
    for index, track in enumerate(parsed.tracks):
        now = 0
        for message in track:
            now += message.time
            out.append((index, now, message.type, tuple(message.bytes())))
    return out


def is_text_meta(message_bytes: tuple) -> bool:
    return message_bytes[0] == 0xFF and 0x01 <= message_bytes[1] <= 0x0F


@pytest.mark.parametrize("path", real_midi_files())
def test_real_file_text_events_removed_and_other_events_unchanged(path):
    pytest.importorskip("mido")
    original = path.read_bytes()
    stripped, removed = strip_text_events(original)
    before = mido_events(original)
    after = mido_events(stripped)

    assert not [e for e in after if e[2] in TEXT_TYPES]
    assert not [e for e in after if is_text_meta(e[3])]
    assert removed == sum(1 for e in before if is_text_meta(e[3]))
    assert [e for e in after if e[2] not in TEXT_TYPES] == [e for e in before if e[2] not in TEXT_TYPES]


def test_real_multitrack_files_do_have_text_events():
    """Guards the test above against passing vacuously: these files carry lyrics and markers."""
    folder = MIDI_DATA / "multitrack"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    total = sum(strip_text_events(p.read_bytes())[1] for p in sorted(folder.glob("*.mid")))
    assert total > 100
