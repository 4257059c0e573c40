"""Integration tests: the real sweep.py with real local Ray, Ray Train, Ray Tune and a temporary MLflow store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from abcmusic.models.registry import build_model
from abcmusic.tracking import model_registry
from abcmusic.tracking.metric_names import TRIAL_KEYS, mlflow_key, read_metric
from conftest import REPO_ROOT, cli_env, run_cli, write_tiny_spec_with_compiled_gpt

pytestmark = pytest.mark.integration

TINY_TRIALS = {"gpt-g1-lr0.003-s0", "gpt-g2-lr0.003-s0", "lstm-l1-lr0.003-s0"}


@pytest.fixture
def workdir(tiny_project) -> Path:
    return tiny_project


def uri_of(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def mlflow_runs(workdir: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    return list(client.search_runs([found.experiment_id])), client


@pytest.fixture
def finished_sweep(tiny_sweep):
    return tiny_sweep


def test_every_trial_is_an_mlflow_run_with_params_metrics_and_model(finished_sweep, workdir):
    runs, client = mlflow_runs(workdir, "t1")
    trials = {r.info.run_name: r for r in runs if r.data.tags.get("abcmusic.kind") == "trial"}
    assert set(trials) == TINY_TRIALS
    for name, run in trials.items():
        assert run.info.status == "FINISHED"
        params = run.data.params
        for key in ("arch", "size", "params_total", "params_non_embedding", "tokens", "context", "batch_size",
                    "lr", "precision", "dataset", "dataset_hash", "seed"):
            assert key in params, f"{name} lacks param {key}"
        assert int(params["params_non_embedding"]) < int(params["params_total"])
        # every metric under a section of the chart view; the loss curves' sorts first
        assert all("/" in key for key in run.data.metrics), sorted(run.data.metrics)
        assert min(key.split("/")[0] for key in run.data.metrics) == "loss"
        metrics = {name: read_metric(run.data.metrics, name) for name in TRIAL_KEYS}
        for key in ("train_loss", "val_loss", "final_val_loss", "test_loss", "tokens_seen", "tokens_per_s", "lr",
                    "mfu", "peak_flops", "setup_seconds", "ray_setup_seconds", "resource_wait_seconds",
                    "teardown_seconds"):
            assert mlflow_key(key) in run.data.metrics, f"{name} lacks metric {mlflow_key(key)}"
        assert 0 < metrics["mfu"] < 1.5
        assert 0 <= metrics["resource_wait_seconds"] < metrics["setup_seconds"]
        assert 0 < metrics["ray_setup_seconds"] < metrics["setup_seconds"]
        assert 0 < metrics["teardown_seconds"] < 60
        assert metrics["tokens_seen"] == 20000 // (8 * 64) * 8 * 64
        # the final losses cover whole splits, with their standard errors
        for tokens in (metrics["final_val_tokens"], metrics["test_tokens"]):
            assert tokens > 0 and tokens % int(params["context"]) == 0
        assert 0 < metrics["final_val_loss_se"] < 0.1 * metrics["final_val_loss"]
        assert 0 < metrics["test_loss_se"] < 0.1 * metrics["test_loss"]
        history = client.get_metric_history(run.info.run_id, "loss/val")
        assert len(history) >= 3 and history[-1].value < history[0].value  # it learned
        # what it trained on, as an MLflow dataset input: the manifest's fingerprint as digest, a profile
        (dataset_input,) = run.inputs.dataset_inputs
        manifest = json.loads((workdir / "data" / "demo" / "manifest.json").read_text())
        dataset = dataset_input.dataset
        assert dataset.digest == manifest["fingerprint"][:16] == params["dataset_hash"]
        assert (dataset.name, dataset.source_type) == ("demo", "local")
        assert json.loads(dataset.source)["uri"] == params["dataset"]
        assert json.loads(dataset.profile)["val_tunes"] == manifest["splits"]["val"]["tunes"]
        assert {tag.key: tag.value for tag in dataset_input.tags} == {"mlflow.data.context": "training"}
        # tiny.yaml's wsd schedule: cooldown branches at a quarter and half the budget and the run's own end
        assert params["schedule"] == "wsd" and params["budgets"] == f"{9 * 512},{19 * 512},{39 * 512}"
        cells = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"scaling/{key}")]
                 for key in ("val_loss", "test_loss", "tokens", "flops", "epochs")}
        assert [step for step, _ in cells["val_loss"]] == [9 * 512, 19 * 512, 39 * 512]
        assert cells["val_loss"][2][1] == metrics["final_val_loss"] < cells["val_loss"][0][1]
        assert cells["flops"][2][1] == pytest.approx(39 / 9 * cells["flops"][0][1])
        assert 0 < cells["epochs"][0][1] and cells["epochs"][2][1] == pytest.approx(cells["epochs"][0][1] * 39 / 9)
        assert metrics["tokens_trained"] == (39 + (9 - 7) + (19 - 15)) * 512  # the run and the branches' cooldowns
        # each cell is also a run of its own, nested under its trial's, with the cell's losses
        cell_runs = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id),
                           key=lambda r: int(r.data.params["cell_tokens"]))
        assert [r.info.run_name for r in cell_runs] == [f"{name}@{tokens}" for tokens, _ in cells["val_loss"]]
        assert all(r.data.tags["abcmusic.kind"] == "cell" and r.info.status == "FINISHED" for r in cell_runs)
        assert [r.data.metrics["scaling/val_loss"] for r in cell_runs] == [loss for _, loss in cells["val_loss"]]
        assert cell_runs[0].data.params["size"] == params["size"] and len(cell_runs[0].inputs.dataset_inputs) == 1
        assert [m.step for m in history] == sorted(m.step for m in history)

        # the final model: a logged model of the run (the runs table's Models column), files only
        (output,) = run.outputs.model_outputs
        logged = client.get_logged_model(output.model_id)
        assert (logged.name, logged.source_run_id) == (name.replace(".", "_"), run.info.run_id)
        assert output.step == metrics["tokens_seen"]
        model_dir = model_registry.run_models(uri_of(workdir), [run.info.experiment_id])[run.info.run_id].download(
            uri_of(workdir), str(workdir / "dl" / name))
        config = json.loads((model_dir / "config.json").read_text())
        model = build_model(config["arch"], config["model"])
        model.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))
        assert json.loads((model_dir / "vocab.json").read_text())["id_to_token"][0] == "<sep>"


def test_every_progress_line_reaches_the_console_once(finished_sweep):
    output = finished_sweep.stdout + finished_sweep.stderr
    lines = [line for line in output.splitlines() if "tokens/s" in line and "] " in line]
    for trial in TINY_TRIALS:
        own = [line for line in lines if f"[{trial}]" in line]
        assert own and any(f"{20000 // (8 * 64) * 8 * 64:,}/20,000 tokens" in line for line in own), trial
        assert len(own) == len(set(own)), f"{trial}: progress lines printed twice"
    # Ray Train's per-report INFO lines and its placement-group cleaner's warnings (no state API without the
    # dashboard) would outnumber the progress lines.
    assert "Reporting training result" not in output and "Failed to query Ray Train Controller" not in output


def test_the_sweeps_experiment_opens_in_mlflows_training_view(finished_sweep, workdir):
    _, client = mlflow_runs(workdir, "t1")
    assert client.get_experiment_by_name("t1").tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_sweep_ends_with_a_fit_a_plot_and_a_summary_run(finished_sweep, workdir):
    fit = json.loads((workdir / "results" / "t1" / "fit.json").read_text())
    assert fit["trials_finished"] == 3
    assert len(fit["points"]["gpt"]) == 2 and "gpt" in fit["fits"]
    assert "lstm" in fit["not_fitted"]  # one size cannot make a power law; said, not hidden
    assert (workdir / "results" / "t1" / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs, client = mlflow_runs(workdir, "t1")
    summaries = [r for r in runs if r.data.tags.get("abcmusic.kind") == "summary"]
    assert len(summaries) == 1 and "scaling_law/gpt/alpha" in summaries[0].data.metrics
    # one parent per sweep: the trials' runs are nested under the summary run, which the fit finishes
    trials = [r for r in runs if r.data.tags.get("abcmusic.kind") == "trial"]
    assert {r.data.tags.get("mlflow.parentRunId") for r in trials} == {summaries[0].info.run_id}
    assert summaries[0].info.status == "FINISHED"
    # the sweep's settings, on the parent
    settings = summaries[0].data.params
    assert (settings["experiment"], settings["archs"], settings["gpt_sizes"]) == ("tiny", "gpt,lstm", "g1,g2")
    assert settings["budgets"] == f"{9 * 512},{19 * 512},{39 * 512}" and settings["model_alias"] == "best"
    artifacts = {a.path for a in client.list_artifacts(summaries[0].info.run_id)}
    assert {"fit.json", "scaling.png", "loss_curves.png", "gpt_loss_vs_n.png"} <= artifacts
    # the best run's model, registered under the sweep's name
    best = min(trials, key=lambda r: r.data.metrics["result/val_loss"])
    version = client.get_model_version_by_alias("t1", "best")
    assert version.run_id == best.info.run_id
    assert version.source == f"models:/{best.outputs.model_outputs[0].model_id}"
    assert f"registered as models:/t1@best (version {version.version})" in finished_sweep.stdout
    assert "gpt at the largest budget: L = " in finished_sweep.stdout
    # the link opens the experiment's runs in the UI's model-training view, whatever the browser last chose
    experiment_id = summaries[0].info.experiment_id
    assert f"#/experiments/{experiment_id}/runs?workflowType=machine_learning" in finished_sweep.stdout
    # 2 GPT sizes x 3 budgets: the joint law's 5 parameters and its scatter just fit, but nothing is left to predict
    # a held-out size from; the single LSTM size cannot separate N from D.
    law = fit["laws"]["gpt"]
    assert law["n_cells"] == 6 and law["fit"]["params"]["beta"] > 0
    assert [test["name"] for test in law["held_out"]] == ["largest N", "largest D"]
    assert all("too few" in test["skipped_reason"] for test in law["held_out"])
    assert "lstm" in fit["joint_not_fitted"]
    assert {"gpt_loss_vs_n.png", "gpt_loss_vs_d.png", "gpt_frontier.png", "gpt_held_out.png"} <= artifacts
    assert "gpt: the law L(N, D) from 6 cells" in finished_sweep.stdout


def test_analyze_redoes_the_fit_from_mlflow_alone(finished_sweep, workdir):
    fit_file = workdir / "results" / "t1" / "fit.json"
    before = json.loads(fit_file.read_text())
    fit_file.unlink()
    result = run_cli("sweep.py", "--experiment", "tiny", "--analyze", "t1", cwd=workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(fit_file.read_text())["fits"] == before["fits"]
    runs, _ = mlflow_runs(workdir, "t1")
    assert sum(r.data.tags.get("abcmusic.kind") == "summary" for r in runs) == 1  # reused, not duplicated


def test_dry_run_prints_the_grid_and_starts_nothing(workdir):
    result = run_cli("sweep.py", "--experiment", "tiny", "--dry-run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    for key in TINY_TRIALS:
        assert key in result.stdout
    assert "training FLOPs" in result.stdout
    assert not (workdir / "results" / "ray" / "dry").exists()


def test_dry_run_refuses_compile_without_a_compiler_unless_for_a_cluster(workdir):
    spec = write_tiny_spec_with_compiled_gpt(workdir / "compiled.yaml")
    empty = workdir / "no-compilers"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in cli_env(workdir / ".home").items() if k not in ("CC", "CXX", "RAY_ADDRESS")}
    env["PATH"] = str(empty)
    command = [sys.executable, str(REPO_ROOT / "sweep.py"), "--experiment", str(spec), "--dry-run"]
    local = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert local.returncode == 2, (local.stdout[-1000:], local.stderr[-1000:])
    assert local.stderr.strip().splitlines() == [
        "sweep.py: error: gpt: compile: true needs a C++ compiler for Inductor's CPU kernels (g++, or $CXX); "
        "install one (apt-get install g++) or set compile: false"]
    # For a cluster the workers' nodes check themselves: the plan is printed, compiled trials marked.
    cluster = subprocess.run(command, cwd=workdir, env=env | {"RAY_ADDRESS": "10.0.0.1:6379"}, capture_output=True,
                             text=True, timeout=300)
    assert cluster.returncode == 0, cluster.stderr[-1000:]
    assert "fp32+compile" in cluster.stdout


@pytest.mark.parametrize("args, message", [
    (["--arch", "transformer"], "unknown architecture transformer"),
    (["--sizes", "huge"], "unknown size(s) huge"),
    (["--tokens", "10"], "smaller than one batch"),
    (["--data", "data/none"], "run: python prepare.py"),
    (["--gpus-per-trial", "4"], "GPU"),
    (["--worker-resource", "a10g=1"], "worker resource(s) a10g: the Ray cluster has 0 a10g"),
    (["--worker-resource", "a10g"], "expected NAME=AMOUNT"),
    (["--experiment", "nope"], "no experiment 'nope'"),
    (["--resume", "never-ran"], "no sweep 'never-ran' to resume"),
    (["--address", "127.0.0.1:1"], "cannot connect to the Ray cluster at 127.0.0.1:1"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_trial(workdir, args, message):
    result = run_cli("sweep.py", "--experiment", "tiny", "--name", "bad", *args, cwd=workdir)
    assert result.returncode == 2, (result.stdout[-1000:], result.stderr[-1000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("sweep.py: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-1000:]
    assert "Traceback" not in result.stderr
    assert not (workdir / "results" / "ray" / "bad").exists()


def test_resume_after_a_killed_driver_reruns_nothing_finished(workdir):
    """With the storage on a URI (a file:// folder standing in for a bucket): the Tune state and every trial's
    checkpoints go there, and --resume finds them there."""
    home = workdir / ".home"
    bucket = workdir / "bucket"
    storage = bucket.as_uri()
    # Tune saves its experiment state at most every 10 s by default: a lag in which the remaining tiny trials
    # can finish too (CI saw it). Saved every second, the state shows the first finished trial while the
    # others still run; the resume below runs with Tune's default.
    env = cli_env(home) | {"TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "sweep.py"), "--experiment", "tiny", "--name", "r1", "--storage", storage],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    # Kill everything at once as soon as Tune's saved experiment state records a finished trial, while the
    # others are still running or pending.
    threading.Thread(target=driver.stdout.read, daemon=True).start()  # keep the pipe drained
    state_dir = bucket / "r1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(
            '\\"status\\": \\"TERMINATED\\"' in p.read_text(errors="replace")
            for p in state_dir.glob("experiment_state-*.json")):
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True,
                   env=cli_env(home), timeout=120)
    runs, _ = mlflow_runs(workdir, "r1")
    finished_before = {r.info.run_name: r.info.run_id for r in runs
                       if r.info.status == "FINISHED" and r.data.tags.get("abcmusic.kind") == "trial"}
    assert finished_before, "no trial finished before the kill"
    assert len(finished_before) < len(TINY_TRIALS), "the sweep finished before the kill: nothing to resume"

    # The cells each trial's newest checkpoint counts as done: the resumed sweep must not train them again.
    done_before: dict[str, int] = {}
    for state_path in bucket.glob("r1-*/checkpoint_*/state.pt"):
        trial = state_path.parent.parent.name.removeprefix("r1-")
        cells_done = int(torch.load(state_path, weights_only=True).get("cells_done", 0))
        done_before[trial] = max(done_before.get(trial, 0), cells_done)

    resumed = run_cli("sweep.py", "--experiment", "tiny", "--resume", "r1", "--storage", storage, cwd=workdir)
    assert resumed.returncode == 0, (resumed.stdout[-3000:], resumed.stderr[-3000:])
    runs, client = mlflow_runs(workdir, "r1")
    trials = [r for r in runs if r.data.tags.get("abcmusic.kind") == "trial"]
    assert sorted(r.info.run_name for r in trials) == sorted(TINY_TRIALS)  # one run per trial: nothing duplicated
    assert all(r.info.status == "FINISHED" for r in trials)
    for name, run_id in finished_before.items():
        # a rerun would have logged the final metrics a second time
        assert len(client.get_metric_history(run_id, "result/val_loss")) == 1, f"{name} was rerun"
    for run in trials:
        name = run.info.run_name
        cell_tokens = [int(tokens) for tokens in run.data.params["budgets"].split(",")]
        rerun = [tokens for tokens in cell_tokens[:done_before.get(name, 0)]
                 if f"[{name}] cell {tokens:,} tokens" in resumed.stdout]
        assert not rerun, f"{name}: cells {rerun} finished before the kill were trained again"
    for run in trials:
        # An interrupted trial replays the steps after its checkpoint: each point is still logged once.
        for key in ("progress/tokens_seen", "loss/train", "loss/val"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps and len(steps) == len(set(steps)), (run.info.run_name, key, steps)
    # Checkpoints went to the storage, not to a node-local folder.
    assert {p.parent.parent.name for p in bucket.glob("r1-*/checkpoint_*/state.pt")} == {f"r1-{t}" for t in TINY_TRIALS}
    assert not (workdir / "results" / "ray" / "r1").exists()


def test_a_trial_with_two_workers_trains_with_ddp(workdir):
    result = run_cli("sweep.py", "--experiment", "tiny", "--arch", "gpt", "--sizes", "g1",
                     "--workers-per-trial", "2", "--name", "ddp", cwd=workdir)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "2 worker(s) x 1 CPU" in result.stdout
    runs, client = mlflow_runs(workdir, "ddp")
    (trial,) = [r for r in runs if r.data.tags.get("abcmusic.kind") == "trial"]
    assert trial.info.status == "FINISHED" and trial.data.params["workers"] == "2"
    # the budget counts both workers' sequences: steps x batch (8, 4 per worker) x context
    assert trial.data.metrics["progress/tokens_seen"] == 20000 // (8 * 64) * 8 * 64
    history = client.get_metric_history(trial.info.run_id, "loss/val")
    assert history[-1].value < history[0].value


def test_ctrl_c_stops_the_sweep_and_says_how_to_resume(workdir):
    driver = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "sweep.py"), "--experiment", "tiny", "--name", "c1"],
        cwd=workdir, env=cli_env(workdir / ".home"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in driver.stdout:
        if "tokens/s" in line:  # a trial is training
            break
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, output[-3000:]
    assert "--resume c1" in output
    assert not (workdir / "results" / "c1" / "fit.json").exists()
