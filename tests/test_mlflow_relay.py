"""The sweep's MLflow relay: the one MLflow client of a sweep, on the driver's node."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from abcmusic.sweep.mlflow_relay import MlflowRelay
from abcmusic.tracking import mlflow_store, model_registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def relay_and_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = mlflow_store.ensure_experiment(uri, "relay-test", tmp_path)
    relay = MlflowRelay(uri)
    run_id = relay.find_or_create_run(experiment_id, "gpt-tiny", {"arch": "gpt"})
    return relay, run_id, uri, experiment_id


def test_the_relay_logs_metrics_nodes_files_and_finds_the_same_run_again(relay_and_run, tmp_path):
    relay, run_id, uri, experiment_id = relay_and_run
    relay.log_metrics(run_id, {"train_loss": 2.5, "note": "not a number"}, step=100)
    relay.log_metrics(run_id, {"train_loss": 2.0}, step=200)
    relay.add_node(run_id, "node-a")
    relay.add_node(run_id, "node-b")
    files = {"config.json": b"{}\n", "model.pt": b"\x00\x01", "vocab.json": b"{}\n"}
    model_id = relay.log_model(run_id, experiment_id, "gpt-tiny", files, {"arch": "gpt"}, step=200)
    relay.finish_run(run_id, "FINISHED")

    client = mlflow_store.client(uri)
    run = client.get_run(run_id)
    # logged under its sectioned key: the chart view's first section, the loss curves
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss/train")] == [(100, 2.5), (200, 2.0)]
    assert "train_loss" not in run.data.metrics
    assert run.data.tags[mlflow_store.NODES_TAG] == "node-a,node-b"
    assert run.info.status == "FINISHED"
    assert [(output.model_id, output.step) for output in run.outputs.model_outputs] == [(model_id, 200)]
    found = model_registry.run_models(uri, [experiment_id])[run_id]
    assert found.model_id == model_id and client.get_logged_model(model_id).params == {"arch": "gpt"}
    downloaded = found.download(uri, str(tmp_path / "down"))
    assert {p.name: p.read_bytes() for p in downloaded.iterdir()} == files
    assert relay.find_or_create_run(experiment_id, "gpt-tiny", {"arch": "gpt"}) == run_id


def test_a_failed_progress_log_fails_the_next_awaited_call_once(relay_and_run):
    relay, run_id, _uri, _experiment_id = relay_and_run
    relay.log_metrics("no-such-run", {"train_loss": 1.0}, step=1)  # nobody waits on this call: it must not raise
    with pytest.raises(RuntimeError, match="MLflow logging failed"):
        relay.log_model("no-such-run", "0", "gpt-tiny", {"a.txt": b"a"}, {}, step=1)
    relay.log_metrics(run_id, {"train_loss": 1.0}, step=1)
    relay.finish_run(run_id, "FINISHED")  # the other run's failure is not this one's


def test_trial_code_never_imports_mlflow():
    """Trials and their Train workers log through the relay: only the driver's node needs to reach MLflow."""
    code = "import sys, abcmusic.sweep.trial, abcmusic.train.loop; print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_replayed_steps_are_logged_once_even_by_a_new_relay(relay_and_run):
    """A trial resumed from a checkpoint replays steps already logged: after a node failover (same relay) and after
    a resumed sweep (a new relay on the same store) every (metric, step) is in the run exactly once."""
    relay, run_id, uri, _experiment_id = relay_and_run
    for step in (100, 200, 300):
        relay.log_metrics(run_id, {"train_loss": 3.0 - step / 1000, "tokens_seen": step}, step)
    relay.log_metrics(run_id, {"train_loss": 9.9, "tokens_seen": 200}, 200)  # replay after a checkpoint at 100
    relay.log_metrics(run_id, {"train_loss": 2.6, "tokens_seen": 400}, 400)
    restarted = MlflowRelay(uri)  # the relay of a resumed sweep knows nothing of what was logged
    restarted.log_metrics(run_id, {"train_loss": 9.9, "tokens_seen": 300}, 300)
    restarted.log_metrics(run_id, {"train_loss": 2.5, "tokens_seen": 500, "final_val_loss": 2.4}, 500)
    restarted.log_metrics(run_id, {"tokens_seen": 500, "test_loss": 2.45}, 500)  # a new metric at the same step

    client = mlflow_store.client(uri)
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss/train")]
    assert history == [(100, 2.9), (200, 2.8), (300, 2.7), (400, 2.6), (500, 2.5)]
    assert [m.step for m in client.get_metric_history(run_id, "progress/tokens_seen")] == [100, 200, 300, 400, 500]
    assert len(client.get_metric_history(run_id, "result/test_loss")) == 1
    assert len(client.get_metric_history(run_id, "result/val_loss")) == 1


