"""Versions of the same piece: sketch each tune, group near-duplicates, and measure what held-out splits share with
train.

A tune's *sketch* is made where it is converted (in parallel, from its MIDI notes and its cleaned ABC):
- one MinHash signature per voice of its melodic shingles (abcmusic.data.melody), for grouping;
- a consistent sample of hashes of the 32-character stretches of its music lines, for the contamination measure:
  what of a held-out tune occurs verbatim in train is what a model can copy, and the measure shares nothing with
  the grouping it checks. (Melodic shingles pooled over a whole training split are no such check: on the folk demo
  95% of held-out tunes have most of their 7-note patterns somewhere in train, grouped or not.)

Grouping is per voice: two tunes are versions of one piece when some voice of one and some voice of the other
have a Jaccard similarity of at least the threshold (estimated from the signatures, found with datasketch's
locality-sensitive hashing), and groups are the connected components of that relation. Matching voice to voice
is what makes a re-arrangement with the same melody, or one that adds or drops accompaniment voices, match.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np

from abcmusic.data.melody import interval_shingles, voice_pitches
from abcmusic.notation.cleaning import is_music_line

NearDuplicateMode = Literal["group", "drop", "off"]
NEAR_DUPLICATE_MODES: tuple[NearDuplicateMode, ...] = ("group", "drop", "off")
DEFAULT_THRESHOLD = 0.2  # measured on POP909: the valley between versions of one song and different songs
NUM_PERM = 128  # signature length: the Jaccard estimate's standard error at 0.2 is 0.035
# The index proposes a voice pair with probability 1 - (1 - J**3)**42: 0.29 at J = 0.2, 0.68 at 0.3, 0.996 at 0.5.
# Versions of one piece mostly share a voice outright (J near 1), and a version proposed through any other version
# joins the group; the default's two rows per band (datasketch's choice for 0.2) proposed 23 times more unrelated
# pairs on POP909, a cost that grows with the square of the corpus.
LSH_BANDS, LSH_ROWS = 42, 3
MIN_VOICE_SHINGLES = 10  # voices with fewer distinct shingles (a few repeated notes) are too short to compare
STRETCH_CHARS = 32
STRETCH_SAMPLE = 8  # keep the stretches whose hash is 0 modulo this: the same stretches in every tune
MOSTLY = 0.5  # a held-out tune "is mostly in train" when more than this share of its content is found there
_STRETCH_COEFFICIENTS = np.random.default_rng(20261202).integers(1, 2**63, STRETCH_CHARS // 8, dtype=np.uint64) | 1


@dataclass(frozen=True)
class NearDuplicateConfig:
    mode: NearDuplicateMode = "group"
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        if self.mode not in NEAR_DUPLICATE_MODES:
            raise ValueError(f"near-duplicate mode must be one of {', '.join(NEAR_DUPLICATE_MODES)}; got {self.mode!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1]; got {self.threshold}")


@dataclass(frozen=True)
class TuneSketch:
    voice_signatures: np.ndarray  # (voices, NUM_PERM) uint64: the voices with at least MIN_VOICE_SHINGLES
    stretches: np.ndarray  # sampled hashes of 32-character stretches of the music lines, sorted uint64


@functools.cache
def _permutations() -> np.ndarray:
    """datasketch's permutations for NUM_PERM and its default seed: a MinHash draws them anew each time it is made
    (0.1 ms), ten times what the rest of making one costs."""
    from datasketch import MinHash

    return MinHash(num_perm=NUM_PERM, scheme="affine64").permutations


def _minhash(shingles: np.ndarray | None = None, signature: np.ndarray | None = None):
    """A MinHash of a voice's shingles, or the MinHash a stored signature is."""
    from datasketch import MinHash

    minhash = MinHash(num_perm=NUM_PERM, scheme="affine64", hashfunc=int, hashvalues=signature,
                      permutations=_permutations())
    if shingles is not None:
        minhash.update_batch(shingles)
    return minhash


def stretch_hashes(abc: str) -> np.ndarray:
    """Hashes of the music lines' 32-character stretches (the lines joined by newlines), keeping those that are 0
    modulo STRETCH_SAMPLE: a stretch is kept or not by its content alone, so equal stretches are kept alike."""
    music = "\n".join(line for line in abc.split("\n") if is_music_line(line)).encode("ascii", "replace")
    n_stretches = len(music) - STRETCH_CHARS + 1
    if n_stretches <= 0:
        return np.zeros(0, dtype=np.uint64)
    # The 8 bytes from every position, as one overlapping (unaligned) view; a stretch is four consecutive words.
    words = np.ndarray((len(music) - 7,), dtype="<u8", buffer=music, strides=(1,))
    hashes = np.zeros(n_stretches, dtype=np.uint64)
    for k, coefficient in enumerate(_STRETCH_COEFFICIENTS):
        hashes += words[8 * k:8 * k + n_stretches] * coefficient  # wraps modulo 2**64
    hashes ^= hashes >> np.uint64(29)  # the low bits decide the sample: mix the high ones in
    return np.unique(hashes[hashes % np.uint64(STRETCH_SAMPLE) == 0])


