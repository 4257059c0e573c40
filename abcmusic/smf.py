"""Standard MIDI File primitives shared by the readers of MIDI bytes (text-event removal, note reading)."""

from __future__ import annotations

from typing import NamedTuple


def read_varlen(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The variable-length quantity at data[pos:] (at most 4 bytes, none at or past `end`) and the position after."""
    value = 0
    for _ in range(4):
        if pos >= end:
            raise ValueError("variable-length number runs past the end of its track")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos
    raise ValueError("variable-length number longer than 4 bytes")


class NoteOn(NamedTuple):
    track: int
    tick: int  # absolute, in the file's ticks
    channel: int  # 0-15; 9 is General MIDI's drum channel
    pitch: int


def _track_note_ons(midi: bytes, track: int, pos: int, end: int) -> list[NoteOn]:
    # The hot loop of reading a corpus: one-byte delta times and two-byte channel messages take the short paths.
    notes = []
    tick = 0
    running_status = 0  # only channel messages set it; meta and sysex events leave it as it was
    while pos < end:
        if midi[pos] < 0x80:
            tick += midi[pos]
            pos += 1
        else:
            delta, pos = read_varlen(midi, pos, end)
            tick += delta
        if pos >= end:
            raise ValueError("track ends after a delta time")
        status = midi[pos]
        if status & 0x80:
            pos += 1
        elif running_status:
            status = running_status
        else:
            raise ValueError(f"data byte {status:#04x} with no running status")
        if status < 0xF0:
            running_status = status
            if status & 0xE0 == 0xC0:  # program change, channel pressure: one data byte
                if pos + 1 > end or midi[pos] & 0x80:
                    raise ValueError(f"bad data bytes after status {status:#04x}")
                pos += 1
                continue
            if pos + 2 > end or (midi[pos] | midi[pos + 1]) & 0x80:
                raise ValueError(f"bad data bytes after status {status:#04x}")
            if status & 0xF0 == 0x90 and midi[pos + 1]:
                notes.append(NoteOn(track, tick, status & 0x0F, midi[pos]))
            pos += 2
        elif status == 0xFF:
            if pos >= end:
                raise ValueError("meta event without a type")
            length, pos = read_varlen(midi, pos + 1, end)
            pos += length
        elif status in (0xF0, 0xF7):
            length, pos = read_varlen(midi, pos, end)
            pos += length
        else:
            raise ValueError(f"status byte {status:#04x} is not allowed in a MIDI file")
        if pos > end:
            raise ValueError("event runs past the end of its track")
    return notes


def note_ons(midi: bytes) -> list[NoteOn]:
    """Every note-on with velocity > 0 of a standard MIDI file, track by track in file order; ValueError if
    malformed."""
    if len(midi) < 14 or midi[:4] != b"MThd":
        raise ValueError("no MThd header")
    header_length = int.from_bytes(midi[4:8], "big")
    if header_length < 6 or 8 + header_length > len(midi):
        raise ValueError(f"bad header length {header_length}")
    declared_tracks = int.from_bytes(midi[10:12], "big")
    pos = 8 + header_length
    notes: list[NoteOn] = []
    tracks = 0
    while pos < len(midi):
        if pos + 8 > len(midi):
            raise ValueError("truncated chunk header")
        chunk_type = midi[pos : pos + 4]
        start = pos + 8
        end = start + int.from_bytes(midi[pos + 4 : pos + 8], "big")
        if end > len(midi):
            raise ValueError(f"chunk {chunk_type!r} runs past the end of the file")
        if chunk_type == b"MTrk":
            notes += _track_note_ons(midi, tracks, start, end)
            tracks += 1
        pos = end
    if tracks != declared_tracks:
        raise ValueError(f"header declares {declared_tracks} tracks, file has {tracks}")
    return notes
