"""Train/val/test assignment from a tune's content hash: deterministic, and a tune is never in two splits."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitFractions:
    train: float = 0.90
    val: float = 0.05
    test: float = 0.05

    def __post_init__(self) -> None:
        values = (self.train, self.val, self.test)
        if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-9 or self.train <= 0:
            raise ValueError(f"split fractions must be >= 0, train > 0, and sum to 1; got {values}")

    @classmethod
    def parse(cls, text: str) -> "SplitFractions":
        """Parse "0.9,0.05,0.05"."""
        parts = text.split(",")
        if len(parts) != 3:
            raise ValueError(f"expected three comma-separated fractions train,val,test; got {text!r}")
        try:
            return cls(*(float(part) for part in parts))
        except ValueError as error:
            raise ValueError(f"bad split fractions {text!r}: {error}") from None


def assign_split(content_hash: str, fractions: SplitFractions) -> str:
    """Place the hash's first 64 bits on [0, 2**64) and cut at the cumulative fractions, in integers so that no
    hash is rounded across a boundary."""
    position = int(content_hash[:16], 16)
    if position < int(fractions.train * 2**64):
        return "train"
    if position < int((fractions.train + fractions.val) * 2**64):
        return "val"
    return "test"