def sketch_tune(midi: bytes, abc: str) -> TuneSketch:
    voices = [interval_shingles(pitches) for pitches in voice_pitches(midi)]
    compared = [shingles for shingles in voices if len(shingles) >= MIN_VOICE_SHINGLES]
    signatures = [_minhash(shingles=s).hashvalues for s in compared]
    return TuneSketch(np.stack(signatures) if signatures else np.zeros((0, NUM_PERM), np.uint64), stretch_hashes(abc))


class _Components:
    """Union-find over tune ids; each root is the smallest id of its component."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        root = self.parent.setdefault(item, item)
        while root != self.parent[root]:
            root = self.parent[root]
        while item != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


@dataclass
class Grouping:
    group_of: dict[int, int]  # tune id -> the smallest tune id of its group (itself when alone)
    voices_compared: int
    tunes_without_voices: int  # no voice long enough to compare (or notes unreadable): each is a group of its own
    candidate_pairs: int  # voice pairs the LSH index proposed
    matched_pairs: int  # of those, the pairs whose estimated Jaccard reached the threshold

    def groups(self) -> list[list[int]]:
        """The groups of two or more tunes, each sorted, ordered by their first tune."""
        members: dict[int, list[int]] = collections.defaultdict(list)
        for tune, root in self.group_of.items():
            members[root].append(tune)
        return sorted(sorted(tunes) for tunes in members.values() if len(tunes) > 1)


def group_tunes(signatures: Iterable[tuple[int, np.ndarray]], threshold: float) -> Grouping:
    """Group the tunes given as (tune id, its voices' signatures): tunes whose voices match, and the tunes linked
    to them through other matches, form one group. Tune ids decide nothing but the groups' names."""
    from datasketch import MinHashLSH

    index = MinHashLSH(num_perm=NUM_PERM, params=(LSH_BANDS, LSH_ROWS))
    owners, rows, components = [], [], _Components()
    tunes_without_voices = 0
    for tune, voice_signatures in signatures:
        components.find(tune)
        tunes_without_voices += len(voice_signatures) == 0
        for signature in voice_signatures:
            key = len(owners)
            owners.append(tune)
            rows.append(signature)
            index.insert(key, _minhash(signature=signature))
    table = np.stack(rows) if rows else np.zeros((0, NUM_PERM), np.uint64)
    candidate_pairs = matched_pairs = 0
    for key, signature in enumerate(rows):
        others = [other for other in index.query(_minhash(signature=signature))
                  if other > key and owners[other] != owners[key]]
        if not others:
            continue
        candidate_pairs += len(others)
        estimates = (table[others] == signature).mean(axis=1)
        for other in np.asarray(others)[estimates >= threshold]:
            matched_pairs += 1
            components.union(owners[key], owners[int(other)])
    return Grouping({tune: components.find(tune) for tune in components.parent}, len(rows), tunes_without_voices,
                    candidate_pairs, matched_pairs)


@dataclass
class HeldOutContent:
    """What one held-out split is made of, and which of it was found in train."""

    tunes: list[int]
    values: np.ndarray  # every tune's distinct hashes, one after another
    owners: np.ndarray  # the position in `tunes` of each value's tune
    found: np.ndarray  # bool, per value

    @classmethod
    def of(cls, tunes_and_values: list[tuple[int, np.ndarray]]) -> "HeldOutContent":
        tunes = [tune for tune, _ in tunes_and_values]
        arrays = [values for _, values in tunes_and_values]
        values = np.concatenate(arrays) if arrays else np.zeros(0, np.uint64)
        owners = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
        return cls(tunes, values.astype(np.uint64), owners, np.zeros(len(values), dtype=bool))

    def summary(self) -> dict:
        """Pooled share of the split's hashes found in train, and the share of its tunes (those with any hash)
        with more than MOSTLY of theirs found there."""
        counts = np.bincount(self.owners, minlength=len(self.tunes))
        found = np.bincount(self.owners, weights=self.found, minlength=len(self.tunes))
        measured = counts > 0
        return {
            "found_in_train": round(float(self.found.mean()), 4) if len(self.found) else None,
            "tunes_mostly_in_train": (round(float((found[measured] / counts[measured] > MOSTLY).mean()), 4)
                                      if measured.any() else None),
            "tunes_measured": int(measured.sum()),
        }


class ContaminationMeter:
    """Marks which held-out hashes occur in train, for held-out splits too large to hold more than once: the
    held-out values are sorted once, and each train tune's values are looked up with a binary search."""

    def __init__(self, held_out: dict[str, HeldOutContent]):
        self.held_out = held_out
        values = np.concatenate([c.values for c in held_out.values()]) if held_out else np.zeros(0, np.uint64)
        self.unique, self._inverse = np.unique(values, return_inverse=True)
        self.found_unique = np.zeros(len(self.unique), dtype=bool)

    def add_train(self, values: np.ndarray) -> None:
        if not len(self.unique) or not len(values):
            return
        positions = np.minimum(np.searchsorted(self.unique, values), len(self.unique) - 1)
        hits = positions[self.unique[positions] == values]
        self.found_unique[hits] = True

    def finish(self) -> dict[str, dict]:
        start = 0
        for content in self.held_out.values():
            content.found = self.found_unique[self._inverse[start:start + len(content.values)]]
            start += len(content.values)
        return {split: content.summary() for split, content in self.held_out.items()}
