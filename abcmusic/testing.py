"""What the tests and the benchmarks share: where the checkout and its real test data are, and how to run the
top-level scripts (prepare.py, sweep.py, generate.py) in a fresh process as a user would.

The scripts live beside the package, not in it: this works in a checkout installed editable, as install.sh does.
Nothing in the pipeline imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def cli_env(home: Path) -> dict[str, str]:
    """This process's environment for a script, without telemetry, a joined cluster or the user's home."""
    env = dict(os.environ)
    env.update({
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        # A private HOME keeps a user's ~/.ray auth token and caches out.
        "HOME": str(home),
    })
    env.pop("RAY_ADDRESS", None)
    return env


def script_command(script: str, *args: str) -> list[str]:
    """The command line that runs a top-level script with this Python."""
    return [sys.executable, str(REPO_ROOT / script), *args]


def run_cli(script: str, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run one of the top-level scripts to the end in a fresh process, with cwd/.home as its home."""
    home = cwd / ".home"
    home.mkdir(exist_ok=True)
    return subprocess.run(script_command(script, *args), cwd=cwd, env=cli_env(home), capture_output=True, text=True,
                          timeout=timeout)
