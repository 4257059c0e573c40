"""Peak matmul FLOP/s of the device a model trains on, measured, for model FLOPs utilisation (MFU)."""

from __future__ import annotations

import time

import torch


def measure_peak_flops(device: torch.device, precision: str = "fp32", seconds: float = 0.3) -> float:
    """FLOP/s of a large square matmul in the training precision, on the current torch thread count."""
    size = 1024 if device.type == "cpu" else 8192
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu" and dtype != torch.float32:
        dtype = torch.float32  # CPU autocast runs matmuls through bf16 kernels of varying speed: quote fp32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _synchronize(device)
    repeats, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        repeats += 1
        if repeats % 8 == 0:
            _synchronize(device)
    _synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
