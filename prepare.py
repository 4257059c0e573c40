"""Convert a folder of MIDI files to a tokenized ABC dataset. With no arguments: build and prepare the demo corpus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from abcmusic.cli import run_cli
from abcmusic.data.convert import ConvertLimits
from abcmusic.data.near_duplicates import NEAR_DUPLICATE_MODES, NearDuplicateConfig
from abcmusic.data.splits import SplitFractions
from abcmusic.errors import UserError

DEFAULT_DATA_ROOT = Path("data")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--midi-dir", help="folder of .mid/.midi files, searched recursively: a local path, or an "
                        "object-storage URI such as s3://bucket/lmd_full, which every node of the Ray cluster reads "
                        "and converts from (default: the demo corpus, built from music21's ABC tunes into "
                        "data/demo-midi)")
    parser.add_argument("--out", help="dataset folder, or an object-storage URI such as s3://bucket/data/lmd, to "
                        "write (default: data/demo with the demo corpus; required with --midi-dir)")
    parser.add_argument("--demo-tunes", type=int, help="build the demo corpus from this many tunes, spread over all "
                        "of music21's collections (default: all, about 13,000)")
    parser.add_argument("--splits", default="0.90,0.05,0.05", help="train,val,test fractions (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=ConvertLimits.timeout_s,
                        help="seconds midi2abc may spend on one file (default: %(default)s)")
    parser.add_argument("--max-abc-bytes", type=int, default=ConvertLimits.max_abc_bytes,
                        help="largest ABC output kept per file; larger is a failure (default: %(default)s)")
    parser.add_argument("--near-duplicates", choices=NEAR_DUPLICATE_MODES, default=NearDuplicateConfig.mode,
                        help="versions of one piece (same melody in any key, tempo or arrangement): 'group' puts all of "
                        "them in one split, 'drop' keeps one per group (the others go to rejected.jsonl), 'off' "
                        "splits every tune by its own hash (default: %(default)s)")
    parser.add_argument("--near-duplicate-threshold", type=float, default=NearDuplicateConfig.threshold,
                        help="Jaccard similarity of two voices' 7-note interval patterns from which their tunes are "
                        "versions of one piece (default: %(default)s, measured on POP909's versions; the index finds "
                        "pairs near 0.2 only in part, and from 0.45 almost all)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the dataset is up to date")
    parser.add_argument("--spread-over-nodes", action="store_true",
                        help="convert on every node of the Ray cluster; a local --midi-dir must then be on storage "
                        "every node mounts at the same path (default: on this node's CPUs only; implied by a "
                        "--midi-dir URI)")
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from abcmusic.data.prepare import PrepareConfig, prepare_to
    from abcmusic.data.report import manifest_table

    if args.midi_dir is None:
        from abcmusic.data.demo_corpus import build_demo_corpus

        if args.demo_tunes is not None and args.demo_tunes <= 0:
            raise UserError("--demo-tunes must be positive")
        suffix = "" if args.demo_tunes is None else f"-{args.demo_tunes}"
        midi_dir = build_demo_corpus(DEFAULT_DATA_ROOT / f"demo-midi{suffix}", args.demo_tunes)
        out_dir = args.out or str(DEFAULT_DATA_ROOT / "demo")
    else:
        if args.out is None:
            raise UserError("--out is required with --midi-dir")
        midi_dir, out_dir = args.midi_dir, args.out
    if args.timeout <= 0 or args.max_abc_bytes <= 0:
        raise UserError("--timeout and --max-abc-bytes must be positive")
    try:
        fractions = SplitFractions.parse(args.splits)
    except ValueError as error:
        raise UserError(f"--splits: {error}") from None
    try:
        near_duplicates = NearDuplicateConfig(args.near_duplicates, args.near_duplicate_threshold)
    except ValueError as error:
        raise UserError(f"--near-duplicate-threshold: {error}") from None
    config = PrepareConfig(
        midi_dir=midi_dir,
        out_dir=Path(out_dir),
        fractions=fractions,
        limits=ConvertLimits(timeout_s=args.timeout, max_abc_bytes=args.max_abc_bytes),
        near_duplicates=near_duplicates,
        force=args.force,
        ray_address=args.address,
        spread_over_nodes=args.spread_over_nodes,
    )
    manifest = prepare_to(config, str(out_dir))
    print(manifest_table(manifest))
    print(f"dataset: {out_dir}  (manifest.json, vocab.json, train/ val/ test/, rejected.jsonl, near_duplicate_groups.jsonl)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("prepare.py", main, sys.argv[1:]))
