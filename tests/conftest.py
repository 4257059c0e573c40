"""Shared test fixtures. Where the real data lives and how to run the CLIs come from abcmusic.testing, which the
benchmarks use too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from abcmusic.testing import REPO_ROOT, SHARED_DATA, cli_env, run_cli  # noqa: F401  (tests import them from here)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real MIDI and ABC files beside the repository; tests that need them skip where they are absent."""
    if not (SHARED_DATA / "midi").is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


def copy_pop909(shared_data: Path, root: Path, count: int) -> list[Path]:
    """Copy the first `count` POP909 songs to root/pop909/<song>/ (as they are laid out in the shared data); the
    source paths, in that order."""
    pop909 = sorted((shared_data / "midi" / "pop909").glob("*/*.mid"))[:count]
    for path in pop909:
        target = root / "pop909" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return pop909


def write_tiny_spec_with_compiled_gpt(path: Path) -> Path:
    """experiments/tiny.yaml with `compile: true` for its GPT sizes, written to `path`."""
    tiny = (REPO_ROOT / "experiments" / "tiny.yaml").read_text()
    gpt = "  gpt:\n    precision: fp32\n"
    assert gpt in tiny
    path.write_text(tiny.replace(gpt, gpt + "    compile: true\n"))
    return path


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """A project folder with a small prepared demo dataset at data/demo, as experiments/tiny.yaml expects."""
    root = tmp_path_factory.mktemp("project")
    prepared = run_cli("prepare.py", "--demo-tunes", "60", cwd=root)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    return root


@pytest.fixture(scope="session")
def tiny_sweep(tiny_project) -> subprocess.CompletedProcess:
    """The finished tiny sweep `t1` in tiny_project (2 GPT sizes, 1 LSTM size), shared by sweep and generate tests."""
    result = run_cli("sweep.py", "--experiment", "tiny", "--name", "t1", cwd=tiny_project)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result
