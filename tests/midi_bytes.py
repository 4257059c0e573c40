"""Building MIDI bytes by hand in tests, independently of the module under test."""


def varlen(value: int) -> bytes:
    """Canonical MIDI variable-length quantity."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.insert(0, (value & 0x7F) | 0x80)
        value >>= 7
    return bytes(groups)
