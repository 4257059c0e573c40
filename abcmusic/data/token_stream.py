"""Read a prepared dataset's split as one contiguous token array: <sep> tune <sep> tune ... <sep>."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from abcmusic.data.dataset_dir import read_manifest
from abcmusic.data.vocab import TOKEN_DTYPE, Vocabulary
from abcmusic.errors import UserError


def open_dataset(dataset_dir: Path) -> tuple[dict, Vocabulary]:
    """The manifest and vocabulary of a complete dataset, or a UserError that says how to make one."""
    manifest = read_manifest(Path(dataset_dir))
    if manifest is None:
        raise UserError(f"no prepared dataset at {dataset_dir}; run: python prepare.py "
                        f"(or prepare.py --midi-dir DIR --out {dataset_dir})")
    return manifest, Vocabulary.load(Path(dataset_dir) / "vocab.json")


def load_token_stream(dataset_dir: Path, split: str, separator_id: int) -> np.ndarray:
    """Every tune of the split in file order, each preceded by the separator, plus a closing separator."""
    table = pq.read_table(Path(dataset_dir) / split, columns=["token_ids"])
    token_ids = table["token_ids"].combine_chunks()
    values = np.asarray(pc.list_flatten(token_ids), dtype=TOKEN_DTYPE)
    lengths = np.asarray(pc.list_value_length(token_ids), dtype=np.int64)
    stream = np.full(len(values) + len(lengths) + 1, separator_id, dtype=TOKEN_DTYPE)
    # Tune i (0-based) is preceded by i + 1 separators, so each of its tokens moves i + 1 places.
    shifts = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    stream[np.arange(len(values)) + shifts] = values
    return stream
