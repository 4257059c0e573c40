"""A split read as one token stream: separators between tunes, every token in place."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abcmusic.data.token_stream import load_token_stream, open_dataset
from abcmusic.errors import UserError


def test_stream_is_separator_then_each_tune(tmp_path):
    (tmp_path / "train").mkdir()
    table = pa.table({"token_ids": pa.array([[5, 6, 7], [8], [9, 10]], type=pa.list_(pa.uint16()))})
    pq.write_table(table.slice(0, 2), tmp_path / "train" / "part-00000.parquet")
    pq.write_table(table.slice(2), tmp_path / "train" / "part-00001.parquet")
    stream = load_token_stream(tmp_path, "train", separator_id=0)
    assert stream.tolist() == [0, 5, 6, 7, 0, 8, 0, 9, 10, 0]
    assert stream.dtype == np.uint16


def test_missing_dataset_says_to_run_prepare(tmp_path):
    with pytest.raises(UserError, match="run: python prepare.py"):
        open_dataset(tmp_path / "nothing")
