"""prepare: a MIDI folder (local or on object storage) -> a tokenized ABC dataset (Parquet splits, vocab, manifest)."""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
import logging
import platform
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from abcmusic import tools
from abcmusic.notation.cleaning import CHECKS, REWRITES
from abcmusic.data import dataset_dir
from abcmusic.data.assemble import Selection, build_vocabulary, measure_contamination, select_tunes, write_splits
from abcmusic.data.conversion_job import FileSummary, convert_all
from abcmusic.data.convert import ConvertLimits
from abcmusic.data.midi_folder import MidiFile, open_midi_folder
from abcmusic.data.near_duplicates import MOSTLY, STRETCH_CHARS, NearDuplicateConfig
from abcmusic.data.splits import SplitFractions
from abcmusic.errors import UserError
from abcmusic.progress import Progress
from abcmusic.publish import remove_stale_staging, staging_dir
from abcmusic.ray_session import start_ray

GROUPS_FILE = "near_duplicate_groups.jsonl"
VALIDITY_SAMPLE = 200  # test tunes judged by abc2midi for the manifest's reference validity rate

# The modules whose code decides a dataset's content: a change to any of them makes an old dataset stale.
CONTENT_MODULES = ("notation/cleaning.py", "data/midi_text.py", "data/convert.py", "data/splits.py", "data/vocab.py",
                   "data/assemble.py", "data/melody.py", "data/near_duplicates.py", "smf.py")


@dataclass(frozen=True)
class PrepareConfig:
    midi_dir: str | Path  # a local folder, or an object-storage URI (s3://, gs://, file://) every node reads
    out_dir: Path
    fractions: SplitFractions = field(default_factory=SplitFractions)
    limits: ConvertLimits = field(default_factory=ConvertLimits)
    near_duplicates: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)
    force: bool = False  # rebuild even when the dataset at out_dir is up to date
    ray_address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray
    spread_over_nodes: bool = False  # convert on every node: a local midi_dir is on storage all nodes mount


def _code_version() -> str:
    package_root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for module in CONTENT_MODULES:
        digest.update((package_root / module).read_bytes())
    return digest.hexdigest()[:16]


def _fingerprint(config: PrepareConfig, midi_files: list[MidiFile], tool_versions: dict) -> str:
    """Inputs (path, size, mtime), settings, code and tool versions: equal fingerprints, equal datasets."""
    digest = hashlib.sha256()
    digest.update(json.dumps([asdict(config.fractions), asdict(config.limits), asdict(config.near_duplicates),
                              _code_version(), tool_versions], sort_keys=True).encode())
    for midi_file in midi_files:
        digest.update(f"{midi_file.path}\0{midi_file.size}\0{midi_file.mtime_ns}\n".encode())
    return digest.hexdigest()


