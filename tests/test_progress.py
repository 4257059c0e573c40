"""Progress: tqdm's bar on a terminal; a log file gets a line per 10%, no estimate from the first items alone."""

from __future__ import annotations

import io

from abcmusic.progress import Progress


def test_a_log_gets_a_line_per_tenth_and_an_estimate_only_after_one_percent():
    stream = io.StringIO()
    progress = Progress(1000, "convert", stream=stream)
    for _ in range(1000):
        progress.update()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # 0%, 10%, ..., 100%
    assert lines[0].startswith("convert [") and " 1/1000 (0 failed) " in lines[0]
    assert lines[0].endswith(", --")  # 1 item of 1000: no estimate
    assert all(line.endswith("s left") for line in lines[1:])
    assert lines[-1].startswith("convert [" + "#" * 30 + "] 1000/1000 (0 failed)")


def test_failures_are_counted_in_the_line():
    stream = io.StringIO()
    progress = Progress(4, "convert", stream=stream)
    progress.update(done=2, failed=1)
    assert "2/4 (1 failed)" in stream.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_redrawn_in_place_with_the_failures():
    stream = _Terminal()
    progress = Progress(4, "convert", stream=stream)
    progress.update(done=2, failed=1)
    progress.update(done=2)
    progress.close()
    shown = stream.getvalue()
    assert "\r" in shown and shown.count("\n") <= 1  # redrawn in place, one newline when closed
    assert "convert" in shown and "4/4" in shown and "1 failed" in shown
