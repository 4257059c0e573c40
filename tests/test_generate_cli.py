"""Integration tests: the real generate.py on a real tiny sweep (real Ray, MLflow, abc2midi, abcm2ps)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from abcmusic.tracking.metric_names import samples_key
from abcmusic.tracking.trial_record import TrialRecord
from conftest import run_cli

pytestmark = pytest.mark.integration


def mlflow_client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def sample_texts(out: Path) -> list[str]:
    return [p.read_text() for p in sorted(out.glob("sample_*.abc"))]


@pytest.fixture(scope="module")
def generated(tiny_sweep, tiny_project) -> tuple[Path, object]:
    out = tiny_project / "gen-best"
    args = ["--run", "best", "--experiment", "t1", "--num", "4", "--max-new-tokens", "400", "--out", str(out)]
    if shutil.which("timidity") or shutil.which("fluidsynth"):
        args.append("--audio")
    result = run_cli("generate.py", *args, cwd=tiny_project)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return out, result


def test_best_run_is_the_lowest_final_validation_loss_and_is_named(generated, tiny_project):
    _, result = generated
    client = mlflow_client(tiny_project)
    experiment = client.get_experiment_by_name("t1")
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("abcmusic.kind") == "trial"]
    best = min(runs, key=lambda r: r.data.metrics["result/val_loss"])
    assert f"run {best.info.run_id} ({best.info.run_name})" in result.stdout
    assert f"final val loss {best.data.metrics['result/val_loss']:.4f}" in result.stdout


def test_the_registered_best_model_samples_as_the_best_run_does(generated, tiny_project):
    out, result = generated
    registered = run_cli("generate.py", "--model", "models:/t1@best", "--num", "4", "--max-new-tokens", "400",
                         "--out", str(tiny_project / "gen-registered"), cwd=tiny_project)
    assert registered.returncode == 0, registered.stderr[-2000:]
    run_id = result.stdout.split("run ", 1)[1].split(" ", 1)[0]
    assert f"run {run_id} " in registered.stdout
    assert sample_texts(tiny_project / "gen-registered") == sample_texts(out)
    for bad, said in (("models:/t1@nope", "no registered model 't1' with alias 'nope'"),
                      ("models:/t1", "expected models:/NAME@ALIAS")):
        refused = run_cli("generate.py", "--model", bad, cwd=tiny_project)
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr


def test_samples_are_written_judged_and_rendered_when_valid(generated):
    out, _ = generated
    text = (out / "generated_samples.txt").read_text()
    assert text.count("=== sample ") == 4
    assert text.count(": unconditional,") == 2 and text.count(": conditional,") == 2
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    verdict_lines = [line for line in text.splitlines() if line.startswith("=== sample ")]
    valid = [line.endswith("; valid") for line in verdict_lines]
    assert metrics["n_valid"] == sum(valid) and metrics["valid_fraction"] == sum(valid) / 4
    assert 0 <= metrics["test_valid_fraction"] <= 1 and metrics["test_tunes_judged"] > 0
    for number, is_valid in enumerate(valid, start=1):
        name = f"sample_{number}"
        assert (out / f"{name}.abc").is_file()
        assert (out / f"{name}.mid").is_file() == is_valid
        assert (out / f"{name}.svg").is_file() == is_valid
    html = (out / "index.html").read_text()
    assert html.count("class='sample'") == 4 and "sample_1.abc" in html
    # Conditional samples begin with their prompt: a real test tune's header.
    conditional = [block for block in text.split("=== sample ")[1:] if ": conditional," in block]
    for block in conditional:
        prompt = block.split("--- prompt:\n", 1)[1].split("\n--- tune:\n", 1)[0]
        tune = block.split("--- tune:\n", 1)[1]
        assert prompt.startswith("X:") and "K:" in prompt and tune.startswith(prompt)


def test_prepare_records_the_validators_rate_on_real_test_tunes(tiny_project):
    manifest = json.loads((tiny_project / "data" / "demo" / "manifest.json").read_text())
    validity = manifest["test_validity"]
    assert validity["judged"] == manifest["splits"]["test"]["tunes"] > 0
    assert validity["valid_fraction"] == 1.0 and validity["invalid_by_reason"] == {}


def test_samples_and_metrics_are_logged_to_the_run(generated, tiny_project):
    out, result = generated
    run_id = result.stdout.split("run ", 1)[1].split(" ", 1)[0]
    client = mlflow_client(tiny_project)
    run = client.get_run(run_id)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for key in ("valid_fraction", "n_valid", "n_samples", "test_valid_fraction", "samples_mean_pitch_class_entropy",
                "samples_mean_copy_share", "test_bar_match_share"):
        assert run.data.metrics[samples_key(key)] == pytest.approx(metrics[key]), key
    logged = {Path(f.path).name for f in client.list_artifacts(run_id, "samples")}
    assert {"generated_samples.txt", "index.html", "metrics.json", "sample_1.abc"} <= logged


def test_same_seed_same_samples_other_seed_other_samples(tiny_sweep, tiny_project, generated):
    out, _ = generated
    common = ["--run", "best", "--experiment", "t1", "--num", "4", "--max-new-tokens", "400"]
    again = run_cli("generate.py", *common, "--out", str(tiny_project / "gen-again"), cwd=tiny_project)
    other = run_cli("generate.py", *common, "--seed", "7", "--out", str(tiny_project / "gen-seed7"),
                    cwd=tiny_project)
    cold = run_cli("generate.py", *common, "--lead-in", "0", "--out", str(tiny_project / "gen-cold"),
                   cwd=tiny_project)
    for result in (again, other, cold):
        assert result.returncode == 0, result.stderr[-2000:]
    assert sample_texts(tiny_project / "gen-again") == sample_texts(out)
    assert sample_texts(tiny_project / "gen-seed7") != sample_texts(out)
    # The lead-in is context, not text: without it the same seed starts cold at the separator and draws others.
    assert sample_texts(tiny_project / "gen-cold") != sample_texts(out)
    for folder, lead_in, said in ((out, 32, "after the last 32 tokens of a tune the model wrote first"),
                                  (tiny_project / "gen-cold", 0, "cold at the separator")):
        assert json.loads((folder / "metrics.json").read_text())["sampling"]["lead_in"] == lead_in
        assert f"# each sample starts {said}" in (folder / "generated_samples.txt").read_text()


def test_prompts_file_starts_every_conditional_sample(tiny_sweep, tiny_project):
    prompts = tiny_project / "prompts.abc"
    prompts.write_text("X:1\nM:4/4\nL:1/8\nK:C\nCDEF GABc|\n\nX:2\nM:3/4\nL:1/4\nK:G\nGAB|\n")
    out = tiny_project / "gen-prompts"
    result = run_cli("generate.py", "--experiment", "t1", "--num", "4", "--max-new-tokens", "200",
                     "--prompts", str(prompts), "--out", str(out), cwd=tiny_project)
    assert result.returncode == 0, result.stderr[-2000:]
    texts = sample_texts(out)
    assert texts[2].startswith("X:1\nM:4/4\nL:1/8\nK:C\nCDEF GABc|\n")
    assert texts[3].startswith("X:2\nM:3/4\nL:1/4\nK:G\nGAB|\n")


def test_sweep_mode_logs_validity_per_run_and_plots_it_against_n(tiny_sweep, tiny_project):
    result = run_cli("generate.py", "--sweep", "t1", "--num", "2", "--max-new-tokens", "200", cwd=tiny_project)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    summary = json.loads((tiny_project / "results" / "t1" / "validity.json").read_text())
    assert set(summary["runs"]) == {"gpt-g1-lr0.003-s0", "gpt-g2-lr0.003-s0", "lstm-l1-lr0.003-s0"}
    assert (tiny_project / "results" / "t1" / "validity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = mlflow_client(tiny_project)
    experiment = client.get_experiment_by_name("t1")
    for run in client.search_runs([experiment.experiment_id]):
        if run.data.tags.get("abcmusic.kind") == "trial":
            assert run.data.metrics["samples/n_samples"] >= 2
            assert "samples/valid_fraction" in run.data.metrics
        elif run.data.tags.get("abcmusic.kind") == "summary":
            assert "validity.png" in {Path(f.path).name for f in client.list_artifacts(run.info.run_id)}


TRIAL_PARAMS = TrialRecord(
    arch="gpt", size="x", model_fields={"n_layer": 1, "n_head": 1, "n_embd": 8}, params_total=1000,
    params_non_embedding=800, tokens=4096, context=16, batch_size=4, lr=1e-3, seed=0, precision="fp32",
    compile=False, dropout=0.0, dataset="data/demo", dataset_hash="0" * 16, spec_hash="0" * 12, workers=1,
    cpus_per_worker=1, gpus_per_worker=0).params()


def test_a_trial_run_without_its_parameters_is_one_line_and_exit_2(tiny_sweep, tiny_project, tmp_path):
    client = mlflow_client(tiny_project)
    experiment_id = client.create_experiment("no-params-case")
    run = client.create_run(experiment_id, run_name="hand-made",
                            tags={"abcmusic.kind": "trial", "abcmusic.trial_key": "hand-made"})
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.pt", "config.json", "vocab.json"):
        (model_dir / name).write_text("{}")
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id, "FAILED")  # never a candidate for --run best
    result = run_cli("generate.py", "--run", run.info.run_id, cwd=tiny_project)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"generate.py: error: run {run.info.run_id} (hand-made) is not a trial of an "
                                     f"abcmusic sweep: it has no parameter 'arch'")


def test_a_corrupt_model_artifact_is_one_line_and_exit_2(tiny_sweep, tiny_project, tmp_path):
    from mlflow.entities import Param

    client = mlflow_client(tiny_project)
    experiment_id = client.create_experiment("corrupt-case")  # apart from t1, whose runs the sweep tests count
    run = client.create_run(experiment_id, run_name="corrupt",
                            tags={"abcmusic.kind": "trial", "abcmusic.trial_key": "corrupt"})
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in TRIAL_PARAMS.items()])
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(b"not a torch file")
    (model_dir / "config.json").write_text('{"arch": "gpt", "model": {}}')
    (model_dir / "vocab.json").write_text("{}")
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id, "FAILED")  # never a candidate for --run best
    result = run_cli("generate.py", "--run", run.info.run_id, cwd=tiny_project)
    assert result.returncode == 2
    assert result.stderr.startswith("generate.py: error: the model artifact of run") and "corrupt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--run", "0123456789abcdef0123456789abcdef"], "no MLflow run with id"),
    (["--experiment", "no-such-sweep"], "no sweep named 'no-such-sweep'"),
    (["--temperature", "0"], "temperature must be a number above 0"),
    (["--num", "0"], "--num must be at least 1"),
    (["--top-k", "0"], "top_k must be an integer of at least 1"),
    (["--prompts", "missing.abc"], "prompts file missing.abc not found"),
    (["--lead-in", "1"], "--lead-in must be 0 (start cold at the separator) or at least 2 tokens"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_sweep, tiny_project, args, message):
    result = run_cli("generate.py", *args, cwd=tiny_project)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_prompt_outside_the_vocabulary_is_refused(tiny_sweep, tiny_project):
    prompts = tiny_project / "bad-prompts.abc"
    prompts.write_text("X:1\nK:C\nC\u00e9D|\n")
    result = run_cli("generate.py", "--experiment", "t1", "--prompts", str(prompts), cwd=tiny_project)
    assert result.returncode == 2
    assert "outside the model's vocabulary" in result.stderr and "'\u00e9'" in result.stderr


def test_missing_abc2midi_is_one_line_and_exit_2(tiny_sweep, tiny_project, tmp_path):
    import subprocess
    import sys

    from conftest import REPO_ROOT, cli_env

    env = cli_env(tiny_project / ".home") | {"PATH": str(tmp_path)}  # an empty folder: no abc2midi, no abcm2ps
    result = subprocess.run([sys.executable, str(REPO_ROOT / "generate.py"), "--experiment", "t1"], cwd=tiny_project,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "abc2midi" in result.stderr and "apt-get install" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_finished_run_is_one_line_and_exit_2(tmp_path):
    result = run_cli("generate.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "no finished run with a model" in result.stderr and "sweep.py" in result.stderr
