"""Tests for abcmusic.notation.validity with the real abc2midi: the shared broken tunes, edge cases, limits, real tunes."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest

from abcmusic.notation.validity import (
    Verdict,
    count_note_ons,
    reason_code,
    reason_counts,
    valid_fraction,
    validate_tune,
    validate_tunes,
)
from conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("abc2midi") is None or shutil.which("prlimit") is None, reason="abc2midi or prlimit not installed"
)

VALID_TUNE = "X:1\nT:Inline\nM:3/4\nL:1/8\nK:G\nGAB cde|d2 B2 G2|ABc BAG|G6|]\n"
# Bar 2 has 6 eighths under M:4/4: abc2midi warns (not for bar 1, which it may take as an anacrusis).
WARNING_TUNE = "X:1\nT:Short bar\nM:4/4\nL:1/8\nK:C\nCDEF GABc|CDEF GA|c8|]\n"


def long_tune(n_bars: int) -> str:
    return "X:1\nT:Long\nM:4/4\nL:1/8\nK:C\n" + "CDEF GABc|" * n_bars + "\n"

# Each shared case: (valid, reason codes it must carry; for invalid cases the first is reasons[0]).
SHARED_CASES = {
    "good.abc": (True, ()),
    # Warn-only in abc2midi, hence valid (see the module docstring).
    "bad_barlen.abc": (True, ()),
    "bad_barlen2.abc": (True, ()),
    "bad_tie_slur.abc": (True, ()),
    "bad_chord.abc": (False, ("abc2midi_error",)),
    "bad_garbage.abc": (False, ("abc2midi_error",)),
    "bad_header.abc": (False, ("abc2midi_error", "no_midi_written")),
    "bad_noK.abc": (False, ("missing_header",)),
    "bad_notabc.abc": (False, ("missing_header",)),
    "bad_random.abc": (False, ("abc2midi_error",)),
    "bad_truncated.abc": (False, ("abc2midi_error",)),
    "bad_voice.abc": (False, ("corrupt_midi",)),
    "empty.abc": (False, ("empty",)),
}


def codes(verdict: Verdict) -> list[str]:
    return [reason_code(reason) for reason in verdict.reasons]


@pytest.mark.parametrize("name", sorted(SHARED_CASES))
def test_shared_case_is_judged_as_designed(shared_data: Path, name: str) -> None:
    expected_valid, expected_codes = SHARED_CASES[name]
    verdict = validate_tune((shared_data / "abc_validation" / name).read_text(encoding="latin-1"))
    assert verdict.valid is expected_valid, verdict
    if expected_valid:
        assert verdict.reasons == () and verdict.n_notes > 0
    else:
        assert codes(verdict)[0] == expected_codes[0], verdict
        assert set(expected_codes) <= set(codes(verdict)), verdict


def test_shared_cases_carry_the_expected_details(shared_data: Path) -> None:
    folder = shared_data / "abc_validation"

    def judge(name: str) -> Verdict:
        return validate_tune((folder / name).read_text(encoding="latin-1"))

    assert judge("bad_noK.abc").reasons == ("missing_header:K",)
    assert judge("bad_notabc.abc").reasons == ("missing_header:X", "missing_header:K")
    assert "Sustained notes beyond end of track" in judge("bad_truncated.abc").reasons[0]
    assert "Unrecognized character: @" in judge("bad_garbage.abc").reasons[0]
    # The warn-only cases keep abc2midi's warnings; bad_barlen's overlong first bar is taken as an anacrusis.
    assert any("time units" in warning for warning in judge("bad_barlen2.abc").warnings)
    assert any("time units" in warning for warning in judge("bad_tie_slur.abc").warnings)
    assert judge("bad_barlen.abc").warnings == ()
    assert judge("good.abc") == Verdict(True, (), (), 44)


def test_inline_valid_tune() -> None:
    verdict = validate_tune(VALID_TUNE)
    assert verdict == Verdict(valid=True, reasons=(), warnings=(), n_notes=16)


def test_missing_x_and_missing_k() -> None:
    assert validate_tune(VALID_TUNE.replace("X:1\n", "")).reasons == ("missing_header:X",)
    assert validate_tune(VALID_TUNE.replace("K:G\n", "")).reasons == ("missing_header:K",)


@pytest.mark.parametrize("text", ["", "  \n\n\t\n"])
def test_empty_text(text: str) -> None:
    assert validate_tune(text) == Verdict(False, ("empty",), (), 0)


def test_only_rests_has_no_notes() -> None:
    verdict = validate_tune("X:1\nT:Rests\nM:4/4\nL:1/8\nK:C\nz8|z4 z4|]\n")
    assert verdict == Verdict(False, ("no_notes",), (), 0)


def test_garbage_bytes_are_invalid_without_raising() -> None:
    garbage = bytes(random.Random(0).randrange(256) for _ in range(2000)).decode("latin-1")
    assert not validate_tune(garbage).valid
    verdict = validate_tune("X:1\nT:Garbage\nM:4/4\nL:1/8\nK:C\n" + garbage)
    assert not verdict.valid
    assert codes(verdict)[0] == "abc2midi_error"
    # Capped: 50 messages, one "... and N more errors" line, and the MIDI's own verdict.
    assert len(verdict.reasons) == 52 and verdict.reasons[50].startswith("abc2midi_error: ... and ")
    # Reasons stay one printable line each, even where abc2midi echoes raw bytes.
    assert all(reason.isprintable() and reason.isascii() for reason in verdict.reasons)


def test_warnings_are_kept_on_a_valid_tune() -> None:
    verdict = validate_tune(WARNING_TUNE)
    assert verdict.valid and verdict.reasons == ()
    assert len(verdict.warnings) == 1
    assert verdict.warnings[0].startswith("Warning in line-char") and "Bar 1" in verdict.warnings[0]


def test_more_than_one_tune_is_invalid() -> None:
    two_tunes = VALID_TUNE + "\n" + VALID_TUNE.replace("X:1", "X:2")
    assert codes(validate_tune(two_tunes)) == ["multiple_tunes"]


def test_timeout_kills_abc2midi_and_returns_a_verdict() -> None:
    # abc2midi is fast (1 ms for a short tune, which may finish before a tiny timeout is even polled), but
    # parsing these 5.5 MB of notes takes it about 0.7 s of CPU before it gives up.
    text = "X:1\nT:Huge\nM:4/4\nL:1/8\nK:C\n" + "CDEF GABc|\n" * 500_000
    start = time.monotonic()
    verdict = validate_tune(text, timeout_s=0.05)
    assert time.monotonic() - start < 5
    assert codes(verdict) == ["timeout"] and not verdict.valid and verdict.n_notes == 0


def test_abc2midi_size_limit_is_output_too_large() -> None:
    verdict = validate_tune(long_tune(10_000))  # 80,000 notes: abc2midi stops at about 500 KB of MIDI
    assert codes(verdict) == ["output_too_large"], verdict
    assert validate_tune(long_tune(1_000)).valid


def test_output_cap_kills_abc2midi_and_is_a_reason(tmp_path: Path) -> None:
    midi_out = tmp_path / "capped.mid"
    verdict = validate_tune(VALID_TUNE, midi_out=midi_out, max_output_bytes=100)  # the MIDI needs ~250 bytes
    assert codes(verdict) == ["output_too_large"]
    assert not midi_out.exists()


def test_midi_out_keeps_the_midi(tmp_path: Path) -> None:
    midi_out = tmp_path / "samples" / "tune.mid"
    verdict = validate_tune(VALID_TUNE, midi_out=midi_out)
    assert verdict.valid
    midi = midi_out.read_bytes()
    assert midi.startswith(b"MThd") and count_note_ons(midi) == verdict.n_notes == 16
    # Nothing is written where abc2midi did not run; an invalid tune's well-formed MIDI is kept.
    assert codes(validate_tune("K:C\nCDEF|\n", midi_out=tmp_path / "none.mid")) == ["missing_header"]
    assert not (tmp_path / "none.mid").exists()
    assert codes(validate_tune("X:1\nK:C\nz8|\n", midi_out=tmp_path / "rests.mid")) == ["no_notes"]
    assert count_note_ons((tmp_path / "rests.mid").read_bytes()) == 0


def test_count_note_ons_rejects_corrupt_midi(tmp_path: Path) -> None:
    midi_out = tmp_path / "tune.mid"
    validate_tune(VALID_TUNE, midi_out=midi_out)
    midi = midi_out.read_bytes()
    assert count_note_ons(midi) == 16
    for corrupt in (b"", b"not a midi file at all", midi[:-5], midi[:20], b"MThd" + midi[4:40]):
        with pytest.raises(ValueError):
            count_note_ons(corrupt)


def test_validate_tunes_keeps_order_and_judges_a_mix() -> None:
    texts = [VALID_TUNE, "", WARNING_TUNE, VALID_TUNE.replace("K:G\n", ""), "X:1\nK:C\nz8|\n", VALID_TUNE] * 3
    verdicts = validate_tunes(texts, max_workers=3)
    assert [v.valid for v in verdicts] == [True, False, True, False, False, True] * 3
    assert [codes(v)[:1] for v in verdicts[:6]] == [[], ["empty"], [], ["missing_header"], ["no_notes"], []]
    assert verdicts == [validate_tune(text) for text in texts]
    assert valid_fraction(verdicts) == pytest.approx(0.5)
    assert reason_counts(verdicts) == {"empty": 3, "missing_header": 3, "no_notes": 3}
    assert validate_tunes([]) == [] and valid_fraction([]) == 0.0


def test_reason_counts_counts_each_code_once_per_verdict() -> None:
    verdicts = [
        Verdict(False, ("abc2midi_error: a", "abc2midi_error: b", "no_midi_written"), (), 0),
        Verdict(False, ("abc2midi_error: c",), (), 3),
        Verdict(True, (), ("Warning ...",), 5),
    ]
    assert reason_counts(verdicts) == {"abc2midi_error": 2, "no_midi_written": 1}


def test_real_demo_tunes_are_mostly_valid() -> None:
    test_split = REPO_ROOT / "data" / "demo" / "test"
    parquet_files = sorted(test_split.glob("*.parquet"))
    if not parquet_files:
        pytest.skip(f"no demo dataset at {test_split} (run prepare.py)")
    import pyarrow.parquet as pq

    tunes = [abc for path in parquet_files for abc in pq.read_table(path, columns=["abc"]).column("abc").to_pylist()]
    verdicts = validate_tunes(tunes[:20])
    assert len(verdicts) == min(20, len(tunes)) > 0
    assert valid_fraction(verdicts) >= 0.8, reason_counts(verdicts)


def test_real_midi_converted_by_the_pipeline_is_mostly_valid(shared_data: Path, tmp_path: Path) -> None:
    """20 real MIDI files (POP909 and multi-track pop songs) through midi2abc and the cleaning rules."""
    from abcmusic.data.convert import ConvertLimits, convert_file
    from abcmusic.data.discover import find_midi_files
    from abcmusic.data.midi_folder import open_midi_folder

    root = shared_data / "midi"
    folder = open_midi_folder(root)
    paths = [path for path in find_midi_files(root) if not path.startswith("bad/")]
    converted = [convert_file(folder, path, tmp_path, ConvertLimits()) for path in paths[:: len(paths) // 20][:20]]
    tunes = [result.abc for result in converted if result.status == "ok"]
    assert len(tunes) >= 15
    verdicts = validate_tunes(tunes)
    assert valid_fraction(verdicts) >= 0.8, reason_counts(verdicts)
    assert all(verdict.n_notes > 0 for verdict in verdicts if verdict.valid)


def test_abc2midi_giving_up_on_a_reported_error_is_an_error_not_a_crash():
    # abc2midi exits 1 here after "note length denominator is zero or less" (a real model sample's bar).
    verdict = validate_tune("X:1\nM:4/4\nL:1/8\nK:C\nz2 A/23/2B/2 B2|\n")
    assert not verdict.valid
    assert any("denominator is zero" in r for r in verdict.reasons), verdict.reasons
    assert all(reason_code(r) != "abc2midi_crash" for r in verdict.reasons)
