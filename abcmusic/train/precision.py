"""Numeric precision of a run: the dtype autocast computes in, and whether fp32 work may use TF32 tensor cores.

- fp32: IEEE fp32 throughout. PyTorch's defaults would let cuDNN (the LSTM) use TF32 while matmuls do not, so
  an "fp32" LSTM on an H100 trained in TF32 and read 144% MFU against the fp32 matmul peak; here both are off.
- tf32: fp32 tensors, TF32 matmuls and cuDNN kernels (10-bit mantissa) on GPUs that have them; fp32 on a CPU.
- bf16, fp16: autocast to that dtype for the forward pass (fp16 with a gradient scaler, in the loop).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal, get_args

import torch

Precision = Literal["fp32", "tf32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
MATMUL_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """The forward pass's autocast for `precision`: none for fp32 and tf32."""
    if precision in ("fp32", "tf32"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=MATMUL_DTYPES[precision])


@contextlib.contextmanager
def tf32_mode(precision: Precision) -> Iterator[None]:
    """TF32 on for matmuls and cuDNN under `tf32`, off otherwise; the process's previous settings are restored.

    Covers the backward pass too, which runs outside autocast: enter it around the whole training loop."""
    allowed = precision == "tf32"
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
