"""The external programs abcmusic runs (Debian's abcmidi and abcm2ps): presence checks and versions."""

from __future__ import annotations

import shutil
import subprocess

from abcmusic.errors import UserError

APT_PACKAGE = {"midi2abc": "abcmidi", "abc2midi": "abcmidi", "abcm2ps": "abcm2ps", "prlimit": "util-linux"}


def require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        packages = sorted({APT_PACKAGE.get(p, p) for p in missing})
        raise UserError(f"{', '.join(missing)} not found on PATH; install it with: apt-get install {' '.join(packages)}")


def version(program: str) -> str:
    """The version line a program prints (midi2abc/abc2midi: `-ver`, abcm2ps: `-V`), or "unknown"."""
    flag = "-V" if program == "abcm2ps" else "-ver"
    try:
        completed = subprocess.run([program, flag], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"
