"""The pure rules of the demo corpus: splitting a multi-tune ABC file, and picking tunes evenly."""

from __future__ import annotations

import pytest

from abcmusic.data.demo_corpus import evenly_spaced, split_tunes

MULTI_TUNE_FILE = """\
%abc-2.1
% a collection of reels, transcribed by hand
M:4/4
L:1/8
R:reel
%%scale 0.8

X:1
T:First Reel
K:D
|:defg a2fa|
%%vskip 10

X:2
T:Second Reel
M:6/8
K:G
|:GAB c2d:|
X:3
T:Third
K:Am
% a comment inside a tune
A4 c4|
"""


def test_split_tunes_one_tune_per_x_line():
    tunes = split_tunes(MULTI_TUNE_FILE)
    assert len(tunes) == 3
    assert [tune.split("\n", 1)[0] for tune in tunes] == ["X:1", "X:2", "X:3"]


def test_split_tunes_prepends_file_header_fields_to_every_tune():
    tunes = split_tunes(MULTI_TUNE_FILE)
    for tune in tunes:
        assert tune.split("\n")[1:4] == ["M:4/4", "L:1/8", "R:reel"]
    assert tunes[0] == "X:1\nM:4/4\nL:1/8\nR:reel\nT:First Reel\nK:D\n|:defg a2fa|\n%%vskip 10\n"
    # a tune's own field comes after the header's and so overrides it
    assert tunes[1] == "X:2\nM:4/4\nL:1/8\nR:reel\nT:Second Reel\nM:6/8\nK:G\n|:GAB c2d:|\n"


def test_split_tunes_does_not_prepend_header_comments():
    for tune in split_tunes(MULTI_TUNE_FILE):
        assert "%abc-2.1" not in tune
        assert "collection of reels" not in tune
        assert "%%scale" not in tune


def test_split_tunes_keeps_comments_inside_a_tune():
    tunes = split_tunes(MULTI_TUNE_FILE)
    assert "% a comment inside a tune" in tunes[2]
    assert tunes[2].endswith("A4 c4|\n")


def test_split_tunes_each_tune_ends_with_one_newline_and_no_blank_tail():
    for tune in split_tunes(MULTI_TUNE_FILE):
        assert tune.endswith("\n") and not tune.endswith("\n\n")


def test_split_tunes_crlf_and_cr_line_endings():
    crlf = split_tunes(MULTI_TUNE_FILE.replace("\n", "\r\n"))
    cr = split_tunes(MULTI_TUNE_FILE.replace("\n", "\r"))
    assert crlf == cr == split_tunes(MULTI_TUNE_FILE)
    assert all("\r" not in tune for tune in crlf)


def test_split_tunes_without_header():
    assert split_tunes("X:1\nT:a\nK:C\nabc|\nX:2\nK:G\ndef|\n") == ["X:1\nT:a\nK:C\nabc|\n", "X:2\nK:G\ndef|\n"]


def test_split_tunes_free_text_in_header_is_not_a_field():
    tunes = split_tunes("Some notes about: these tunes\nC:Trad\n\nX:1\nK:C\nabc|\n")
    assert tunes == ["X:1\nC:Trad\nK:C\nabc|\n"]


def test_split_tunes_text_without_tunes():
    assert split_tunes("") == []
    assert split_tunes("M:4/4\n% no tunes here\n") == []


@pytest.mark.parametrize(
    ("n_items", "count", "expected"),
    [
        (10, 3, [0, 3, 6]),
        (10, 5, [0, 2, 4, 6, 8]),
        (7, 2, [0, 3]),
        (5, 1, [0]),
        (5, 0, []),
    ],
)
def test_evenly_spaced_picks(n_items, count, expected):
    assert evenly_spaced(list(range(n_items)), count) == expected


@pytest.mark.parametrize("count", [None, 10, 11, 1000])
def test_evenly_spaced_all_items_when_count_is_none_or_large(count):
    items = [f"tune{i}" for i in range(10)]
    assert evenly_spaced(items, count) == items


def test_evenly_spaced_spreads_over_the_whole_list():
    items = list(range(1000))
    picked = evenly_spaced(items, 37)
    assert len(picked) == 37
    assert len(set(picked)) == 37
    assert picked == sorted(picked)
    assert picked[0] == 0
    assert picked[-1] >= 1000 - 1000 // 37 - 1  # the last collection is represented too
    gaps = {b - a for a, b in zip(picked, picked[1:])}
    assert gaps <= {1000 // 37, 1000 // 37 + 1}
