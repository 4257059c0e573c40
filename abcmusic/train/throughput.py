"""Peak matmul FLOP/s of the device a model trains on, measured, for model FLOPs utilisation (MFU)."""

from __future__ import annotations

import time

import torch

from abcmusic.train.precision import MATMUL_DTYPES, tf32_mode


def measure_peak_flops(device: torch.device, precision: str = "fp32", samples: int = 15) -> float:
    """FLOP/s of a large square matmul in the training precision (TF32 only under tf32), on the current torch
    thread count.

    The best of many short samples: other processes starting up on a shared machine slow some samples down, and
    an average over them reported a peak 5-20 times too low (and an MFU above 1)."""
    size = 1024 if device.type == "cpu" else 8192
    per_sample = 1 if device.type == "cpu" else 8
    dtype = MATMUL_DTYPES[precision]
    if device.type == "cpu" and dtype != torch.float32:
        dtype = torch.float32  # CPU autocast runs matmuls through bf16 kernels of varying speed: quote fp32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    with tf32_mode(precision):
        for _ in range(3):
            a @ b
        for _ in range(samples):
            synchronize(device)
            started = time.perf_counter()
            for _ in range(per_sample):
                a @ b
            synchronize(device)
            best = max(best, 2 * size**3 * per_sample / (time.perf_counter() - started))
    return best


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU, whose work is done when the call returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
