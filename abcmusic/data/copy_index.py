"""An index of the training split's text that finds the longest run of characters a sample shares with it.

The training tunes are joined, each followed by a NUL byte that no sample character matches, so a run never spans
two tunes. A suffix array over those bytes is built once with numpy (prefix doubling) and can be saved as .npy next
to a dataset. A query of m characters then costs at most 2m binary searches over the suffix array: the longest run
only grows, so at each start it is enough to test whether the run one longer than the best so far occurs.

`copy_share` = longest shared run / sample length: 1.0 for a sample copied whole from one training tune. Every
tune shares its header fields (`X: 1`, `M:`, `L:`, `K:`...) with many training tunes, so short samples have a
high share without copying anything; compare with the same number for held-out real tunes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

SEPARATOR_BYTE = 0  # after every training tune; also what non-ASCII training characters become
UNMATCHABLE_BYTE = 255  # what a sample's NUL and non-ASCII characters become: never in the training bytes
TEXT_FILE = "copy_index_text.npy"
SUFFIX_ARRAY_FILE = "copy_index_suffix_array.npy"
PACKED_CHARS = 7  # the first sort compares 7 characters at once: 7 x 8 bits fit an int64


class SharedRun(NamedTuple):
    length: int  # characters
    position: int  # where the run starts in the sample


def text_codes(text: str, non_ascii: int) -> np.ndarray:
    """Character codes as uint8, one per character (so positions are character positions); non-ASCII -> non_ascii."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(codes < 128, codes, non_ascii).astype(np.uint8)


def suffix_array(codes: np.ndarray) -> np.ndarray:
    """Start positions of all suffixes of `codes` (uint8 values below 255) in lexicographic order; a suffix sorts
    before every longer suffix it is a prefix of. Peak memory is about 100 bytes per character (int64 temporaries).

    Prefix doubling with group heads (Larsson-Sadakane): after the round with window k, `order` is sorted by the
    first k characters and `rank[i]` is where suffix i's group of equal k-prefixes starts in `order`. Only suffixes
    whose group has other members are sorted again, by (rank, rank k further on), so later rounds are small.
    """
    n = len(codes)
    index_dtype = np.int32 if n < 2**31 - 1 else np.int64
    if n == 0:
        return np.zeros(0, dtype=index_dtype)
    shifted = np.zeros(n + PACKED_CHARS, dtype=np.int64)  # code + 1, so that past the end (0) sorts first
    shifted[:n] = codes.astype(np.int64) + 1
    key = np.zeros(n, dtype=np.int64)
    for offset in range(PACKED_CHARS):
        key = (key << 8) | shifted[offset:offset + n]
    del shifted
    order = np.argsort(key, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    unresolved = _assign_group_heads(order, key[order], np.arange(n), rank)
    window = PACKED_CHARS
    while unresolved.size:
        active = order[unresolved]
        ahead = active + window
        following = np.zeros(len(active), dtype=np.int64)  # rank + 1 of the suffix `window` further on; 0 past the end
        inside = ahead < n
        following[inside] = rank[ahead[inside]] + 1
        key = rank[active] * (n + 1) + following
        by_key = np.argsort(key, kind="stable")
        active, key = active[by_key], key[by_key]
        order[unresolved] = active  # groups keep their place in `order`: the rank is the key's major part
        unresolved = _assign_group_heads(active, key, unresolved, rank)
        window *= 2
    return order.astype(index_dtype)


def _assign_group_heads(members: np.ndarray, sorted_key: np.ndarray, positions: np.ndarray,
                        rank: np.ndarray) -> np.ndarray:
    """`members`, sorted by `sorted_key`, fill `positions` of the order. Each gets as rank the position of the first
    member with the same key; returns the positions of those whose key is shared (still to be sorted)."""
    starts_group = np.empty(len(members), dtype=bool)
    starts_group[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=starts_group[1:])
    group_of_member = np.cumsum(starts_group) - 1
    group_starts = np.flatnonzero(starts_group)
    rank[members] = positions[group_starts][group_of_member]
    group_sizes = np.diff(np.append(group_starts, len(members)))
    return positions[group_sizes[group_of_member] > 1]


class CopyIndex:
    def __init__(self, text: np.ndarray, suffixes: np.ndarray) -> None:
        self.text = text  # uint8: the training tunes, each followed by SEPARATOR_BYTE
        self.suffixes = suffixes  # suffix array of `text`
        self._corpus = text.tobytes()  # bytes slices compare in C: the binary search stays fast in Python

    @classmethod
    def build(cls, texts: Iterable[str]) -> "CopyIndex":
        parts = []
        separator = np.array([SEPARATOR_BYTE], dtype=np.uint8)
        for text in texts:
            parts.append(text_codes(text, SEPARATOR_BYTE))
            parts.append(separator)
        joined = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
        return cls(joined, suffix_array(joined))

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / TEXT_FILE, self.text)
        np.save(directory / SUFFIX_ARRAY_FILE, self.suffixes)

    @classmethod
    def load(cls, directory: Path) -> "CopyIndex":
        directory = Path(directory)
        text = np.load(directory / TEXT_FILE)
        suffixes = np.load(directory / SUFFIX_ARRAY_FILE)
        if text.dtype != np.uint8 or len(suffixes) != len(text):
            raise ValueError(f"{directory}: copy index files do not belong together; delete them to rebuild")
        return cls(text, suffixes)

    def __len__(self) -> int:
        return len(self.text)

    def longest_shared_run(self, sample: str) -> SharedRun:
        """The longest substring of `sample` that occurs in one training tune (the first such if several)."""
        codes = text_codes(sample, UNMATCHABLE_BYTE)
        codes[codes == SEPARATOR_BYTE] = UNMATCHABLE_BYTE
        pattern = codes.tobytes()
        corpus = self._corpus
        starts = memoryview(self.suffixes)
        best = SharedRun(0, 0)
        for i in range(len(pattern)):
            # A run longer than the best starting at i exists only if the one just one longer does.
            while i + best.length < len(pattern) and _occurs(corpus, starts, pattern[i:i + best.length + 1]):
                best = SharedRun(best.length + 1, i)
        return best

    def longest_shared_runs(self, samples: Sequence[str]) -> list[SharedRun]:
        return [self.longest_shared_run(sample) for sample in samples]


def _occurs(corpus: bytes, starts: memoryview, pattern: bytes) -> bool:
    """Binary search for the first suffix >= pattern; the pattern occurs if that suffix starts with it."""
    lo, hi = 0, len(starts)
    width = len(pattern)
    while lo < hi:
        mid = (lo + hi) // 2
        start = starts[mid]
        if corpus[start:start + width] < pattern:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(starts) and corpus[starts[lo]:starts[lo] + width] == pattern


def copy_summary(index: CopyIndex, samples: Sequence[str]) -> dict[str, float]:
    """Batch numbers: mean and largest longest-shared-run, mean copy share, and the share of samples that are more
    than half copied (copy_share > 0.5)."""
    runs = index.longest_shared_runs(samples)
    shares = [run.length / len(sample) for run, sample in zip(runs, samples) if sample]
    return {
        "mean_longest_shared_run": float(np.mean([run.length for run in runs])) if runs else float("nan"),
        "max_longest_shared_run": float(max((run.length for run in runs), default=0)),
        "mean_copy_share": float(np.mean(shares)) if shares else float("nan"),
        "share_of_samples_mostly_copied": float(np.mean([share > 0.5 for share in shares])) if shares else float("nan"),
    }
