"""Unit tests for split assignment, the character vocabulary, and tune selection / batch encoding."""

from __future__ import annotations

import collections
import hashlib
import json
import random

import numpy as np
import pyarrow as pa
import pytest

from abcmusic.data.assemble import Duplicate, build_vocabulary, encode_batch, select_tunes
from abcmusic.data.conversion_job import FileSummary
from abcmusic.data.near_duplicates import NearDuplicateConfig
from abcmusic.data.splits import SPLITS, SplitFractions, assign_split
from abcmusic.data.vocab import SEPARATOR, TOKEN_DTYPE, UNKNOWN, Vocabulary


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- assign_split -------------------------------------------------------------------------------------------

def test_assign_split_is_deterministic():
    fractions = SplitFractions()
    hashes = [sha256(f"tune {i}") for i in range(500)]
    first = [assign_split(h, fractions) for h in hashes]
    second = [assign_split(h, SplitFractions(0.90, 0.05, 0.05)) for h in hashes]
    assert first == second
    assert set(first) <= set(SPLITS)


def test_assign_split_depends_only_on_the_hash_prefix():
    fractions = SplitFractions(0.5, 0.25, 0.25)
    rng = random.Random(7)
    for _ in range(200):
        prefix = "".join(rng.choice("0123456789abcdef") for _ in range(16))
        tails = ["0" * 48, "f" * 48, sha256(prefix)[:48]]
        assert len({assign_split(prefix + tail, fractions) for tail in tails}) == 1


@pytest.mark.parametrize(
    ("prefix", "split"),
    [
        ("0000000000000000", "train"),
        ("7fffffffffff0000", "train"),
        ("8000000000000000", "val"),  # exactly 0.5: no longer train
        ("bfffffffffff0000", "val"),
        ("c000000000000000", "test"),  # exactly 0.75
        ("ffffffffffffffff", "test"),
    ],
)
def test_assign_split_cuts_at_cumulative_fractions(prefix, split):
    assert assign_split(prefix + "0" * 48, SplitFractions(0.5, 0.25, 0.25)) == split


@pytest.mark.parametrize("fractions", [SplitFractions(), SplitFractions(0.6, 0.3, 0.1), SplitFractions(0.8, 0.0, 0.2)])
def test_assign_split_respects_fractions_over_random_hashes(fractions):
    rng = random.Random(1234)
    n = 20_000
    counts = collections.Counter(assign_split(sha256(str(rng.random())), fractions) for _ in range(n))
    for split in SPLITS:
        assert abs(counts[split] / n - getattr(fractions, split)) < 0.01, (split, counts)
    if fractions.val == 0:
        assert counts["val"] == 0


def test_split_fractions_defaults():
    fractions = SplitFractions()
    assert (fractions.train, fractions.val, fractions.test) == (0.90, 0.05, 0.05)


@pytest.mark.parametrize(
    "values",
    [(0.9, 0.05, 0.04), (0.9, 0.1, 0.1), (1.1, -0.05, -0.05), (0.5, -0.1, 0.6), (0.0, 0.5, 0.5), (-0.2, 0.6, 0.6)],
)
def test_split_fractions_rejects_bad_values(values):
    with pytest.raises(ValueError):
        SplitFractions(*values)


def test_split_fractions_parse():
    assert SplitFractions.parse("0.8,0.1,0.1") == SplitFractions(0.8, 0.1, 0.1)
    assert SplitFractions.parse(" 0.9 , 0.05 , 0.05 ") == SplitFractions(0.9, 0.05, 0.05)


@pytest.mark.parametrize("text", ["0.9,0.1", "0.8,0.1,0.05,0.05", "", "1", "a,b,c", "0.9,0.1,x", "0.9,0.2,0.1",
                                  "1.2,-0.1,-0.1"])
def test_split_fractions_parse_rejects_bad_text(text):
    with pytest.raises(ValueError):
        SplitFractions.parse(text)


# --- Vocabulary ---------------------------------------------------------------------------------------------

