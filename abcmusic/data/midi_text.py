"""Remove text-like meta events from a Standard MIDI File, byte for byte, before midi2abc sees it.

midi2abc pastes text, lyric and marker events into the music as raw text. This works on the bytes rather than
through a MIDI library because it must be fast (it runs once per file, and midi2abc itself takes ~7 ms) and must
pass through whatever it does not understand unchanged: midi2abc accepts files (out-of-range data bytes, say)
that strict parsers reject, so only the events we remove are ever interpreted.
"""

from __future__ import annotations

import struct

from abcmusic.smf import read_varlen

# Meta event types 0x01-0x0F are all text: text, copyright, track name, instrument, lyric, marker, cue, ...
TEXT_META_TYPES = frozenset(range(0x01, 0x10))
# Data bytes after a channel status byte, by the status's high nibble.
CHANNEL_DATA_LENGTH = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}


class NotMidiError(ValueError):
    """The bytes do not start with a Standard MIDI File header."""


def _write_varlen(value: int) -> bytes:
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(groups))


def _strip_track(track: bytes) -> tuple[bytes, int]:
    """Return the track without its text meta events, and how many were removed.

    The delta time of a removed event is added to the next kept event, so every other event keeps its time.
    Raises ValueError (or IndexError) if the track cannot be walked.
    """
    kept = bytearray()
    pos = 0
    pending_delta = 0
    running_status: int | None = None
    removed = 0
    while pos < len(track):
        delta, pos = read_varlen(track, pos, len(track))
        event_start = pos
        status = track[pos]
        if status == 0xFF:
            meta_type = track[pos + 1]
            length, pos = read_varlen(track, pos + 2, len(track))
            pos += length
            if pos > len(track):
                raise ValueError("meta event runs past the end of the track")
            if meta_type in TEXT_META_TYPES:
                pending_delta += delta
                removed += 1
                continue
        elif status in (0xF0, 0xF7):
            length, pos = read_varlen(track, pos + 1, len(track))
            pos += length
        elif status & 0x80:
            running_status = status
            pos += 1 + CHANNEL_DATA_LENGTH[status >> 4]
        elif running_status is not None:
            pos += CHANNEL_DATA_LENGTH[running_status >> 4]
        else:
            raise ValueError("data byte with no running status")
        kept += _write_varlen(pending_delta + delta)
        kept += track[event_start:pos]
        pending_delta = 0
    return bytes(kept), removed


def strip_text_events(midi: bytes) -> tuple[bytes, int]:
    """Return the MIDI file without text meta events, and how many were removed.

    A track that cannot be walked (truncated, corrupt) is copied unchanged for midi2abc to judge.
    Raises NotMidiError if the bytes are not a Standard MIDI File.
    """
    if len(midi) < 14 or midi[:4] != b"MThd":
        raise NotMidiError("no MThd header")
    header_length = struct.unpack(">I", midi[4:8])[0]
    kept = bytearray(midi[: 8 + header_length])
    pos = 8 + header_length
    removed = 0
    while pos + 8 <= len(midi):
        chunk_start = pos
        chunk_type = midi[pos:pos + 4]
        length = struct.unpack(">I", midi[pos + 4:pos + 8])[0]
        body = midi[pos + 8:pos + 8 + length]
        pos += 8 + length
        if chunk_type == b"MTrk" and len(body) == length:
            try:
                stripped, removed_here = _strip_track(body)
            except (ValueError, IndexError, KeyError):
                pass  # keep the original bytes
            else:
                kept += chunk_type + struct.pack(">I", len(stripped)) + stripped
                removed += removed_here
                continue
        kept += midi[chunk_start:pos]
    kept += midi[pos:]  # a truncated trailing chunk travels as it was
    return bytes(kept), removed