def test_a_sweeps_experiment_is_marked_as_model_training_even_when_an_older_version_made_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_store.client(uri)
    made_before = client.create_experiment("older")  # no kind tag: MLflow's UI would open its GenAI overview
    for name in ("older", "new"):
        experiment_id = mlflow_store.ensure_experiment(uri, name, tmp_path)
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert mlflow_store.ensure_experiment(uri, "older", tmp_path) == made_before


def test_runs_logged_under_the_older_plain_names_still_read(tmp_path):
    """A store written before the keys had sections: the analysis finds its cells and final loss under the plain
    names, and its model in the run's `model` artifact folder."""
    from abcmusic.scaling.analysis import trial_cells
    from abcmusic.tracking.metric_names import plain_metrics, read_metric
    from abcmusic.tracking.trial_record import TrialRecord

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = mlflow_store.ensure_experiment(uri, "older", tmp_path)
    record = TrialRecord(arch="gpt", size="x", model_fields={"n_layer": 1, "n_head": 1, "n_embd": 8},
                         params_total=1000, params_non_embedding=800, tokens=4096, context=16, batch_size=4, lr=1e-3,
                         seed=0, precision="fp32", compile=False, dropout=0.0, dataset="d", dataset_hash="0" * 16,
                         spec_hash="0" * 12, workers=1, cpus_per_worker=1, gpus_per_worker=0)
    run_id = mlflow_store.find_or_create_run(uri, experiment_id, "gpt-x", record.params())
    for tokens, loss in ((1024, 3.0), (4096, 2.5)):
        mlflow_store.log_metrics(uri, run_id, {"cell/val_loss": loss, "cell/val_loss_se": 0.01,
                                               "cell/flops": 6.0 * 800 * tokens, "cell/epochs": 0.1}, step=tokens)
    mlflow_store.log_metrics(uri, run_id, {"final_val_loss": 2.5, "tokens_seen": 4096, "train_seconds": 9.0},
                             step=4096)
    (tmp_path / "model").mkdir()
    for name in model_registry.MODEL_FILES:
        (tmp_path / "model" / name).write_text("{}")
    mlflow_store.log_artifacts(uri, run_id, tmp_path / "model", "model")
    mlflow_store.finish_run(uri, run_id)

    run = mlflow_store.client(uri).get_run(run_id)
    assert [(c.cell.d, c.cell.loss) for c in trial_cells(uri, run, "non_embedding")] == [(1024, 3.0), (4096, 2.5)]
    assert read_metric(run.data.metrics, "final_val_loss") == 2.5
    assert plain_metrics(run.data.metrics)["train_seconds"] == 9.0
    assert model_registry.run_models(uri, [experiment_id]) == {}
    assert model_registry.legacy_run_model(uri, run_id) == model_registry.RunModel(run_id, None)
    version = model_registry.register(uri, "older", model_registry.legacy_run_model(uri, run_id), "best")
    assert model_registry.resolve(uri, "models:/older@best") == model_registry.RunModel(run_id, None)
    assert model_registry.register(uri, "older", model_registry.RunModel(run_id, None), "best") == version
