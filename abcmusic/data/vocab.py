"""Character-level vocabulary: special tokens first, then every character of the training split in code-point order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

SEPARATOR = "<sep>"  # between tunes in the token stream; also where unconditional generation starts
UNKNOWN = "<unk>"  # a character that is not in the training split
TOKEN_DTYPE = np.uint16


@dataclass(frozen=True)
class Vocabulary:
    id_to_token: tuple[str, ...]

    @classmethod
    def from_characters(cls, characters: Iterable[str]) -> "Vocabulary":
        chars = sorted(set(characters))
        if any(len(c) != 1 for c in chars):
            raise ValueError("vocabulary characters must be single characters")
        return cls((SEPARATOR, UNKNOWN, *chars))

    @property
    def token_to_id(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.id_to_token)}

    @property
    def separator_id(self) -> int:
        return self.id_to_token.index(SEPARATOR)

    @property
    def unknown_id(self) -> int:
        return self.id_to_token.index(UNKNOWN)

    def __len__(self) -> int:
        return len(self.id_to_token)

    def encode(self, text: str) -> np.ndarray:
        lookup = self.token_to_id
        unknown = self.unknown_id
        return np.fromiter((lookup.get(c, unknown) for c in text), dtype=TOKEN_DTYPE, count=len(text))

    def ascii_lookup_table(self) -> np.ndarray:
        """ids indexed by byte value, for encoding ASCII text with one numpy gather."""
        table = np.full(256, self.unknown_id, dtype=TOKEN_DTYPE)
        for i, token in enumerate(self.id_to_token):
            if len(token) == 1 and ord(token) < 256:
                table[ord(token)] = i
        return table

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.id_to_token[i] for i in ids)

    def to_json(self) -> dict:
        return {
            "token_to_id": self.token_to_id,
            "id_to_token": list(self.id_to_token),
            "separator": SEPARATOR,
            "unknown": UNKNOWN,
        }

    def dumps(self) -> str:
        """The text of vocab.json."""
        return json.dumps(self.to_json(), indent=1, ensure_ascii=True) + "\n"

    def save(self, path: Path) -> None:
        path.write_text(self.dumps())

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        saved = json.loads(Path(path).read_text())
        vocab = cls(tuple(saved["id_to_token"]))
        if vocab.token_to_id != saved["token_to_id"]:
            raise ValueError(f"{path}: token_to_id and id_to_token disagree")
        return vocab
