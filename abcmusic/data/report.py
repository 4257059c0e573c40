"""The closing summary of a prepare run: the manifest as a table a person can read."""

from __future__ import annotations


def manifest_table(manifest: dict) -> str:
    files, splits = manifest["files"], manifest["splits"]
    rows: list[tuple[str, str]] = [
        ("MIDI files found", f"{files['found']:,}"),
        ("converted by midi2abc", f"{files['converted']:,}"),
        ("failed", f"{files['failed']:,}"),
    ]
    rows += [(f"  failed: {reason}", f"{n:,}") for reason, n in manifest["failed_by_reason"].items()]
    rows += [(f"  cleaning changed: {rule}", f"{c['changed']:,}")
             for rule, c in manifest["cleaning"].items() if "changed" in c]
    rows += [(f"  cleaning dropped: {reason}", f"{n:,}") for reason, n in manifest["dropped_by_reason"].items()]
    rows += [
        ("text/lyric meta events removed", f"{manifest['text_events_removed']:,}"),
        ("tunes after cleaning", f"{manifest['tunes_after_cleaning']:,}"),
        ("duplicates dropped", f"{manifest['duplicates']:,}"),
    ]
    near = manifest["near_duplicates"]
    if near["mode"] == "off":
        rows.append(("near-duplicate versions", "not grouped (--near-duplicates off)"))
    else:
        rows.append((f"versions of one piece (threshold {near['threshold']})",
                     f"{near['groups']:,} groups, {near['tunes_in_groups']:,} tunes, largest {near['largest_group']:,}"))
        if near["mode"] == "drop":
            rows.append(("  versions dropped", f"{near['dropped']:,}"))
    rows.append(("tunes kept", f"{manifest['tunes']:,}"))
    for split, stats in splits.items():
        unknown = f", {stats['unknown_tokens']:,} <unk>" if stats["unknown_tokens"] else ""
        rows.append((f"  {split}", f"{stats['tunes']:,} tunes, {stats['tokens']:,} tokens{unknown}"))
    for split in ("val", "test"):
        found = manifest["contamination"][split]
        if found["found_in_train"] is not None:
            rows.append((f"  {split} music found verbatim in train",
                         f"{found['found_in_train']:.1%}; {found['tunes_mostly_in_train']:.1%} of tunes mostly"))
    validity = manifest.get("test_validity") or {}
    if validity.get("judged"):
        rows.append(("test tunes playable (abc2midi)",
                     f"{validity['valid_fraction']:.1%} of {validity['judged']:,} judged"))
    rows += [
        ("vocabulary size", str(manifest["vocab_size"])),
        ("seconds (Ray start, convert, total)",
         f"{manifest['seconds']['ray_start']}, {manifest['seconds']['convert']}, {manifest['seconds']['total']}"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
