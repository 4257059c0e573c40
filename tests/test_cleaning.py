"""Unit tests for the ABC cleaning rules in abcmusic.notation.cleaning, on real midi2abc-style text."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from abcmusic.notation.cleaning import (
    REWRITES,
    RULE_NAMES,
    check_structure,
    clean_tune,
    drop_repeated_program,
    keep_midi_directives,
    normalize_line_endings,
    printable_ascii,
    remove_empty_lines,
    remove_title,
    strip_comments,
    strip_final_tie,
    strip_trailing_whitespace,
)

# What midi2abc writes for a two-voice piece (trailing space after "E6", a key comment, a track-name comment,
# a repeated program in voice 2, and a tie on the final chord of voice 2).
MIDI2ABC_TUNE = (
    "X: 1\n"
    "T: from /some/path/001.mid\n"
    "M: 2/4\n"
    "L: 1/16\n"
    "Q:1/4=90\n"
    "K:F# % 6 sharps\n"
    "V:1\n"
    "%%MIDI program 0\n"
    "z8| \\\n"
    "G4- G/2z3z/2|\n"
    "E6 \n"
    "V:2\n"
    "%Piano\n"
    "%%MIDI program 0\n"
    "%%MIDI program 0\n"
    "[E-C-A,-E,-C,E,,]3[ECA,E,-]/2\n"
)

MIDI2ABC_TUNE_CLEANED = (
    "X: 1\n"
    "M: 2/4\n"
    "L: 1/16\n"
    "Q:1/4=90\n"
    "K:F#\n"
    "V:1\n"
    "%%MIDI program 0\n"
    "z8| \\\n"
    "G4- G/2z3z/2|\n"
    "E6\n"
    "V:2\n"
    "%%MIDI program 0\n"
    "[E-C-A,-E,-C,E,,]3[ECA,E,]/2\n"
)


# --- normalize_line_endings -------------------------------------------------------------------------------

def test_normalize_line_endings_crlf_and_cr_become_lf():
    assert normalize_line_endings("X: 1\r\nK:C\rabc\n") == "X: 1\nK:C\nabc\n"


def test_normalize_line_endings_leaves_lf_text_alone():
    text = "X: 1\nK:C\nabc|\n"
    assert normalize_line_endings(text) == text


def test_normalize_line_endings_does_not_double_crlf():
    # "\r\n" must become one newline, not two.
    assert normalize_line_endings("a\r\nb").split("\n") == ["a", "b"]


# --- printable_ascii ----------------------------------------------------------------------------------------

def test_printable_ascii_tabs_become_spaces():
    assert printable_ascii("z8|\tG4-\tG/2|") == "z8| G4- G/2|"


def test_printable_ascii_removes_non_ascii_and_control_characters():
    assert printable_ascii("ab\u00e9c\x00d\x7fe\u2019f\x1bg") == "abcdefg"


def test_printable_ascii_keeps_newlines_and_all_printable_ascii():
    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    text = printable + "\n" + printable + "\n"
    assert printable_ascii(text) == text


def test_printable_ascii_removes_latin1_bytes_leaked_from_midi_text():
    # convert.py decodes midi2abc's output as latin-1: bytes 0x80-0xff arrive as U+0080-U+00FF.
    leaked = bytes([0x41, 0xE4, 0x42, 0xFF, 0x43, 0x80]).decode("latin-1")
    assert printable_ascii(leaked) == "ABC"


# --- strip_comments -----------------------------------------------------------------------------------------

def test_strip_comments_drops_whole_line_comments():
    text = "V:2\n%Piano\n% Last note suggests minor mode tune\nabc|"
    assert strip_comments(text) == "V:2\nabc|"


def test_strip_comments_keeps_double_percent_directives():
    text = "V:1\n%%MIDI program 0\n%%clef bass\nabc|"
    assert strip_comments(text) == text


def test_strip_comments_removes_trailing_comment_on_key_line():
    assert strip_comments("K:F# % 6 sharps") == "K:F#"
    assert strip_comments("K:Bb % 2 flats\nV:1") == "K:Bb\nV:1"


def test_strip_comments_removes_trailing_comment_on_music_line():
    assert strip_comments("abc def|%bar 3") == "abc def|"


def test_strip_comments_keeps_escaped_percent():
    assert strip_comments("w:50\\% off") == "w:50\\% off"
    # an escaped % followed by a real comment: only the comment goes
    assert strip_comments("w:50\\% off % a comment") == "w:50\\% off"


# --- keep_midi_directives -----------------------------------------------------------------------------------

def test_keep_midi_directives_keeps_program_and_channel():
    text = "V:1\n%%MIDI program 30\n%%MIDI channel 10\nabc|"
    assert keep_midi_directives(text) == text


def test_keep_midi_directives_drops_other_directives():
    text = "V:3\n%%clef bass\n%%MIDI program 0\n%%MIDI transpose -12\n%%MIDI programme 3\nabc|"
    assert keep_midi_directives(text) == "V:3\n%%MIDI program 0\nabc|"


def test_keep_midi_directives_leaves_non_directive_lines():
    text = "X: 1\nK:C\nabc|\n"
    assert keep_midi_directives(text) == text


# --- drop_repeated_program ----------------------------------------------------------------------------------

def test_drop_repeated_program_within_one_voice():
    text = "V:2\n%%MIDI program 0\n%%MIDI program 0\n[CEG]2"
    assert drop_repeated_program(text) == "V:2\n%%MIDI program 0\n[CEG]2"


def test_drop_repeated_program_keeps_same_program_in_a_new_voice():
    text = "V:1\n%%MIDI program 0\nabc|\nV:2\n%%MIDI program 0\ndef|"
    assert drop_repeated_program(text) == text


def test_drop_repeated_program_keeps_program_changes():
    text = "V:1\n%%MIDI program 0\nabc|\n%%MIDI program 30\ndef|\n%%MIDI program 0\ngab|"
    assert drop_repeated_program(text) == text


def test_drop_repeated_program_drops_repeat_after_music_in_same_voice():
    text = "V:1\n%%MIDI program 5\nabc|\n%%MIDI program 5\ndef|"
    assert drop_repeated_program(text) == "V:1\n%%MIDI program 5\nabc|\ndef|"


# --- remove_title -------------------------------------------------------------------------------------------

def test_remove_title_drops_the_midi2abc_title():
    text = "X: 1\nT: from /some/path/001.mid\nM: 2/4\nK:C\nabc|"
    assert remove_title(text) == "X: 1\nM: 2/4\nK:C\nabc|"


def test_remove_title_keeps_other_lines():
    text = "X: 1\nM: 2/4\nK:C\nabc|"
    assert remove_title(text) == text


# --- strip_trailing_whitespace ------------------------------------------------------------------------------

def test_strip_trailing_whitespace():
    assert strip_trailing_whitespace("E6 \nz8|  \nabc") == "E6\nz8|\nabc"


def test_strip_trailing_whitespace_keeps_leading_and_inner_spaces_and_continuations():
    text = "z8| \\\n G4- G/2z3z/2|"
    assert strip_trailing_whitespace(text) == text


# --- remove_empty_lines -------------------------------------------------------------------------------------

def test_remove_empty_lines_drops_blank_and_whitespace_only_lines():
    # Blank lines go; the newline that terminates the last line stays.
    assert remove_empty_lines("X: 1\n\nK:C\n   \nabc|\n\n") == "X: 1\nK:C\nabc|\n"
    assert remove_empty_lines("X: 1\n\nK:C\nabc|") == "X: 1\nK:C\nabc|"


def test_remove_empty_lines_keeps_text_without_empty_lines():
    text = "X: 1\nK:C\nabc|"
    assert remove_empty_lines(text) == text


# --- strip_final_tie ----------------------------------------------------------------------------------------

def test_strip_final_tie_single_note():
    text = "X: 1\nK:C\nV:1\nz8|\nabc b6-"
    assert strip_final_tie(text) == "X: 1\nK:C\nV:1\nz8|\nabc b6"


def test_strip_final_tie_single_note_without_voices():
    assert strip_final_tie("X: 1\nK:C\nz8|\nG4- G/2z3z/2 b6-|") == "X: 1\nK:C\nz8|\nG4- G/2z3z/2 b6|"


def test_strip_final_tie_note_with_accidental_and_octave():
    assert strip_final_tie("X: 1\nK:C\nV:1\nz2 ^c'2-") == "X: 1\nK:C\nV:1\nz2 ^c'2"


def test_strip_final_tie_ties_inside_final_chord():
    text = "X: 1\nK:C\nV:2\n[E-C-A,-E,-C,E,,]3[ECA,E,-]/2"
    assert strip_final_tie(text) == "X: 1\nK:C\nV:2\n[E-C-A,-E,-C,E,,]3[ECA,E,]/2"


def test_strip_final_tie_all_ties_inside_final_chord():
    text = "X: 1\nK:C\nV:1\nz2 [G-D-B,-G,-G,,-]6|"
    assert strip_final_tie(text) == "X: 1\nK:C\nV:1\nz2 [GDB,G,G,,]6|"


def test_strip_final_tie_after_chord():
    assert strip_final_tie("X: 1\nK:C\nV:1\nz4 [CEG]-") == "X: 1\nK:C\nV:1\nz4 [CEG]"
    assert strip_final_tie("X: 1\nK:C\nV:1\nz4 [CEG]2-|") == "X: 1\nK:C\nV:1\nz4 [CEG]2|"


def test_strip_final_tie_in_every_voice():
    text = (
        "X: 1\nK:C\n"
        "V:1\n%%MIDI program 0\nz8| \\\nG4- G/2z3z/2|\ng8-|g8-|g/2-\n"
        "V:2\n%%MIDI program 0\nz8|\nc'3-c'/2z/2 ab a2-|\n"
        "V:3\n%%MIDI program 0\n[E-C-A,-E,-C,E,,]3[ECA,E,-]/2"
    )
    expected = (
        "X: 1\nK:C\n"
        "V:1\n%%MIDI program 0\nz8| \\\nG4- G/2z3z/2|\ng8-|g8-|g/2\n"
        "V:2\n%%MIDI program 0\nz8|\nc'3-c'/2z/2 ab a2|\n"
        "V:3\n%%MIDI program 0\n[E-C-A,-E,-C,E,,]3[ECA,E,]/2"
    )
    assert strip_final_tie(text) == expected


def test_strip_final_tie_last_music_line_of_voice_is_found_past_directives():
    # the tie is on the last music line of V:1; the V:2 header lines after it are not music
    text = "X: 1\nK:C\nV:1\nabc d2-\nV:2\n%%MIDI program 0\n%%MIDI channel 10\nz8|"
    assert strip_final_tie(text) == "X: 1\nK:C\nV:1\nabc d2\nV:2\n%%MIDI program 0\n%%MIDI channel 10\nz8|"


def test_strip_final_tie_leaves_ties_in_the_middle_of_a_voice():
    text = "X: 1\nK:C\nV:1\nG4- G/2z3z/2|\nz/2G3/2 z/2FzCzE3/2-| \\\nE3z3/2C/2 [CE]2- [CE]2\nV:2\nc2- c2|"
    assert strip_final_tie(text) == text


def test_strip_final_tie_leaves_a_voice_ending_with_a_rest():
    text = "X: 1\nK:C\nV:1\nz8| \\\nG4- G/2z3z/2|\nE6 z2|"
    assert strip_final_tie(text) == text


def test_strip_final_tie_voice_without_music_does_not_reach_into_the_previous_voice():
    text = "X: 1\nK:C\nV:1\nabc d2-\nV:2\n%%MIDI program 0\nV:3\ne2- efg|"
    expected = "X: 1\nK:C\nV:1\nabc d2\nV:2\n%%MIDI program 0\nV:3\ne2- efg|"
    assert strip_final_tie(text) == expected


# --- check_structure ----------------------------------------------------------------------------------------

def test_check_structure_accepts_a_complete_tune():
    assert check_structure("X: 1\nM: 2/4\nK:C\nV:1\nabc|") is None


def test_check_structure_missing_x():
    assert check_structure("M: 2/4\nK:C\nabc|") == "missing_X"


def test_check_structure_missing_k():
    assert check_structure("X: 1\nM: 2/4\nabc|") == "missing_K"


def test_check_structure_no_music_after_k():
    assert check_structure("X: 1\nM: 2/4\nK:C\nV:1\n%%MIDI program 0") == "no_music"


def test_check_structure_music_only_before_k_is_no_music():
    assert check_structure("X: 1\nabc|\nK:C") == "no_music"


# --- clean_tune ---------------------------------------------------------------------------------------------

def test_rule_names_cover_all_rewrites_and_checks():
    assert RULE_NAMES == (
        "normalize_line_endings", "printable_ascii", "strip_comments", "keep_midi_directives",
        "drop_repeated_program", "remove_title", "strip_trailing_whitespace", "remove_empty_lines",
        "strip_final_tie", "check_structure",
    )


def test_clean_tune_on_midi2abc_output():
    cleaned = clean_tune(MIDI2ABC_TUNE)
    assert cleaned.text == MIDI2ABC_TUNE_CLEANED
    assert cleaned.drop_reason is None
    # normalize_line_endings, printable_ascii, keep_midi_directives and remove_empty_lines had nothing to do
    assert cleaned.changed_by == [
        "strip_comments", "drop_repeated_program", "remove_title", "strip_trailing_whitespace", "strip_final_tie",
    ]


def test_clean_tune_reports_every_rule_that_changed_something():
    text = (
        "X: 1\r\n"
        "T: from /some/path/002.mid\r\n"
        "M: 4/4\r\n"
        "L: 1/8\r\n"
        "K:C % 0 sharps\r\n"
        "V:1\r\n"
        "%%clef bass\r\n"
        "%%MIDI program 0\r\n"
        "%%MIDI program 0\r\n"
        "\r\n"
        "abc\u00e9\tdef  \r\n"
        "g8-\r\n"
    )
    cleaned = clean_tune(text)
    assert cleaned.changed_by == [name for name, _ in REWRITES]
    assert cleaned.text == "X: 1\nM: 4/4\nL: 1/8\nK:C\nV:1\n%%MIDI program 0\nabc def\ng8\n"


def test_clean_tune_changed_by_lists_only_rules_that_changed_the_text():
    text = "X: 1\nT: from x.mid\nK:C\nabc|"
    cleaned = clean_tune(text)
    assert cleaned.changed_by == ["remove_title"]
    assert cleaned.text == "X: 1\nK:C\nabc|\n"


def test_clean_tune_clean_text_without_final_newline_is_unchanged():
    cleaned = clean_tune("X: 1\nK:C\nabc|")
    assert cleaned.changed_by == []
    assert cleaned.text == "X: 1\nK:C\nabc|\n"


def test_clean_tune_trailing_newline_is_not_an_empty_line():
    cleaned = clean_tune("X: 1\nK:C\nabc|\n")
    assert cleaned.text == "X: 1\nK:C\nabc|\n"
    assert "remove_empty_lines" not in cleaned.changed_by


def test_clean_tune_is_idempotent_on_text():
    once = clean_tune(MIDI2ABC_TUNE).text
    assert clean_tune(once).text == once


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("T: from x.mid\nK:C\nabc|\n", "missing_X"),
        ("X: 1\nT: from x.mid\nM: 4/4\nabc|\n", "missing_K"),
        ("X: 1\nT: from x.mid\nK:C % 0 sharps\nV:1\n%%MIDI program 0\n% only a comment\n\n", "no_music"),
    ],
)
def test_clean_tune_dropped_tune_has_no_text_and_a_reason(text, reason):
    cleaned = clean_tune(text)
    assert cleaned.text is None
    assert cleaned.drop_reason == reason
    assert "remove_title" in cleaned.changed_by


def test_clean_tune_output_is_printable_ascii_with_final_newline():
    cleaned = clean_tune("X: 1\r\nK:C\r\n\u00fc\u00df abc\x01|")
    assert cleaned.text == "X: 1\nK:C\n abc|\n"
    assert all(0x20 <= ord(c) <= 0x7E or c == "\n" for c in cleaned.text)


# --- abc2midi accepts the cleaned tune ----------------------------------------------------------------------

def _abc2midi_errors(tmp_path, name: str, abc: str) -> tuple[list[str], bool]:
    abc_path = tmp_path / f"{name}.abc"
    midi_path = tmp_path / f"{name}.mid"
    abc_path.write_text(abc)
    completed = subprocess.run(
        ["abc2midi", abc_path.name, "-o", midi_path.name], cwd=tmp_path, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=30,
    )
    errors = [line for line in completed.stdout.splitlines() if line.startswith("Error")]
    return errors, midi_path.exists() and midi_path.stat().st_size > 0


@pytest.mark.skipif(shutil.which("abc2midi") is None, reason="abc2midi is not installed")
def test_abc2midi_rejects_dangling_final_tie_and_accepts_cleaned_tune(tmp_path):
    raw = (
        "X: 1\n"
        "T: from /some/path/001.mid\n"
        "M: 2/4\n"
        "L: 1/16\n"
        "Q:1/4=90\n"
        "K:F# % 6 sharps\n"
        "V:1\n"
        "%%MIDI program 0\n"
        "z8| \\\n"
        "G4- G/2z3z/2|\n"
        "E6 b2-\n"
        "V:2\n"
        "%Piano\n"
        "%%MIDI program 0\n"
        "%%MIDI program 0\n"
        "[E-C-A,-E,-C,E,,]3[ECA,E,-]/2\n"
    )
    before, _ = _abc2midi_errors(tmp_path, "before", raw)
    assert before, "abc2midi should report the dangling tie"
    assert any("Could not find note to be tied" in line for line in before)

    cleaned = clean_tune(raw)
    assert "strip_final_tie" in cleaned.changed_by
    after, wrote_midi = _abc2midi_errors(tmp_path, "after", cleaned.text)
    assert after == []
    assert wrote_midi

