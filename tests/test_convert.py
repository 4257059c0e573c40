"""convert_file with the real midi2abc on the shared MIDI files, and find_midi_files."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from abcmusic.data.convert import ConvertLimits, content_hash, convert_file
from abcmusic.data.discover import find_midi_files
from abcmusic.data.midi_folder import open_midi_folder
from abcmusic.data.midi_text import strip_text_events
from abcmusic.testing import SHARED_DATA
from midi_bytes import varlen

MIDI_DATA = SHARED_DATA / "midi"
POP909_FILE = "pop909/001/001.mid"

needs_midi2abc = pytest.mark.skipif(
    shutil.which("midi2abc") is None or shutil.which("prlimit") is None, reason="midi2abc or prlimit not installed"
)


@pytest.fixture
def midi_root() -> Path:
    if not MIDI_DATA.is_dir():
        pytest.skip(f"shared data not found at {MIDI_DATA}")
    return MIDI_DATA


@pytest.fixture
def work_dir(tmp_path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def convert(root: Path, source_path: str, work: Path, limits: ConvertLimits = ConvertLimits()):
    result = convert_file(open_midi_folder(root), source_path, work, limits)
    assert list(work.iterdir()) == [], "convert_file must leave its work folder empty"
    assert result.source_path == source_path
    return result


# --- failures -----------------------------------------------------------------------------------------------

@needs_midi2abc
def test_midi_without_notes_fails_with_no_notes(midi_root, work_dir):
    result = convert(midi_root, "bad/empty_no_notes.mid", work_dir)
    assert (result.status, result.reason) == ("failed", "no_notes")
    assert "no notes" in result.detail
    assert result.abc == "" and result.content_hash == ""


@needs_midi2abc
def test_runaway_midi2abc_output_is_capped(midi_root, work_dir):
    started = time.monotonic()
    result = convert(midi_root, "bad/fuzzed_huge_output.mid", work_dir)
    elapsed = time.monotonic() - started
    assert (result.status, result.reason) == ("failed", "output_too_large")
    assert elapsed < 5.0
    assert result.abc == ""


@needs_midi2abc
def test_output_cap_is_the_configured_limit(midi_root, work_dir):
    # a normal song is larger than 1 KiB of ABC: with that cap it is reported as too large
    result = convert(midi_root, POP909_FILE, work_dir, ConvertLimits(max_abc_bytes=1024))
    assert (result.status, result.reason) == ("failed", "output_too_large")
    assert "1024" in result.detail


@needs_midi2abc
@pytest.mark.parametrize("name", ["midi2abc_note_too_short.mid", "midi2abc_fails_jigs168.mid"])
def test_files_midi2abc_rejects_fail_with_midi2abc_error(midi_root, work_dir, name):
    result = convert(midi_root, f"bad/{name}", work_dir)
    assert (result.status, result.reason) == ("failed", "midi2abc_error")
    assert result.detail.startswith("exit 1: ")
    assert result.abc == ""


@needs_midi2abc
def test_corrupt_control_event_still_converts(midi_root, work_dir):
    result = convert(midi_root, "bad/ValueError_Control168.mid", work_dir)
    assert result.status == "ok", result
    assert result.abc.startswith("X:")
    assert re.fullmatch(r"[0-9a-f]{64}", result.content_hash)


def test_text_file_named_mid_is_not_midi(tmp_path, work_dir):
    (tmp_path / "x.mid").write_text("X: 1\nT: this is ABC, not MIDI\nK:C\nabc|\n")
    result = convert(tmp_path, "x.mid", work_dir)
    assert (result.status, result.reason) == ("failed", "not_midi")


def test_missing_file_is_unreadable(tmp_path, work_dir):
    result = convert(tmp_path, "missing.mid", work_dir)
    assert (result.status, result.reason) == ("failed", "unreadable")


def test_midi_over_the_size_limit_is_refused(tmp_path, work_dir):
    (tmp_path / "big.mid").write_bytes(b"MThd" + b"\x00" * 200)
    result = convert(tmp_path, "big.mid", work_dir, ConvertLimits(max_midi_bytes=100))
    assert (result.status, result.reason) == ("failed", "midi_too_large")


@needs_midi2abc
def test_timeout(midi_root, work_dir):
    result = convert(midi_root, POP909_FILE, work_dir, ConvertLimits(timeout_s=0.0001))
    assert (result.status, result.reason) == ("failed", "timeout")
    assert "longer than" in result.detail


# --- success ------------------------------------------------------------------------------------------------

@needs_midi2abc
def test_pop909_file_converts_to_clean_abc(midi_root, work_dir):
    result = convert(midi_root, POP909_FILE, work_dir)
    assert result.status == "ok", result
    assert result.reason == ""
    assert re.fullmatch(r"[0-9a-f]{64}", result.content_hash)
    assert result.content_hash == content_hash(result.abc)
    assert result.abc.startswith("X:")
    lines = result.abc.split("\n")
    assert any(line.startswith("K:") for line in lines)
    assert not any(line.startswith("T:") for line in lines)
    assert result.abc.endswith("\n") and "\n\n" not in result.abc
    assert all(0x20 <= ord(c) <= 0x7E or c == "\n" for c in result.abc)
    assert "%" not in result.abc.replace("%%MIDI program", "").replace("%%MIDI channel", "")
    # 001.mid has 3 text events (track names): they were removed before midi2abc saw the file
    assert result.text_events_removed == strip_text_events((midi_root / POP909_FILE).read_bytes())[1] > 0
    assert "remove_title" in result.changed_by


@needs_midi2abc
def test_conversion_is_deterministic(midi_root, work_dir):
    first = convert(midi_root, POP909_FILE, work_dir)
    second = convert(midi_root, POP909_FILE, work_dir)
    assert first.abc == second.abc and first.content_hash == second.content_hash


@needs_midi2abc
@pytest.mark.skipif(shutil.which("abc2midi") is None, reason="abc2midi is not installed")
def test_pop909_raw_output_fails_abc2midi_but_converted_output_passes(midi_root, work_dir, tmp_path):
    """001.mid ends with a held note: midi2abc's own output has a dangling tie that convert_file removes."""
    raw_abc = tmp_path / "raw.abc"
    subprocess.run(["midi2abc", str(midi_root / POP909_FILE), "-o", str(raw_abc)], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    result = convert(midi_root, POP909_FILE, work_dir)
    (tmp_path / "clean.abc").write_text(result.abc)

    def errors(name: str) -> list[str]:
        completed = subprocess.run(["abc2midi", name, "-o", name + ".mid"], cwd=tmp_path, capture_output=True,
                                   text=True, stdin=subprocess.DEVNULL, timeout=30)
        return [line for line in completed.stdout.splitlines() if line.startswith("Error")]

    assert any("Could not find note to be tied" in line for line in errors("raw.abc"))
    assert errors("clean.abc") == []
    assert "strip_final_tie" in result.changed_by


def _small_midi(with_text: bool) -> bytes:
    """One track, three notes; optionally a track name, a text event, a lyric and a marker between them."""
    def meta(meta_type: int, data: bytes) -> bytes:
        return bytes([0xFF, meta_type]) + varlen(len(data)) + data

    events = [
        (0, meta(0x03, b"LEADTRACKNAME"), True),
        (0, bytes([0x90, 60, 100]), False),
        (480, meta(0x01, b"HELLOTEXT"), True),
        (0, bytes([0x80, 60, 64]), False),
        (0, bytes([0x90, 62, 100]), False),
        (240, meta(0x05, b"LYRICWORD"), True),
        (240, bytes([0x80, 62, 64]), False),
        (0, meta(0x06, b"MARKERX"), True),
        (0, bytes([0x90, 64, 100]), False),
        (480, bytes([0x80, 64, 64]), False),
        (0, meta(0x2F, b""), False),
    ]
    track, carried = b"", 0
    for delta, body, is_text in events:
        if is_text and not with_text:
            carried += delta
            continue
        track += varlen(carried + delta) + body
        carried = 0
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(track)) + track


