"""The progress line: a log file gets one line per 10%, and no time estimate from the first items alone."""

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
