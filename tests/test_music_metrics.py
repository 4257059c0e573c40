"""Unit tests for abcmusic.notation.music_metrics: hand-written tunes with known answers, garbage, and real demo tunes."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from abcmusic.notation.music_metrics import (
    default_unit_length,
    entropy_bits,
    key_signature,
    parse_meter,
    summarise,
    tune_metrics,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATASET = REPO_ROOT / "data" / "demo"
MAX_ENTROPY = math.log2(12)


def tune(body: str, meter: str | None = "4/4", unit: str | None = "1/8", key: str = "C") -> str:
    header = "X: 1\n"
    header += f"M: {meter}\n" if meter is not None else ""
    header += f"L: {unit}\n" if unit is not None else ""
    return header + f"Q:1/4=120\nK:{key}\n" + body + "\n"


def demo_test_tunes(count: int) -> list[str]:
    files = sorted((DEMO_DATASET / "test").glob("*.parquet"))
    if not files:
        pytest.skip(f"demo dataset not found at {DEMO_DATASET} (build it with prepare.py)")
    import pyarrow.parquet as pq

    tunes: list[str] = []
    for file in files:
        tunes += pq.read_table(file, columns=["abc"]).column("abc").to_pylist()
    return tunes[:count]


# --- rests and pitch classes --------------------------------------------------------------------------------

def test_a_tune_of_rests_has_rest_share_1_and_entropy_0():
    metrics = tune_metrics(tune("z8|z4 z4|x8|"))
    assert metrics.rest_share == 1.0
    assert metrics.n_rests == 4 and metrics.n_notes == 0
    assert metrics.pitch_class_entropy == 0.0
    assert metrics.pitch_classes == (0,) * 12
    assert metrics.bar_match_share == 1.0


def test_rest_share_is_by_duration_not_count():
    metrics = tune_metrics(tune("A2 z2 A4|"))
    assert metrics.rest_share == 0.25
    assert metrics.rest_duration == Fraction(1, 4) and metrics.note_duration == Fraction(3, 4)


def test_no_timed_music_gives_no_rest_share():
    metrics = tune_metrics(tune('"just an annotation" !trill!'))
    assert metrics.rest_share is None and metrics.n_notes == 0 and metrics.bar_match_share is None


def test_c_major_scale_has_seven_pitch_classes():
    metrics = tune_metrics(tune("CDEF GABc|"))
    assert metrics.pitch_classes == (2, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1)
    # one class at 2/8, six at 1/8: 0.25 * 2 + 6 * 0.125 * 3 bits
    assert metrics.pitch_class_entropy == pytest.approx(2.75)
    assert tune_metrics(tune("CDEF GAB z|")).pitch_class_entropy == pytest.approx(math.log2(7))


def test_chromatic_notes_reach_maximum_entropy():
    metrics = tune_metrics(tune("C^CD^DEF^FG^GA^AB|", meter="none"))
    assert metrics.pitch_classes == (1,) * 12
    assert metrics.pitch_class_entropy == pytest.approx(MAX_ENTROPY)


def test_key_signature_and_accidentals_carried_through_the_bar():
    # K:G sharpens F; =F cancels it for the rest of the bar, at that octave only; a new bar restores the key.
    metrics = tune_metrics(tune("F=FFf F2F2|F", key="G"))
    f_natural, f_sharp = 5, 6
    assert metrics.pitch_classes[f_natural] == 4  # =F F F2 F2
    assert metrics.pitch_classes[f_sharp] == 3  # the first F, f (another octave), F after the bar line


def test_key_signatures():
    assert key_signature("C") == {}
    assert key_signature("Am") == {}
    assert key_signature("D dor") == {}
    assert key_signature("F#") == {letter: 1 for letter in "FCGDAE"}
    assert key_signature("Bb") == {"B": -1, "E": -1}
    assert key_signature("Em") == {"F": 1}
    assert key_signature("Gmin") == {"B": -1, "E": -1}
    assert key_signature("none") == {}


def test_entropy_bounds():
    assert entropy_bits([0] * 12) == 0.0
    assert entropy_bits([5] + [0] * 11) == 0.0
    assert entropy_bits([1, 1] + [0] * 10) == pytest.approx(1.0)


# --- durations ----------------------------------------------------------------------------------------------

def test_duration_forms():
    # L:1/8; 1/2 + 1/4 + 1/4 + 3/2 + 3/2 + 2 units = 6 eighths
    metrics = tune_metrics(tune("A/ B// C/4 D3/2 E3/ F2", meter="none"))
    assert metrics.note_duration == Fraction(6, 8)


def test_chord_length_is_first_note_times_outer_length():
    metrics = tune_metrics(tune("[CEG]2 [C2E2G2] [CE]3 [C/E]/2", meter="none"))
    assert metrics.n_notes == 10
    assert metrics.note_duration == Fraction(2 + 2 + 3 + Fraction(1, 4), 8)


def test_midi2abc_chords_with_ties_fit_the_bar():
    metrics = tune_metrics(tune("[E-C-A,-E,-C,E,,]3[ECA,E,-]/2 z/2 [CEG]4|[CEG]8|"))
    assert metrics.n_bars_compared == 2 and metrics.n_bars_matching_meter == 2


def test_tuplets():
    assert tune_metrics(tune("(3ABC D", meter="none")).note_duration == Fraction(3, 8)
    assert tune_metrics(tune("(2AB", meter="none")).note_duration == Fraction(3, 8)
    assert tune_metrics(tune("(5ABCDE", meter="4/4")).note_duration == Fraction(2, 8)
    assert tune_metrics(tune("(5ABCDE", meter="6/8")).note_duration == Fraction(3, 8)
    assert tune_metrics(tune("(3:2:2AB C", meter="none")).note_duration == Fraction(4, 3) / 8 + Fraction(1, 8)
    chord_and_rest = tune_metrics(tune("(3[CE]z2B c", meter="none"))  # the chord and the rest count as elements
    assert chord_and_rest.note_duration == Fraction(2 * 2, 3) / 8 + Fraction(1, 8)
    assert chord_and_rest.rest_duration == Fraction(4, 3) / 8


def test_broken_rhythm():
    assert tune_metrics(tune("z>A", meter="none")).rest_share == 0.75
    assert tune_metrics(tune("z<A", meter="none")).rest_share == 0.25
    assert tune_metrics(tune("z>>A", meter="none")).rest_share == 7 / 8
    metrics = tune_metrics(tune("A>B c<d A2>B2|A>B c<d A2>B2|", meter="4/4"))
    assert metrics.n_bars_compared == 2 and metrics.n_bars_matching_meter == 2


def test_default_unit_length_follows_the_meter():
    assert default_unit_length(Fraction(2, 4)) == Fraction(1, 16)
    assert default_unit_length(Fraction(3, 4)) == Fraction(1, 8)
    assert default_unit_length(None) == Fraction(1, 8)
    # M:2/4 without L: -> sixteenths, A8 is a full bar; M:3/4 -> eighths, A6 is a full bar
    assert tune_metrics(tune("A8|B8|c8|", meter="2/4", unit=None)).bar_match_share == 1.0
    assert tune_metrics(tune("A6|B6|c6|", meter="3/4", unit=None)).bar_match_share == 1.0
    assert tune_metrics(tune("A6|B6|c6|", meter="2/4", unit=None)).bar_match_share == 0.0
    assert tune_metrics(tune("A4", meter=None, unit=None)).note_duration == Fraction(1, 2)


def test_common_and_cut_time():
    assert parse_meter("C") == 1 and parse_meter("C|") == 1 and parse_meter("none") is None
    assert parse_meter("6/8") == Fraction(3, 4) and parse_meter("2+3/8") == Fraction(5, 8)
    assert tune_metrics(tune("A8|B4B4|c8|", meter="C")).bar_match_share == 1.0
    assert tune_metrics(tune("A8|B4B4|c8|", meter="C|")).bar_match_share == 1.0
    assert tune_metrics(tune("A8|B4B4|c8|", meter="3/4")).bar_match_share == 0.0


# --- bars ---------------------------------------------------------------------------------------------------

def test_all_bars_match():
    metrics = tune_metrics(tune("|:A2B2c2|d6|e4f2:|[1 g6:|[2 a3b3|]", meter="3/4"))
    assert metrics.n_bars == 5 and metrics.n_bars_compared == 5
    assert metrics.bar_match_share == 1.0


def test_one_wrong_bar_gives_the_right_fraction():
    metrics = tune_metrics(tune("A2B2c2|d6|e4f4|g6|", meter="3/4"))
    assert (metrics.n_bars_compared, metrics.n_bars_matching_meter) == (4, 3)
    assert metrics.bar_match_share == 0.75
    short_in_the_middle = tune_metrics(tune("A6|B4|c6|d6|", meter="3/4"))
    assert short_in_the_middle.bar_match_share == 0.75


def test_pickup_and_final_short_bars_are_not_compared_but_long_ones_are():
    pickup = tune_metrics(tune("A2|B6|c6|d4|", meter="3/4"))
    assert (pickup.n_bars, pickup.n_bars_compared, pickup.n_bars_matching_meter) == (4, 2, 2)
    long_first = tune_metrics(tune("A8|B6|", meter="3/4"))
    assert (long_first.n_bars_compared, long_first.n_bars_matching_meter) == (2, 1)
    cut_off = tune_metrics(tune("A6|B6|c", meter="3/4"))  # a sample that stops mid-bar
    assert (cut_off.n_bars, cut_off.n_bars_compared, cut_off.bar_match_share) == (3, 2, 1.0)


def test_multi_measure_rest_counts_as_its_bars():
    metrics = tune_metrics(tune("A8|Z4|B8|"))
    assert (metrics.n_bars, metrics.n_bars_compared, metrics.n_bars_matching_meter) == (6, 6, 6)
    assert metrics.rest_share == pytest.approx(4 / 6)


def test_bars_are_counted_per_voice():
    # Voice 1's bar "e2 f2" is interrupted by a line of voice 2: counted per voice, every bar fits 2/4.
    text = tune("V:1\nA2B2|c4|e2\nV:2 clef=bass\nC4|D4|E4|\nV:1\nf2|g4|\nV:2\nF4|", meter="2/4")
    metrics = tune_metrics(text)
    assert metrics.n_voices == 2
    assert metrics.n_bars == 8 and metrics.bar_match_share == 1.0


def test_inline_meter_change():
    metrics = tune_metrics(tune("A4|B4|[M:3/4]c6|d6|[M:2/4]e4|f4|", meter="2/4"))
    assert metrics.n_bars_compared == 6 and metrics.bar_match_share == 1.0
    field_line = tune_metrics(tune("A4|B4|\nM:3/4\nc6|d6|\nL:1/16\ne12|", meter="2/4"))
    assert field_line.bar_match_share == 1.0


def test_grace_notes_decorations_and_annotations_take_no_time():
    metrics = tune_metrics(tune('"Am"A2 !trill!B2 {g}c2 +fermata+d2|~e2 .f2 Tg2 "^text"a2|'))
    assert metrics.n_notes == 8
    assert metrics.bar_match_share == 1.0
    assert metrics.n_unknown_chars == 0


def test_header_only_fields_and_comments_are_not_music():
    text = "X: 1\nT: title\nM: 4/4\nL: 1/8\nQ:1/4=90\nK:F# % 6 sharps\nV:1\n%%MIDI program 0\nw: la la\nF8|\n"
    metrics = tune_metrics(text)
    assert metrics.n_notes == 1 and metrics.pitch_classes[6] == 1 and metrics.n_unknown_chars == 0


# --- garbage ------------------------------------------------------------------------------------------------

NASTY = [
    "", "\n", "[", "[M:", "[M:3/4", "(", "(0", "(1AB", "(3:0:0ABC", "(3::0A", "A0", "A/0", "A0/0", "Z", "Z0",
    "K:", "M:0/0", "L:0/8", "L:x", "!unterminated", '"unterminated', "{", "{abc", "&", "&A2|", ">>>>", "A>>>>>B",
    "<A", "V:", "[V:]", "K:H#", "K:Z", "[]", "[]2", "[z]", "[C", "[C|D]", "|||||", "::::", ":", "^", "^^^^_c",
    "=_=C", "A,,,,,,''''", "é€\x00\t\r", "X:1\nK:C\n" + "A" * 5000, "(" * 100, "A" + "9" * 40,
    "(" + "9" * 30 + "AB", "M:99999999999999/1\nA|", "z/" * 50 + "|", "[[[[]]]]", "!!!!", "++++", "\\\\\\",
]


@pytest.mark.parametrize("text", NASTY)
def test_nasty_inputs_do_not_raise(text):
    check_invariants(tune_metrics(text))
    check_invariants(tune_metrics(tune(text)))


def check_invariants(metrics):
    assert metrics.rest_share is None or 0.0 <= metrics.rest_share <= 1.0
    assert 0.0 <= metrics.pitch_class_entropy <= MAX_ENTROPY + 1e-9
    assert sum(metrics.pitch_classes) == metrics.n_notes
    assert 0 <= metrics.n_bars_matching_meter <= metrics.n_bars_compared <= metrics.n_bars
    assert metrics.bar_match_share is None or 0.0 <= metrics.bar_match_share <= 1.0


def test_random_garbage_does_not_raise():
    alphabet = "ABCDEFGabcdefgzxZ^_=,'/0123456789|:[]()<>{}!+\"-. \n\\&%MLKV#bmeTy@$"
    rng = random.Random(1234)
    unknown_total = 0
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))
        metrics = tune_metrics(text)
        check_invariants(metrics)
        unknown_total += metrics.n_unknown_chars
    assert unknown_total > 0  # garbage is noticed, not silently read as music


def test_unknown_characters_are_counted():
    metrics = tune_metrics(tune("CDEF GABc | @@@ ### | c8 |"))
    assert metrics.n_unknown_chars == 6 and metrics.n_notes == 9


def test_shared_abc_validation_files(shared_data):
    folder = shared_data / "abc_validation"
    for path in sorted(folder.glob("*.abc")):
        check_invariants(tune_metrics(path.read_text(encoding="latin-1")))
    wrong_bars = tune_metrics((folder / "bad_barlen2.abc").read_text())
    # c8 | CDEF GABc d | c8 | c6 | c8 : the 9-unit bar and the short bar in the middle are wrong
    assert (wrong_bars.n_bars_compared, wrong_bars.n_bars_matching_meter) == (5, 3)
    good = tune_metrics((folder / "good.abc").read_text())
    assert good.bar_match_share == 1.0 and good.n_unknown_chars == 0


# --- batches ------------------------------------------------------------------------------------------------

def test_summarise_shows_samples_made_of_rests():
    music = tune_metrics(tune("CDEF GABc|CDEF GABc|", meter="4/4"))
    rests = tune_metrics(tune("z8|z8|", meter="4/4"))
    wrong = tune_metrics(tune("C8|D6|E8|", meter="4/4"))
    summary = summarise([music, rests, wrong])
    assert summary["tunes"] == 3
    assert summary["mean_rest_share"] == pytest.approx(1 / 3)
    assert summary["share_of_tunes_without_notes"] == pytest.approx(1 / 3)
    assert summary["mean_pitch_class_entropy"] == pytest.approx((2.75 + 0.0 + math.log2(3)) / 3)
    assert summary["bar_match_share"] == pytest.approx(6 / 7)  # D6 is short in the middle of its tune
    assert summary["bars_compared"] == 7
    assert summary["mean_tune_chars"] == pytest.approx(sum(m.n_chars for m in (music, rests, wrong)) / 3)
    assert summarise([music])["share_of_tunes_without_notes"] == 0.0
    assert summarise([]) == {"tunes": 0.0}


# --- real tunes ---------------------------------------------------------------------------------------------

def test_real_demo_tunes_mostly_fit_their_meter():
    tunes = demo_test_tunes(500)
    summary = summarise([tune_metrics(text) for text in tunes])
    # Measured on the demo test split: 0.995 of bars match (the rest are midi2abc tuplets that do not add up),
    # mean entropy 2.48 bits, rests 3% of the time, no unknown characters.
    assert summary["bar_match_share"] > 0.97
    assert 1.5 < summary["mean_pitch_class_entropy"] < 3.3
    assert summary["mean_rest_share"] < 0.15
    assert summary["unknown_char_share"] == 0.0
    assert summary["share_of_tunes_without_notes"] == 0.0


@pytest.mark.skipif(shutil.which("abc2midi") is None, reason="abc2midi is not installed")
def test_wrong_bars_agree_with_abc2midi_on_real_tunes(tmp_path):
    """abc2midi warns about every bar but the first whose length differs from the meter: after the first bar we
    must find the same number of wrong bars."""
    tunes = demo_test_tunes(120)
    disagreements = []
    abc2midi_total = 0
    for number, text in enumerate(tunes):
        path = tmp_path / "tune.abc"
        path.write_text(text)
        output = subprocess.run(["abc2midi", str(path), "-o", str(tmp_path / "tune.mid")],
                                capture_output=True, text=True, timeout=30).stdout
        abc2midi_wrong = len(re.findall(r"Bar \d+ has", output))
        abc2midi_total += abc2midi_wrong
        metrics = tune_metrics(text)
        ours_wrong = metrics.n_bars_compared - metrics.n_bars_matching_meter
        # We also compare a first bar that is longer than the meter: at most one more.
        if ours_wrong not in (abc2midi_wrong, abc2midi_wrong + 1):
            disagreements.append((number, ours_wrong, abc2midi_wrong))
    assert abc2midi_total > 0  # the sample holds wrong bars, so the comparison means something
    assert not disagreements
