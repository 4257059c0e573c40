"""Fuzz test: prepare.py on a few hundred mutated real MIDI files: no crash, no hang, every file accounted for."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run_cli

pytestmark = pytest.mark.integration

N_MUTANTS = 300


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a MIDI file's bytes, and its name."""
    kind = rng.choice(["flip", "truncate", "insert", "delete", "chunk_length", "header", "repeat", "zero_run"])
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 20)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        buf = buf[:rng.randrange(1, len(buf))]
    elif kind == "insert":
        at = rng.randrange(len(buf))
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "delete":
        at = rng.randrange(len(buf))
        del buf[at:at + rng.randint(1, 64)]
    elif kind == "chunk_length":
        # Lie about a track chunk's length: shorter, longer or absurd.
        at = buf.find(b"MTrk", rng.randrange(max(1, len(buf) - 8)))
        at = at if at >= 0 else buf.find(b"MTrk")
        if at >= 0:
            buf[at + 4:at + 8] = struct.pack(">I", rng.choice([0, 1, 7, 0xFFFFFFFF, rng.randrange(1 << 20)]))
    elif kind == "header":
        # Format, track count or division replaced by random values.
        offset = rng.choice([8, 10, 12])
        buf[offset:offset + 2] = struct.pack(">H", rng.randrange(1 << 16))
    elif kind == "repeat":
        at, length = rng.randrange(len(buf)), rng.randint(1, 512)
        buf[at:at] = buf[at:at + length] * rng.randint(2, 50)
    else:
        at = rng.randrange(len(buf))
        buf[at:at + rng.randint(1, 256)] = bytes(rng.randint(1, 256))
    return kind, bytes(buf)


@pytest.fixture(scope="module")
def fuzzed_corpus(shared_data: Path, tmp_path_factory) -> Path:
    sources = sorted((shared_data / "midi" / "pop909").glob("*/*.mid"))[::40] + sorted(
        (shared_data / "midi" / "multitrack").glob("*.mid"))
    rng = random.Random(20261124)
    root = tmp_path_factory.mktemp("fuzz")
    for i in range(N_MUTANTS):
        source = rng.choice(sources)
        kind, data = mutate(source.read_bytes(), rng)
        (root / f"{i:03d}-{kind}-{source.stem}.mid").write_bytes(data)
    return root


def test_every_mutated_file_is_converted_or_rejected_with_a_reason(fuzzed_corpus, tmp_path):
    result = run_cli("prepare.py", "--midi-dir", str(fuzzed_corpus), "--out", "data/fuzz", cwd=tmp_path,
                     timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    out = tmp_path / "data" / "fuzz"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["found"] == N_MUTANTS
    assert manifest["files"]["converted"] + manifest["files"]["failed"] == N_MUTANTS
    assert sum(manifest["failed_by_reason"].values()) == manifest["files"]["failed"]

    kept = set()
    for split in ("train", "val", "test"):
        if any((out / split).glob("*.parquet")):
            kept |= set(pq.read_table(out / split, columns=["source_path"])["source_path"].to_pylist())
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert all(r["reason"] for r in rejected)
    rejected_paths = {r["source_path"] for r in rejected}
    assert not kept & rejected_paths
    everything = {p.name for p in fuzzed_corpus.iterdir()}
    accounted = {Path(p).name for p in kept | rejected_paths}
    assert accounted == everything, sorted(everything - accounted)[:10]
    # The mutations really hurt: some files fail, and many still convert.
    assert 0 < manifest["files"]["failed"] < N_MUTANTS and len(kept) > N_MUTANTS // 4