@needs_midi2abc
def test_text_events_do_not_reach_the_abc(tmp_path, work_dir):
    (tmp_path / "with_text.mid").write_bytes(_small_midi(with_text=True))
    (tmp_path / "without_text.mid").write_bytes(_small_midi(with_text=False))
    # midi2abc itself pastes the lyric into the tune
    subprocess.run(["midi2abc", str(tmp_path / "with_text.mid"), "-o", str(tmp_path / "raw.abc")],
                   capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    assert "LYRICWORD" in (tmp_path / "raw.abc").read_text("latin-1")

    with_text = convert(tmp_path, "with_text.mid", work_dir)
    without_text = convert(tmp_path, "without_text.mid", work_dir)
    assert with_text.status == without_text.status == "ok"
    assert with_text.text_events_removed == 4
    assert without_text.text_events_removed == 0
    for text in ("LEADTRACKNAME", "HELLOTEXT", "LYRICWORD", "MARKERX"):
        assert text not in with_text.abc
    assert with_text.abc == without_text.abc
    assert with_text.content_hash == without_text.content_hash


@needs_midi2abc
def test_multitrack_files_convert(midi_root, work_dir):
    files = sorted(p.name for p in (midi_root / "multitrack").glob("*.mid"))
    assert len(files) >= 10
    for name in files:
        result = convert(midi_root, f"multitrack/{name}", work_dir)
        assert result.status == "ok", (name, result.reason, result.detail)
        assert result.text_events_removed > 0
        assert "V:2" in result.abc


# --- find_midi_files ----------------------------------------------------------------------------------------

def test_find_midi_files(tmp_path):
    for relative in [
        "b.mid", "a.MID", "sub/c.midi", "sub/deeper/d.MIDI", "sub/deeper/e.Mid", "z/y.mid",
        "notes.txt", "sub/song.abc", "sub/x.mid.bak", "sub/midi", "mid",
        ".hidden.mid", ".hiddendir/f.mid", "sub/.git/g.mid", "sub/.h.midi",
    ]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"MThd")
    assert find_midi_files(tmp_path) == sorted(
        ["a.MID", "b.mid", "sub/c.midi", "sub/deeper/d.MIDI", "sub/deeper/e.Mid", "z/y.mid"]
    )


def test_find_midi_files_sorted_paths_relative_to_root(tmp_path):
    names = ["B/2.mid", "a/10.mid", "a/2.mid", "A.mid", "a.mid"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = find_midi_files(tmp_path)
    assert found == sorted(names)
    assert all(not Path(p).is_absolute() for p in found)


def test_find_midi_files_empty_and_missing(tmp_path):
    assert find_midi_files(tmp_path) == []
    assert find_midi_files(tmp_path / "missing") == []


def test_find_midi_files_on_shared_data(midi_root):
    found = find_midi_files(midi_root / "bad")
    assert found == sorted(p.name for p in (midi_root / "bad").iterdir() if p.suffix.lower() in (".mid", ".midi"))
    assert "empty_no_notes.mid" in found
