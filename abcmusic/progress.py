"""A one-line progress report for long loops: redrawn in place on a terminal, every 10% in a log file."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr, min_interval_s: float = 0.25):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.min_interval_s = min_interval_s
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._interactive = stream.isatty()

    def update(self, done: int = 1, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        now = time.monotonic()
        if self._interactive:
            if now - self._last_draw >= self.min_interval_s or self.done >= self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line(now))
                self.stream.flush()
        else:
            decile = 10 * self.done // self.total
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line(now) + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self._interactive:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        bar = "#" * (30 * self.done // self.total)
        # The first items' rate includes the pipeline's start-up (workers starting, imports): an estimate from
        # them said 20 hours for a conversion that took 40 s. None before 1% is done.
        if rate > 0 and 100 * self.done >= self.total:
            eta = f"{(self.total - self.done) / rate:.0f}s left"
        else:
            eta = "--"
        return (f"{self.label} [{bar:<30}] {self.done}/{self.total} ({self.failed} failed) "
                f"{rate:.1f}/s, {eta}")