def test_vocabulary_special_tokens_first_then_sorted_characters():
    vocab = Vocabulary.from_characters("cab|ca\n")
    assert vocab.id_to_token == (SEPARATOR, UNKNOWN, "\n", "a", "b", "c", "|")
    assert vocab.separator_id == 0
    assert vocab.unknown_id == 1
    assert len(vocab) == 7
    assert vocab.token_to_id == {SEPARATOR: 0, UNKNOWN: 1, "\n": 2, "a": 3, "b": 4, "c": 5, "|": 6}


def test_vocabulary_rejects_multi_character_tokens():
    with pytest.raises(ValueError):
        Vocabulary.from_characters(["a", "bc"])


def test_vocabulary_encode_decode_round_trip():
    tune = "X: 1\nM: 2/4\nL: 1/16\nK:F#\nV:1\n%%MIDI program 0\nz8| \\\nG4- G/2z3z/2|\n[ECA,E,]/2\n"
    vocab = Vocabulary.from_characters(tune)
    ids = vocab.encode(tune)
    assert ids.dtype == TOKEN_DTYPE
    assert len(ids) == len(tune)
    assert vocab.decode(ids) == tune
    assert vocab.decode(ids.tolist()) == tune
    assert vocab.separator_id not in ids and vocab.unknown_id not in ids


def test_vocabulary_unknown_characters_map_to_unk():
    vocab = Vocabulary.from_characters("abc")
    ids = vocab.encode("axbz")
    assert ids.tolist() == [vocab.token_to_id["a"], vocab.unknown_id, vocab.token_to_id["b"], vocab.unknown_id]
    assert vocab.decode(ids) == f"a{UNKNOWN}b{UNKNOWN}"


def test_vocabulary_encode_empty_text():
    vocab = Vocabulary.from_characters("abc")
    assert vocab.encode("").tolist() == []


def test_vocabulary_save_load_round_trip(tmp_path):
    vocab = Vocabulary.from_characters("X: 1\nK:C\nabc|[]\"%\\")
    path = tmp_path / "vocab.json"
    vocab.save(path)
    data = json.loads(path.read_text())
    assert data["id_to_token"] == list(vocab.id_to_token)
    assert data["token_to_id"] == vocab.token_to_id
    assert data["separator"] == SEPARATOR and data["unknown"] == UNKNOWN
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    assert loaded.encode("abc?").tolist() == vocab.encode("abc?").tolist()


def test_vocabulary_load_rejects_inconsistent_json(tmp_path):
    vocab = Vocabulary.from_characters("abc")
    data = vocab.to_json()
    data["token_to_id"]["a"], data["token_to_id"]["b"] = data["token_to_id"]["b"], data["token_to_id"]["a"]
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError):
        Vocabulary.load(path)


def test_ascii_lookup_table_matches_encode():
    vocab = Vocabulary.from_characters("X: 1\nK:C\nabc|[]/2,'-^_=")
    table = vocab.ascii_lookup_table()
    assert table.shape == (256,)
    assert table.dtype == TOKEN_DTYPE
    every_byte = "".join(chr(b) for b in range(256))
    assert table[np.arange(256)].tolist() == vocab.encode(every_byte).tolist()
    text = "X: 1\nK:C\nabc d|[CEG]2 zzz\t~"
    assert table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)].tolist() == vocab.encode(text).tolist()


# --- encode_batch -------------------------------------------------------------------------------------------

def test_encode_batch_matches_vocabulary_encode():
    vocab = Vocabulary.from_characters("X: 12\nK:C\nabcdefg|[]")
    texts = ["X: 1\nK:C\nabc|\n", "", "X: 2\nK:C\nzz qq [ceg]|\n", "a"]
    column, lengths, flat = encode_batch(texts, vocab.ascii_lookup_table())
    assert column.type == pa.list_(pa.uint16())
    assert len(column) == len(texts)
    assert column.to_pylist() == [vocab.encode(t).tolist() for t in texts]
    assert lengths.tolist() == [len(t) for t in texts]
    assert flat.dtype == TOKEN_DTYPE
    assert flat.tolist() == vocab.encode("".join(texts)).tolist()
    assert int(np.count_nonzero(flat == vocab.unknown_id)) == "".join(texts).count("z") + "".join(texts).count("q")


