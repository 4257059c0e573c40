"""Prompts for conditional samples: the header and first bar of real tunes, or fragments from a user's file."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pyarrow.parquet as pq

from abcmusic.data.vocab import Vocabulary
from abcmusic.errors import UserError
from abcmusic.notation.cleaning import normalize_line_endings

HEADER_FIELD = re.compile(r"^[A-Za-z]:")
BAR_LINE = re.compile(r"\|")


def header_and_first_bar(tune: str) -> str:
    """The tune's header lines through `K:` (with any %%MIDI lines among them), then its music up to and including
    the first bar line; the whole tune when it has no bar line."""
    lines = tune.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("K:"):
            head, body = "".join(lines[:i + 1]), "".join(lines[i + 1:])
            break
    else:
        return tune
    # Voice and directive lines right after K: belong to the set-up, not the first bar.
    while body and (HEADER_FIELD.match(body) or body.startswith("%")):
        line, _, body = body.partition("\n")
        head += line + "\n"
    bar = BAR_LINE.search(body)
    return head + (body[:bar.end()] if bar else body)


def split_tunes(dataset: Path, count: int, seed: int, split: str = "test") -> list[str]:
    """`count` tunes of a split of the dataset, chosen at random with `seed` (every tune when count >= the split)."""
    try:
        table = pq.read_table(dataset / split, columns=["abc"])
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the {split} split of {dataset} ({error}); is the dataset still there?") from None
    tunes = table["abc"].to_pylist()
    if count >= len(tunes):
        return tunes
    return [tunes[i] for i in sorted(random.Random(seed).sample(range(len(tunes)), count))]


def read_prompts_file(path: Path) -> list[str]:
    """Prompts separated by blank lines; each keeps its own line breaks and ends with one."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read prompts file {path}: {error}") from None
    prompts = [block.strip("\n") + "\n" for block in re.split(r"\n\s*\n", normalize_line_endings(text))
               if block.strip()]
    if not prompts:
        raise UserError(f"prompts file {path} holds no prompt (prompts are separated by blank lines)")
    return prompts


def encode_prompt(prompt: str, vocab: Vocabulary, where: str) -> list[int]:
    """[separator] + the prompt's tokens, refusing characters the model never saw."""
    unknown = sorted({c for c in prompt if c not in vocab.token_to_id})
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5])
        raise UserError(f"{where} has character(s) outside the model's vocabulary: {shown}")
    return [vocab.separator_id, *(int(i) for i in vocab.encode(prompt))]
