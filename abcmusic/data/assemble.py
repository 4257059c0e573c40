"""Turn converted tunes into the dataset: drop duplicates, group versions, assign splits, build the vocabulary,
write token ids, and measure what the held-out splits share with train."""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from abcmusic.data.conversion_job import FileSummary
from abcmusic.data.near_duplicates import (NUM_PERM, ContaminationMeter, Grouping, HeldOutContent, NearDuplicateConfig,
                                           group_tunes)
from abcmusic.data.splits import SPLITS, SplitFractions, assign_split
from abcmusic.data.vocab import TOKEN_DTYPE, Vocabulary

SPLIT_SCHEMA = pa.schema([
    ("source_path", pa.string()),
    ("content_hash", pa.string()),
    ("abc", pa.string()),
    ("token_ids", pa.list_(pa.uint16())),
    ("n_tokens", pa.int64()),
])
MAX_ROWS_PER_FILE = 50_000


@dataclass(frozen=True)
class Duplicate:
    source_path: str
    duplicate_of: str


@dataclass
class Selection:
    split_by_index: dict[int, str]  # file_index of each kept tune -> its split
    hash_by_index: dict[int, str]
    duplicates: list[Duplicate]  # the same cleaned tune as a kept one
    near_duplicates: list[Duplicate]  # versions of a kept tune's piece, left out with --near-duplicates drop
    grouping: Grouping | None  # None with --near-duplicates off


def drop_exact_duplicates(summaries: Iterable[FileSummary]) -> tuple[list[FileSummary], list[Duplicate]]:
    """The first file (in sorted path order) of each distinct cleaned tune, and the others as duplicates of it."""
    first_by_hash: dict[str, FileSummary] = {}
    duplicates = []
    for summary in sorted((s for s in summaries if s.status == "ok"), key=lambda s: s.file_index):
        first = first_by_hash.setdefault(summary.content_hash, summary)
        if first is not summary:
            duplicates.append(Duplicate(summary.source_path, first.source_path))
    return list(first_by_hash.values()), duplicates


def part_arrays(parts_dir: Path, column: str) -> Iterator[tuple[int, np.ndarray]]:
    """Each staged tune's file_index and its uint64 list `column` as an array (a view, no Python objects per
    value), in chunk order."""
    for part in sorted(parts_dir.glob("part-*.parquet")):
        table = pq.read_table(part, columns=["file_index", column])
        lists = table[column].combine_chunks()
        values = lists.flatten().to_numpy(zero_copy_only=False)
        offsets = lists.offsets.to_numpy() - lists.offsets[0].as_py()
        for row, file_index in enumerate(table["file_index"].to_numpy()):
            yield int(file_index), values[offsets[row]:offsets[row + 1]]


def group_versions(parts_dir: Path, kept: list[FileSummary], threshold: float) -> Grouping:
    wanted = {s.file_index for s in kept}
    signatures = ((file_index, values.reshape(-1, NUM_PERM))
                  for file_index, values in part_arrays(parts_dir, "voice_signatures") if file_index in wanted)
    return group_tunes(signatures, threshold)


def split_key(content_hashes: list[str]) -> str:
    """The hash a group's split is cut from: a lone tune's own, else a hash of the group's smallest one (the smallest
    of several hashes is not uniform: used as it is, it would put groups in train far more often)."""
    if len(content_hashes) == 1:
        return content_hashes[0]
    return hashlib.sha256(f"group of {min(content_hashes)}".encode()).hexdigest()


def select_tunes(summaries: Iterable[FileSummary], fractions: SplitFractions, parts_dir: Path | None,
                 near_duplicates: NearDuplicateConfig) -> Selection:
    """Drop exact duplicates, group the versions of each piece, and give each group one split, cut from its
    `split_key`; with mode "drop", keep only each group's first tune (in sorted path order). `parts_dir` holds
    the staged parts the sketches are read from; with mode "off" nothing is read from it."""
    kept, duplicates = drop_exact_duplicates(summaries)
    grouping = None if near_duplicates.mode == "off" else group_versions(parts_dir, kept, near_duplicates.threshold)
    summary_by_index = {s.file_index: s for s in kept}
    root_of = grouping.group_of if grouping else {i: i for i in summary_by_index}
    members: dict[int, list[str]] = collections.defaultdict(list)
    for summary in kept:
        members[root_of[summary.file_index]].append(summary.content_hash)
    group_hash = {root: split_key(hashes) for root, hashes in members.items()}
    split_by_index, dropped = {}, []
    for summary in kept:
        root = root_of[summary.file_index]
        if near_duplicates.mode == "drop" and root != summary.file_index:
            dropped.append(Duplicate(summary.source_path, summary_by_index[root].source_path))
            continue
        split_by_index[summary.file_index] = assign_split(group_hash[root], fractions)
    return Selection(
        split_by_index=split_by_index,
        hash_by_index={i: summary_by_index[i].content_hash for i in split_by_index},
        duplicates=duplicates,
        near_duplicates=dropped,
        grouping=grouping,
    )


