"""Convert a list of MIDI files in parallel with Ray Data: one task per chunk of files.

Each task packs the tunes it converted into a Parquet part (bytes) and returns it with a small summary row per
file (status, reason, hash, character set); the driver writes each part to the staging folder, named by chunk
number, as it arrives. Tasks therefore share no folder with the driver: with the MIDI folder on object storage
they run on any node. The driver holds a chunk's part or two at a time (at most MAX_FILES_PER_TASK tunes each), so
memory stays flat however many files there are, and the parts can be read back in chunk order, which makes the
output independent of task scheduling.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from abcmusic.data.convert import ConvertLimits, convert_file
from abcmusic.data.midi_folder import open_midi_folder
from abcmusic.publish import write_file_atomically

PART_SCHEMA = pa.schema([
    ("file_index", pa.int64()),
    ("source_path", pa.string()),
    ("abc", pa.string()),
    # The tune's sketch (abcmusic.data.near_duplicates.TuneSketch); the signatures flattened, NUM_PERM per voice.
    ("voice_signatures", pa.list_(pa.uint64())),
    ("stretches", pa.list_(pa.uint64())),
])
MAX_FILES_PER_TASK = 64
TASK_CPUS = 0.5


@dataclass
class FileSummary:
    file_index: int
    source_path: str
    status: str
    reason: str
    detail: str
    content_hash: str
    n_chars: int
    distinct_chars: str
    changed_by: list[str]
    text_events_removed: int


def files_per_task(n_files: int, n_cpus: int) -> int:
    """About 8 tasks per CPU for load balance, at most 64 files per task to keep per-task overhead small."""
    return max(1, min(MAX_FILES_PER_TASK, math.ceil(n_files / (8 * max(1, n_cpus)))))


def part_path(parts_dir: Path, chunk_index: int) -> Path:
    return parts_dir / f"part-{chunk_index:07d}.parquet"


def convert_chunk(row: dict[str, Any], midi_dir: str, limits: ConvertLimits) -> list[dict[str, Any]]:
    """Ray Data flat_map function: convert one chunk of files; one summary row per file, the first one also
    carrying the chunk's Parquet part (the others an empty `part`)."""
    folder = open_midi_folder(midi_dir)
    rows, kept = [], []
    with tempfile.TemporaryDirectory(prefix="abcmusic-convert-") as work_dir:
        for file_index, source_path in zip(row["file_indices"], row["source_paths"]):
            converted = convert_file(folder, source_path, Path(work_dir), limits)
            if converted.status == "ok":
                kept.append((file_index, source_path, converted.abc, converted.sketch))
            rows.append(asdict(FileSummary(
                file_index=int(file_index),
                source_path=source_path,
                status=converted.status,
                reason=converted.reason,
                detail=converted.detail,
                content_hash=converted.content_hash,
                n_chars=len(converted.abc),
                distinct_chars="".join(sorted(set(converted.abc))),
                changed_by=converted.changed_by,
                text_events_removed=converted.text_events_removed,
            )) | {"chunk_index": int(row["chunk_index"]), "part": b""})
    table = pa.table(
        {
            "file_index": [k[0] for k in kept],
            "source_path": [k[1] for k in kept],
            "abc": [k[2] for k in kept],
            "voice_signatures": [k[3].voice_signatures.ravel() for k in kept],
            "stretches": [k[3].stretches for k in kept],
        },
        schema=PART_SCHEMA,
    )
    part = pa.BufferOutputStream()
    pq.write_table(table, part)
    rows[0]["part"] = part.getvalue().to_pybytes()
    return rows


def write_part(parts_dir: Path, row: dict[str, Any]) -> None:
    """Write the part a summary row carries, if it carries one (write-then-rename: never a torn part)."""
    if not row["part"]:
        return
    write_file_atomically(part_path(parts_dir, int(row["chunk_index"])), row["part"])


def convert_all(
    midi_dir: str | Path,
    source_paths: list[str],
    parts_dir: Path,
    limits: ConvertLimits,
    n_cpus: int,
    spread_over_nodes: bool = False,
) -> Iterator[FileSummary]:
    """Run the conversion on the current Ray cluster; writes each chunk's part to `parts_dir` and yields each
    file's summary as tasks finish.

    `midi_dir` is a local folder or an object-storage URI. Tasks run on this (the driver's) node unless
    `spread_over_nodes` says every node can read `midi_dir`: a URI, or a folder every node mounts at the same path."""
    import ray
    import ray.data
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    chunk_size = files_per_task(len(source_paths), n_cpus)
    chunks = [
        {
            "chunk_index": chunk_index,
            "file_indices": list(range(start, min(start + chunk_size, len(source_paths)))),
            "source_paths": source_paths[start:start + chunk_size],
        }
        for chunk_index, start in enumerate(range(0, len(source_paths), chunk_size))
    ]
    # Two tasks per CPU: a task spends ~0.17 s waiting on Ray Data's dispatch between ~0.8 s chunks, and with one
    # task per CPU that wait left the core idle (benchmarks/prepare_bench.py measured 1.4x instead of ~1.9x).
    # The work is mostly midi2abc subprocesses, so two tasks share a core without slowing each other down.
    dataset = ray.data.from_items(chunks, override_num_blocks=len(chunks)).flat_map(
        convert_chunk,
        fn_kwargs={"midi_dir": str(midi_dir), "limits": limits},
        num_cpus=TASK_CPUS,
        **({} if spread_over_nodes else {"scheduling_strategy": NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)}),
    )
    for row in dataset.iter_rows():
        write_part(parts_dir, row)
        summary = FileSummary(**{k: row[k] for k in FileSummary.__dataclass_fields__})
        summary.changed_by = list(summary.changed_by)
        yield summary
