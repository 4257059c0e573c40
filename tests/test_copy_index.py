"""Unit tests for abcmusic.data.copy_index: the suffix array and the longest shared run against brute force."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from abcmusic.data.copy_index import (
    SUFFIX_ARRAY_FILE,
    CopyIndex,
    SharedRun,
    copy_summary,
    suffix_array,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATASET = REPO_ROOT / "data" / "demo"


def brute_force_longest(sample: str, training: list[str]) -> int:
    best = 0
    for start in range(len(sample)):
        for end in range(start + best + 1, len(sample) + 1):
            if any(sample[start:end] in tune for tune in training):
                best = end - start
            else:
                break
    return best


def random_text(rng: random.Random, alphabet: str, max_length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, max_length + 1)))


def test_suffix_array_matches_sorting_all_suffixes():
    rng = np.random.default_rng(3)
    for _ in range(400):
        length = int(rng.integers(0, 80))
        # Few distinct values (zeros included, as between tunes) so that long repeats occur.
        codes = rng.integers(0, int(rng.integers(1, 4)), length).astype(np.uint8)
        as_bytes = codes.tobytes()
        expected = sorted(range(length), key=lambda i: as_bytes[i:])
        assert suffix_array(codes).tolist() == expected
    repeated = np.full(300, 7, dtype=np.uint8)  # one long run: every round of doubling is needed
    assert suffix_array(repeated).tolist() == list(range(299, -1, -1))


@pytest.mark.parametrize("seed", range(40))
def test_longest_shared_run_equals_brute_force(seed):
    rng = random.Random(seed)
    alphabet = "abc" if seed % 2 else "abcd"
    training = [random_text(rng, alphabet, 25) for _ in range(rng.randrange(1, 6))]
    index = CopyIndex.build(training)
    for _ in range(15):
        sample = random_text(rng, alphabet + "x", 30)
        run = index.longest_shared_run(sample)
        assert run.length == brute_force_longest(sample, training)
        # the reported run is really there
        assert any(sample[run.position:run.position + run.length] in tune for tune in training)


def test_a_sample_copied_from_training_gets_its_full_length():
    training = ["X: 1\nM: 4/4\nK:C\nCDEF GABc|c8|\n", "X: 1\nM: 3/4\nK:G\nB2 d2 g2|\n"]
    index = CopyIndex.build(training)
    assert index.longest_shared_run(training[1]) == SharedRun(len(training[1]), 0)
    inside = "zz" + training[0][5:20] + "zz"
    assert index.longest_shared_run(inside) == SharedRun(15, 2)


def test_a_run_never_spans_two_training_tunes():
    index = CopyIndex.build(["abc", "def"])
    assert index.longest_shared_run("abcdef").length == 3
    assert index.longest_shared_run("cd").length == 1
    assert index.longest_shared_run("abc\x00def").length == 3  # a NUL in the sample is not the separator


def test_characters_absent_from_the_corpus_never_match():
    index = CopyIndex.build(["ab\u00e9cd", "xyz"])
    assert index.longest_shared_run("\u00e9\u20ac\U0001f3b5").length == 0
    assert index.longest_shared_run("qqq").length == 0
    # a non-ASCII training character is a tune boundary, and positions count characters, not bytes
    assert index.longest_shared_run("\u20acab\u00e9cd") == SharedRun(2, 1)
    assert index.longest_shared_run("\u20ac\u20acxyz") == SharedRun(3, 2)


def test_empty_sample_and_empty_index():
    index = CopyIndex.build(["abc"])
    assert index.longest_shared_run("") == SharedRun(0, 0)
    empty = CopyIndex.build([])
    assert len(empty) == 0 and empty.longest_shared_run("abc") == SharedRun(0, 0)
    assert CopyIndex.build(["", ""]).longest_shared_run("abc") == SharedRun(0, 0)


def test_save_and_load_round_trip(tmp_path):
    rng = random.Random(5)
    training = [random_text(rng, "abcz|2 ", 200) for _ in range(30)]
    index = CopyIndex.build(training)
    index.save(tmp_path / "index")
    loaded = CopyIndex.load(tmp_path / "index")
    assert loaded.suffixes.dtype == np.int32
    assert np.array_equal(loaded.text, index.text) and np.array_equal(loaded.suffixes, index.suffixes)
    for _ in range(20):
        sample = random_text(rng, "abcz|2 x", 60)
        assert loaded.longest_shared_run(sample) == index.longest_shared_run(sample)


def test_load_refuses_files_that_do_not_belong_together(tmp_path):
    CopyIndex.build(["abcabc"]).save(tmp_path)
    np.save(tmp_path / SUFFIX_ARRAY_FILE, np.arange(3, dtype=np.int32))
    with pytest.raises(ValueError, match="do not belong together"):
        CopyIndex.load(tmp_path)


def test_batch_helpers():
    training = ["abcdefgh", "zzzz"]
    index = CopyIndex.build(training)
    samples = ["abcdefgh", "abcxxxxx", "qqqq"]
    assert index.longest_shared_runs(samples) == [SharedRun(8, 0), SharedRun(3, 0), SharedRun(0, 0)]
    summary = copy_summary(index, samples)
    assert summary["mean_longest_shared_run"] == pytest.approx(11 / 3)
    assert summary["max_longest_shared_run"] == 8
    assert summary["mean_copy_share"] == pytest.approx((1 + 3 / 8 + 0) / 3)
    assert summary["share_of_samples_mostly_copied"] == pytest.approx(1 / 3)


def test_demo_training_split_index():
    files = sorted((DEMO_DATASET / "train").glob("*.parquet"))
    if not files:
        pytest.skip(f"demo dataset not found at {DEMO_DATASET} (build it with prepare.py)")
    import pyarrow.parquet as pq

    training = [text for file in files for text in pq.read_table(file, columns=["abc"]).column("abc").to_pylist()]
    index = CopyIndex.build(training)
    assert len(index) == sum(len(text) + 1 for text in training)
    # spot-check the order of neighbouring suffixes
    corpus = index.text.tobytes()
    for rank in np.random.default_rng(0).integers(0, len(index) - 1, 2000):
        first, second = index.suffixes[rank], index.suffixes[rank + 1]
        assert corpus[first:first + 300] <= corpus[second:second + 300]
    long_tune = max(training[:200], key=len)
    assert index.longest_shared_run(long_tune) == SharedRun(len(long_tune), 0)