def measure_contamination(parts_dir: Path, selection: Selection) -> dict[str, dict]:
    """For validation and test, the share of their 32-character stretches of music found verbatim in train."""
    by_split: dict[str, list] = {"val": [], "test": []}
    for file_index, stretches in part_arrays(parts_dir, "stretches"):
        split = selection.split_by_index.get(file_index)
        if split in by_split:
            by_split[split].append((file_index, stretches))
    meter = ContaminationMeter({split: HeldOutContent.of(tunes) for split, tunes in by_split.items()})
    for file_index, stretches in part_arrays(parts_dir, "stretches"):
        if selection.split_by_index.get(file_index) == "train":
            meter.add_train(stretches)
    return meter.finish()


def build_vocabulary(summaries: Iterable[FileSummary], selection: Selection) -> Vocabulary:
    characters: set[str] = set()
    for summary in summaries:
        if selection.split_by_index.get(summary.file_index) == "train":
            characters.update(summary.distinct_chars)
    return Vocabulary.from_characters(characters)


def encode_batch(texts: list[str], lookup_table: np.ndarray) -> tuple[pa.ListArray, np.ndarray, np.ndarray]:
    """Token ids for a batch of ASCII tunes with one gather: the list column, each tune's length, the flat ids."""
    encoded = [text.encode("ascii") for text in texts]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = lookup_table[np.frombuffer(b"".join(encoded), dtype=np.uint8)].astype(TOKEN_DTYPE, copy=False)
    column = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids, type=pa.uint16()))
    return column.cast(pa.list_(pa.uint16())), lengths, ids


class SplitWriter:
    """Appends rows to <out>/<split>/part-NNNNN.parquet, starting a new file every MAX_ROWS_PER_FILE rows."""

    def __init__(self, directory: Path, max_rows_per_file: int = MAX_ROWS_PER_FILE):
        self.directory = directory
        self.max_rows_per_file = max_rows_per_file
        self.files_written = 0
        self.rows_in_file = 0
        self.tunes = 0
        self.tokens = 0
        self.unknown_tokens = 0
        self._writer: pq.ParquetWriter | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, table: pa.Table, unknown_tokens: int) -> None:
        if self._writer is None or self.rows_in_file >= self.max_rows_per_file:
            self._open_next_file()
        self._writer.write_table(table)
        self.rows_in_file += table.num_rows
        self.tunes += table.num_rows
        self.tokens += int(pa.compute.sum(table["n_tokens"]).as_py() or 0)
        self.unknown_tokens += unknown_tokens

    def _open_next_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = pq.ParquetWriter(self.directory / f"part-{self.files_written:05d}.parquet", SPLIT_SCHEMA)
        self.files_written += 1
        self.rows_in_file = 0

    def close(self) -> dict[str, int]:
        if self._writer is None:
            self._open_next_file()  # an empty split still gets a readable file with the schema
        self._writer.close()
        return {"tunes": self.tunes, "tokens": self.tokens, "unknown_tokens": self.unknown_tokens,
                "files": self.files_written}


def write_splits(parts_dir: Path, out_dir: Path, selection: Selection, vocab: Vocabulary) -> dict[str, dict]:
    """Stream the staged parts in chunk order into one Parquet folder per split."""
    lookup_table = vocab.ascii_lookup_table()
    writers = {split: SplitWriter(out_dir / split) for split in SPLITS}
    for part in sorted(parts_dir.glob("part-*.parquet")):
        table = pq.read_table(part)
        indices = table["file_index"].to_pylist()
        keep = [selection.split_by_index.get(i) for i in indices]
        for split, writer in writers.items():
            rows = [row for row, s in enumerate(keep) if s == split]
            if not rows:
                continue
            subset = table.take(rows)
            texts = subset["abc"].to_pylist()
            token_ids, lengths, flat_ids = encode_batch(texts, lookup_table)
            unknown = int(np.count_nonzero(flat_ids == vocab.unknown_id))
            writer.write(pa.table({
                "source_path": subset["source_path"],
                "content_hash": [selection.hash_by_index[i] for i in subset["file_index"].to_pylist()],
                "abc": subset["abc"],
                "token_ids": token_ids,
                "n_tokens": lengths,
            }, schema=SPLIT_SCHEMA), unknown)
    return {split: writer.close() for split, writer in writers.items()}
