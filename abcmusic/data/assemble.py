"""Turn converted tunes into the dataset: drop duplicates, assign splits, build the vocabulary, write token ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from abcmusic.data.conversion_job import FileSummary
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
    duplicates: list[Duplicate]


def select_tunes(summaries: Iterable[FileSummary], fractions: SplitFractions) -> Selection:
    """Keep the first file (in sorted path order) of each distinct cleaned tune and give it a split by hash."""
    first_by_hash: dict[str, FileSummary] = {}
    duplicates = []
    for summary in sorted((s for s in summaries if s.status == "ok"), key=lambda s: s.file_index):
        first = first_by_hash.setdefault(summary.content_hash, summary)
        if first is not summary:
            duplicates.append(Duplicate(summary.source_path, first.source_path))
    return Selection(
        split_by_index={s.file_index: assign_split(h, fractions) for h, s in first_by_hash.items()},
        hash_by_index={s.file_index: h for h, s in first_by_hash.items()},
        duplicates=duplicates,
    )


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
