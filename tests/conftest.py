"""Shared test fixtures: where the real data lives, and how to run the CLIs as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


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


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        # A private HOME keeps a user's ~/.ray auth token and caches out of the tests.
        "HOME": str(home),
    })
    env.pop("RAY_ADDRESS", None)
    return env


def run_cli(script: str, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts (prepare.py, sweep.py, generate.py) in a fresh process."""
    home = cwd / ".home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *args],
        cwd=cwd, env=cli_env(home), capture_output=True, text=True, timeout=timeout,
    )


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
