"""Progress for long loops: tqdm's bar on a terminal, one whole line per 10% in a log file."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

_LOG_LINE = "{desc} [{bar:30}] {n}/{total} ({failed} failed) {rate_noinv:.1f}/s, "


def log_line(label: str, done: int, total: int, failed: int, elapsed_s: float) -> str:
    """One progress line for a log file, e.g. 'convert [###   ] 100/1000 (2 failed) 25.0/s, 36s left'."""
    # The first items' rate includes the pipeline's start-up (workers starting, imports): an estimate from
    # them said 20 hours for a conversion that took 40 s. None before 1% is done.
    estimate = "{remaining_s:.0f}s left" if 100 * done >= total else "--"
    return tqdm.format_meter(done, total, max(elapsed_s, 1e-9), prefix=label, ascii=" #",
                             bar_format=_LOG_LINE + estimate, failed=failed)


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr, min_interval_s: float = 0.25):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_decile = -1
        # A log file gets whole lines: tqdm's carriage returns would make one endless line of it.
        self._bar = None
        if stream.isatty():
            self._bar = tqdm(total=self.total, desc=label, file=stream, mininterval=min_interval_s,
                             postfix="0 failed")

    def update(self, done: int = 1, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        if self._bar is not None:
            if failed:
                self._bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self._bar.update(done)
            return
        decile = 10 * self.done // self.total
        if decile != self._last_decile:
            self._last_decile = decile
            elapsed_s = time.monotonic() - self.started
            self.stream.write(log_line(self.label, self.done, self.total, self.failed, elapsed_s) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