def start_ray_for_conversion(address: str | None, whole_cluster: bool) -> tuple[int, bool]:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray; returns (the CPUs conversion may use:
    the whole cluster's or this node's, whether we started Ray)."""
    import ray
    import ray.data

    started = start_ray(address)
    # prepare draws its own progress line; Ray Data's bars and per-dataset INFO logs would repeat it.
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    if whole_cluster:
        n_cpus = int(ray.cluster_resources().get("CPU", 1))
    else:
        this_node = ray.get_runtime_context().get_node_id()
        node = next(n for n in ray.nodes() if n["NodeID"] == this_node)
        n_cpus = int(node["Resources"].get("CPU", 1))
    # The CPUs the cluster has now: Ray Data would otherwise ask the autoscaler for more nodes when they are busy,
    # and cluster.yaml's worker nodes are GPU machines.
    context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(cpu=n_cpus)
    return n_cpus, started


def ray_version() -> str:
    import ray

    return ray.__version__


def pyarrow_version() -> str:
    import pyarrow

    return pyarrow.__version__


def _count_outcomes(summaries: list[FileSummary]) -> dict:
    failed = collections.Counter(s.reason for s in summaries if s.status == "failed")
    dropped = collections.Counter(s.reason for s in summaries if s.status == "dropped")
    changed = collections.Counter(rule for s in summaries if s.status != "failed" for rule in s.changed_by)
    return {
        "failed_by_reason": dict(sorted(failed.items())),
        "cleaning": {name: {"changed": changed.get(name, 0)} for name, _ in REWRITES}
        | {name: {"dropped": sum(dropped.values())} for name, _ in CHECKS},
        "dropped_by_reason": dict(sorted(dropped.items())),
        "text_events_removed": sum(s.text_events_removed for s in summaries),
    }


def _write_rejected(path: Path, summaries: list[FileSummary], selection: Selection) -> None:
    with open(path, "w") as rejected:
        for summary in summaries:
            if summary.status != "ok":
                stage = "convert" if summary.status == "failed" else "clean"
                rejected.write(json.dumps({"source_path": summary.source_path, "stage": stage,
                                           "reason": summary.reason, "detail": summary.detail}) + "\n")
        for duplicate in selection.duplicates:
            rejected.write(json.dumps({"source_path": duplicate.source_path, "stage": "dedupe",
                                       "reason": "duplicate",
                                       "detail": f"same cleaned tune as {duplicate.duplicate_of}"}) + "\n")
        for version in selection.near_duplicates:
            rejected.write(json.dumps({"source_path": version.source_path, "stage": "near_duplicates",
                                       "reason": "near_duplicate", "representative": version.duplicate_of,
                                       "detail": f"a version of the same piece as {version.duplicate_of}"}) + "\n")


def _write_groups(path: Path, summaries: list[FileSummary], selection: Selection, groups: list[list[int]]) -> None:
    """One line per group of two or more versions: its tunes (the kept one first) and its split."""
    path_of = {s.file_index: s.source_path for s in summaries}
    with open(path, "w") as lines:
        for members in groups:
            lines.write(json.dumps({"split": selection.split_by_index[members[0]],
                                    "tunes": [path_of[i] for i in members]}) + "\n")


def near_duplicate_counts(config: NearDuplicateConfig, selection: Selection, groups: list[list[int]]) -> dict:
    counts: dict = {"mode": config.mode, "threshold": config.threshold}
    grouping = selection.grouping
    if grouping is not None:
        counts |= {
            "voices_compared": grouping.voices_compared,
            "tunes_without_voices": grouping.tunes_without_voices,
            "candidate_voice_pairs": grouping.candidate_pairs,
            "matched_voice_pairs": grouping.matched_pairs,
            "groups": len(groups),
            "tunes_in_groups": sum(len(g) for g in groups),
            "largest_group": max((len(g) for g in groups), default=0),
            "dropped": len(selection.near_duplicates),
        }
    return counts


CONTAMINATION_MEASURE = (
    f"what of each held-out split occurs verbatim in train, in {STRETCH_CHARS}-character stretches of the music "
    f"lines (a sample of them fixed by content): found_in_train is the share of the split's distinct stretches "
    f"found in train, tunes_mostly_in_train the share of its tunes with more than {MOSTLY:.0%} of theirs found there")


def judge_split(split_dir: Path, count: int) -> dict:
    """abc2midi's verdict on up to `count` tunes of a written split (a fixed random choice): the rate that
    generated samples are compared against."""
    import pyarrow.parquet as pq

    from abcmusic.notation.validity import reason_counts, valid_fraction, validate_tunes

    tunes = pq.read_table(split_dir, columns=["abc"])["abc"].to_pylist() if any(split_dir.glob("*.parquet")) else []
    if not tunes:
        return {"judged": 0, "valid_fraction": None, "invalid_by_reason": {}}
    if len(tunes) > count:
        tunes = [tunes[i] for i in sorted(random.Random(0).sample(range(len(tunes)), count))]
    verdicts = validate_tunes(tunes)
    return {"judged": len(tunes), "valid_fraction": round(valid_fraction(verdicts), 4),
            "invalid_by_reason": reason_counts([v for v in verdicts if not v.valid])}


def prepare(config: PrepareConfig, log: Callable[[str], None] = print) -> dict:
    """Build the dataset at `config.out_dir` and return its manifest (an up-to-date one is reused)."""
    started_at = time.monotonic()
    midi_folder, out_dir = open_midi_folder(config.midi_dir), config.out_dir.resolve()
    midi_files = midi_folder.list_midi_files()
    if not midi_files:
        raise UserError(f"--midi-dir {config.midi_dir} holds no .mid or .midi files")
    source_paths = [midi_file.path for midi_file in midi_files]
    tools.require("midi2abc", "abc2midi", "prlimit")
    existing = dataset_dir.check_output_dir(out_dir)
    tool_versions = {"midi2abc": tools.version("midi2abc")}
    fingerprint = _fingerprint(config, midi_files, tool_versions)
    if existing is not None and existing.get("fingerprint") == fingerprint and not config.force:
        log(f"{config.out_dir} is up to date with {len(source_paths)} files in {config.midi_dir} (use --force to rebuild)")
        return existing
    discover_seconds = time.monotonic() - started_at

    for stale in remove_stale_staging(out_dir):
        log(f"removed {stale.name}, left by an unfinished run")
    ray_started = False
    with staging_dir(out_dir) as staging:
        try:
            ray_start = time.monotonic()
            # Tasks can run on any node when every node reads the MIDI folder: a URI, or a shared mount.
            spread_over_nodes = config.spread_over_nodes or midi_folder.is_uri
            n_cpus, ray_started = start_ray_for_conversion(config.ray_address, spread_over_nodes)
            ray_seconds = time.monotonic() - ray_start
            log(f"converting {len(source_paths)} MIDI files from {config.midi_dir} on {n_cpus} CPUs")
            parts_dir = staging / "converted"
            parts_dir.mkdir()
            convert_start = time.monotonic()
            progress = Progress(len(source_paths), "midi2abc")
            summaries = []
            for summary in convert_all(midi_folder.location, source_paths, parts_dir, config.limits, n_cpus,
                                       spread_over_nodes):
                summaries.append(summary)
                progress.update(failed=summary.status == "failed")
            progress.close()
            summaries.sort(key=lambda s: s.file_index)
            convert_seconds = time.monotonic() - convert_start
            if len(summaries) != len(source_paths):
                raise RuntimeError(f"conversion returned {len(summaries)} results for {len(source_paths)} files")

            group_start = time.monotonic()
            selection = select_tunes(summaries, config.fractions, parts_dir, config.near_duplicates)
            group_seconds = time.monotonic() - group_start
            assemble_start = time.monotonic()
            vocab = build_vocabulary(summaries, selection)
            splits = write_splits(parts_dir, staging, selection, vocab)
            contamination_start = time.monotonic()
            contamination = measure_contamination(parts_dir, selection)
            contamination_seconds = time.monotonic() - contamination_start
            shutil.rmtree(parts_dir)
            vocab.save(staging / "vocab.json")
            _write_rejected(staging / "rejected.jsonl", summaries, selection)
            groups = selection.grouping.groups() if selection.grouping else []
            _write_groups(staging / GROUPS_FILE, summaries, selection, groups)
            outcomes = _count_outcomes(summaries)
            test_validity = judge_split(staging / "test", VALIDITY_SAMPLE)
            manifest = {
                "format": dataset_dir.DATASET_FORMAT,
                "format_version": dataset_dir.FORMAT_VERSION,
                "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "midi_dir": midi_folder.location,
                "fingerprint": fingerprint,
                "config": {"fractions": asdict(config.fractions), "limits": asdict(config.limits),
                           "near_duplicates": asdict(config.near_duplicates)},
                "files": {
                    "found": len(source_paths),
                    "converted": sum(s.status != "failed" for s in summaries),
                    "failed": sum(s.status == "failed" for s in summaries),
                },
                **outcomes,
                "tunes_after_cleaning": sum(s.status == "ok" for s in summaries),
                "duplicates": len(selection.duplicates),
                "near_duplicates": near_duplicate_counts(config.near_duplicates, selection, groups),
                "tunes": len(selection.split_by_index),
                "splits": splits,
                "contamination": {"measure": CONTAMINATION_MEASURE} | contamination,
                "vocab_size": len(vocab),
                "test_validity": test_validity,
                "tools": tool_versions | {"python": platform.python_version(), "ray": ray_version(),
                                          "pyarrow": pyarrow_version(), "code": _code_version()},
                "seconds": {
                    "discover": round(discover_seconds, 2),
                    "ray_start": round(ray_seconds, 2),
                    "convert": round(convert_seconds, 2),
                    "dedupe_and_group": round(group_seconds, 2),
                    "contamination": round(contamination_seconds, 2),
                    "assemble": round(time.monotonic() - assemble_start - contamination_seconds, 2),
                    "total": round(time.monotonic() - started_at, 2),
                },
            }
            dataset_dir.write_json_atomically(staging / dataset_dir.MANIFEST, manifest)
            dataset_dir.publish(staging, out_dir)
            return manifest
        finally:
            if ray_started:
                import ray

                ray.shutdown()


def prepare_to(config: PrepareConfig, out_location: str, log: Callable[[str], None] = print) -> dict:
    """prepare() into a local folder, or, for an object-storage URI, into this machine's cache and then up to the
    URI (skipped when the dataset there already has the same fingerprint)."""
    from abcmusic.data import remote
    from abcmusic.storage import is_uri

    if not is_uri(out_location):
        return prepare(replace(config, out_dir=Path(out_location)), log)
    local_dir = remote.cache_root() / "prepare" / hashlib.sha256(out_location.encode()).hexdigest()[:16]
    manifest = prepare(replace(config, out_dir=local_dir), log)
    existing = remote.read_remote_manifest(out_location)
    if existing is not None and existing.get("fingerprint") == manifest["fingerprint"] and not config.force:
        log(f"{out_location} already holds this dataset")
        return manifest
    log(f"uploading the dataset to {out_location}")
    remote.upload_dataset(local_dir, out_location)
    return manifest
