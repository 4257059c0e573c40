"""The models: a GPT and an LSTM over character tokens, and the parameter-count convention they share.

Both architectures count parameters the same way (Kaplan et al. 2020, who fit scaling laws on non-embedding
parameters): `total` is every distinct parameter, tied weights counted once; `non_embedding` is `total` minus
every vocabulary- or position-indexed tensor: the token embedding, the position embedding (GPT), and the output
head's weight and bias where the head has them of its own (the LSTM's head bias is excluded even when its weight
is tied to the embedding).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamCounts:
    total: int
    non_embedding: int
