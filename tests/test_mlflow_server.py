"""A sweep and generate.py against a real MLflow tracking server (MLFLOW_TRACKING_URI=http://...), started here on
127.0.0.1 with its own store and artifacts served by it; what they logged is read back through its REST API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from abcmusic.testing import cli_env, script_command

pytestmark = pytest.mark.integration

SERVER_START_GUARD_S = 300  # a hang guard, not a speed requirement: a busy 2-core machine starts it in ~10-30 s
SWEEP = "srv"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mlflow-server")
    url = f"http://127.0.0.1:{free_port()}"
    # One process: the server's job runner (7 more workers) serves nothing a sweep uses.
    env = cli_env(root) | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", url.rsplit(":", 1)[1], "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_GUARD_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the MLflow server did not answer /health"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def rest(url: str, path: str, body: dict | None = None, **query: str) -> dict:
    """One call of MLflow's REST API: GET with query parameters, or POST with a JSON body."""
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query)}"
                                                                        if query else ""),
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def run_against(url: str, cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    home = cwd / ".home"
    home.mkdir(exist_ok=True)
    return subprocess.run(script_command(script, *args), cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=cli_env(home) | {"MLFLOW_TRACKING_URI": url})


@pytest.fixture(scope="module")
def served_sweep(server, tiny_project) -> subprocess.CompletedProcess:
    result = run_against(server, tiny_project, "sweep.py", "--experiment", "tiny", "--arch", "gpt", "--name", SWEEP)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result


def test_a_sweep_logs_to_the_server_as_one_parent_with_trial_children(server, served_sweep, tiny_project):
    experiment = rest(server, "experiments/get-by-name", experiment_name=SWEEP)["experiment"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
    # the store is the server's: nothing was written beside the project
    assert experiment["artifact_location"].startswith("mlflow-artifacts:")
    runs = rest(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    tags = {run["info"]["run_id"]: {t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs}
    (parent,) = [run for run in runs if tags[run["info"]["run_id"]]["abcmusic.kind"] == "summary"]
    parent_id = parent["info"]["run_id"]
    children = [run for run in runs if tags[run["info"]["run_id"]]["abcmusic.kind"] == "trial"]
    assert sorted(run["info"]["run_name"] for run in children) == ["gpt-g1-lr0.003-s0", "gpt-g2-lr0.003-s0"]
    manifest = json.loads((tiny_project / "data" / "demo" / "manifest.json").read_text())
    for child in children:
        run_id = child["info"]["run_id"]
        assert tags[run_id]["mlflow.parentRunId"] == parent_id
        keys = {metric["key"] for metric in child["data"]["metrics"]}
        assert {"loss/train", "loss/val", "result/val_loss", "perf/tokens_per_s", "time/setup_seconds",
                "scaling/val_loss"} <= keys and all("/" in key for key in keys)
        (dataset_input,) = child["inputs"]["dataset_inputs"]
        assert dataset_input["dataset"]["digest"] == manifest["fingerprint"][:16]
        assert dataset_input["dataset"]["name"] == "demo"
        # its (N, D) cells, one nested run each
        cells = [run for run in runs if tags[run["info"]["run_id"]].get("mlflow.parentRunId") == run_id]
        assert len(cells) == 3 and all(tags[c["info"]["run_id"]]["abcmusic.kind"] == "cell" for c in cells)
    # the fit, its numbers and its figures live on the parent
    assert {"scaling_law/gpt/alpha", "scaling_law/gpt/joint_alpha"} <= {m["key"] for m in parent["data"]["metrics"]}
    figures = {f["path"] for f in rest(server, "artifacts/list", run_id=parent_id)["files"]}
    assert {"loss_curves.png", "scaling.png", "gpt_loss_vs_n.png", "gpt_loss_vs_d.png", "fit.json"} <= figures


def test_the_best_model_is_registered_on_the_server_and_generate_reads_it(server, served_sweep, tiny_project):
    experiment_id = rest(server, "experiments/get-by-name", experiment_name=SWEEP)["experiment"]["experiment_id"]
    models = rest(server, "logged-models/search", {"experiment_ids": [experiment_id]})["models"]
    # named after their trials, with the '.' a server refuses in model names replaced
    assert sorted(m["info"]["name"] for m in models) == ["gpt-g1-lr0_003-s0", "gpt-g2-lr0_003-s0"]
    version = rest(server, "registered-models/alias", name=SWEEP, alias="best")["model_version"]
    best = next(m for m in models if version["source"] == f"models:/{m['info']['model_id']}")
    assert version["run_id"] == best["info"]["source_run_id"] and version["aliases"] == ["best"]
    files = rest(server, f"logged-models/{best['info']['model_id']}/artifacts/directories")["files"]
    assert {f["path"] for f in files} == {"model.pt", "config.json", "vocab.json"}

    out = tiny_project / "gen-served"
    result = run_against(server, tiny_project, "generate.py", "--model", f"models:/{SWEEP}@best", "--num", "2",
                         "--max-new-tokens", "200", "--out", str(out))
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert f"run {version['run_id']} ({best['info']['name'].replace('_', '.')}" in result.stdout
    assert len(list(out.glob("sample_*.abc"))) == 2
    logged = rest(server, "runs/get", run_id=version["run_id"])["run"]["data"]["metrics"]
    assert "samples/valid_fraction" in {m["key"] for m in logged}
    assert not os.path.exists(tiny_project / "mlruns")
