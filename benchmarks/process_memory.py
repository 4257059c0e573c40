"""What a benchmark's process tree holds, from /proc: its processes, their PSS and RSS, and the peak over a run."""

from __future__ import annotations

import os
import threading


def process_tree(root_pid: int) -> list[int]:
    """root_pid and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat_file:
                    stat = stat_file.read()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry))
    tree, stack = [], [root_pid]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def memory_bytes(pids: list[int]) -> tuple[int, int]:
    """(PSS, RSS) summed over the processes. PSS splits shared pages (libraries, Ray's object store) between the
    processes that map them, so it adds up to what they really hold; RSS counts them once per process."""
    pss = rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return pss, rss


class PeakMemory:
    """Samples the memory of this process's tree in a background thread, at the start, every `interval_s` and at
    the end; `include_self=False` leaves this (the measuring) process out.

    Reading smaps_rollup costs ~28 ms of CPU for a Ray process tree: sampling at 10 Hz took a quarter of a core
    from the Ray side only and biased prepare_bench's ratio against it."""

    def __init__(self, interval_s: float = 1.0, include_self: bool = True) -> None:
        self.interval_s = interval_s
        self.include_self = include_self
        self.peak_pss = self.peak_rss = 0

    def __enter__(self) -> "PeakMemory":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._record()
            self._stop.wait(self.interval_s)

    def _record(self) -> None:
        pids = process_tree(os.getpid())
        pss, rss = memory_bytes(pids if self.include_self else pids[1:])
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._record()