def test_encode_batch_rejects_non_ascii():
    vocab = Vocabulary.from_characters("abc")
    with pytest.raises(UnicodeEncodeError):
        encode_batch(["ab\u00e9"], vocab.ascii_lookup_table())


# --- select_tunes / build_vocabulary ------------------------------------------------------------------------

def summary(file_index: int, content_hash: str, status: str = "ok", chars: str = "abc") -> FileSummary:
    return FileSummary(
        file_index=file_index,
        source_path=f"song{file_index:03d}.mid",
        status=status,
        reason="" if status == "ok" else "no_notes",
        detail="",
        content_hash=content_hash if status == "ok" else "",
        n_chars=len(chars) if status == "ok" else 0,
        distinct_chars="".join(sorted(set(chars))) if status == "ok" else "",
        changed_by=[],
        text_events_removed=0,
    )


ONE_BY_ONE = NearDuplicateConfig(mode="off")  # no parts to group versions from: each tune by its own hash
TRAIN_HASH = "0" * 64  # position 0.0: train for any fractions
TEST_HASH = "f" * 64  # position ~1.0: test
VAL_HASH = "e8" + "0" * 62  # position 0.906: val with 0.9/0.05/0.05


def test_select_tunes_keeps_first_file_of_each_hash_and_reports_duplicates():
    fractions = SplitFractions()
    summaries = [summary(7, TRAIN_HASH), summary(2, TEST_HASH), summary(5, TRAIN_HASH), summary(3, TRAIN_HASH),
                 summary(9, TEST_HASH), summary(4, VAL_HASH)]
    selection = select_tunes(summaries, fractions, None, ONE_BY_ONE)
    assert selection.split_by_index == {3: "train", 2: "test", 4: "val"}
    assert selection.hash_by_index == {3: TRAIN_HASH, 2: TEST_HASH, 4: VAL_HASH}
    assert sorted(selection.duplicates, key=lambda d: d.source_path) == [
        Duplicate("song005.mid", "song003.mid"),
        Duplicate("song007.mid", "song003.mid"),
        Duplicate("song009.mid", "song002.mid"),
    ]


def test_select_tunes_ignores_summaries_that_are_not_ok():
    summaries = [summary(0, "", status="failed"), summary(1, "", status="failed"), summary(2, "", status="dropped"),
                 summary(3, TRAIN_HASH)]
    selection = select_tunes(summaries, SplitFractions(), None, ONE_BY_ONE)
    assert selection.split_by_index == {3: "train"}
    assert selection.hash_by_index == {3: TRAIN_HASH}
    assert selection.duplicates == []


def test_select_tunes_split_is_assign_split_of_the_hash():
    fractions = SplitFractions(0.6, 0.2, 0.2)
    summaries = [summary(i, sha256(f"tune {i}")) for i in range(300)]
    selection = select_tunes(summaries, fractions, None, ONE_BY_ONE)
    assert len(selection.split_by_index) == 300
    for s in summaries:
        assert selection.split_by_index[s.file_index] == assign_split(s.content_hash, fractions)
    assert set(selection.split_by_index.values()) == set(SPLITS)


def test_build_vocabulary_uses_only_train_split_characters():
    summaries = [
        summary(0, TRAIN_HASH, chars="abc"),
        summary(1, TEST_HASH, chars="xyz"),
        summary(2, VAL_HASH, chars="uvw"),
        summary(3, TRAIN_HASH, chars="q"),  # a duplicate of tune 0 (not selected): its characters do not count
        summary(4, "1" + "0" * 63, chars="d|\n"),
        summary(5, "", status="failed"),
    ]
    selection = select_tunes(summaries, SplitFractions(), None, ONE_BY_ONE)
    assert selection.split_by_index == {0: "train", 1: "test", 2: "val", 4: "train"}
    vocab = build_vocabulary(summaries, selection)
    assert vocab.id_to_token == (SEPARATOR, UNKNOWN, "\n", "a", "b", "c", "d", "|")
