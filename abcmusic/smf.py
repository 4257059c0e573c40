"""Standard MIDI File primitives shared by the readers of MIDI bytes (text-event removal, note counting)."""

from __future__ import annotations


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
