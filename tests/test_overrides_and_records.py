"""The command-line overrides of an experiment's fields, and the trial record that MLflow parameters round-trip."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from abcmusic.errors import UserError
from abcmusic.sweep.overrides import add_spec_flags, apply_spec_flags, select_sizes
from abcmusic.sweep.spec import load_spec
from abcmusic.tracking.trial_record import TrialRecord


def overridden(*argv: str):
    parser = argparse.ArgumentParser()
    add_spec_flags(parser)
    return apply_spec_flags(load_spec("demo"), parser.parse_args(list(argv)))


def test_every_flag_lands_in_its_field_with_its_type():
    spec = overridden("--tokens", "123456", "--data", "s3://b/d", "--seeds", "3", "--lr", "3e-4,1e-3",
                      "--workers-per-trial", "2", "--cpus-per-worker", "4", "--gpus-per-trial", "0",
                      "--worker-resource", "a10g=1", "--worker-resource", "fast=0.5")
    assert spec.train.loop.tokens == 123456 and spec.data == "s3://b/d" and spec.seeds == 3
    assert spec.train.lrs == (3e-4, 1e-3)
    assert (spec.resources.workers_per_trial, spec.resources.cpus_per_worker, spec.resources.gpus_per_trial) == (2, 4, 0)
    assert spec.resources.worker_resources == {"a10g": 1.0, "fast": 0.5}
    assert spec.train.loop.context == load_spec("demo").train.loop.context  # the rest as the experiment says


def test_schedule_and_budgets_flags():
    assert load_spec("demo").train.loop.schedule == "wsd"
    cosine = overridden("--schedule", "cosine")
    assert cosine.train.loop.schedule == "cosine" and cosine.train.loop.budgets == ()  # the wsd budgets do not carry
    assert len(cosine.train.loop.cells()) == 1
    assert overridden("--budgets", "0.5,250000").train.loop.budgets == (0.5, 250000.0)
    with pytest.raises(SystemExit):  # argparse's choices: its own usage line and exit 2
        overridden("--schedule", "step")


def test_no_flag_leaves_the_experiment_as_it_is():
    assert overridden() == load_spec("demo")


def test_command_line_rates_replace_each_architectures_own(tmp_path):
    path = tmp_path / "own.yaml"
    path.write_text("name: own\ndata: d\ntrain: {tokens: 4096, context: 16, batch_size: 4, lrs: [1e-3]}\n"
                    "archs:\n  gpt: {lrs: [5e-3], sizes: {a: {n_layer: 1, n_head: 1, n_embd: 8}}}\n")
    parser = argparse.ArgumentParser()
    add_spec_flags(parser)
    spec = apply_spec_flags(load_spec(str(path)), parser.parse_args(["--lr", "2e-3"]))
    assert spec.archs["gpt"].lrs == () and spec.train.lrs == (2e-3,)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "fast"], "--lr 'fast': expected floats separated by commas"),
    (["--worker-resource", "a10g"], "--worker-resource 'a10g': expected NAME=AMOUNT"),
    (["--worker-resource", "a10g=0"], "--worker-resource: worker resource 'a10g': expected a name and a positive"),
    (["--workers-per-trial", "0"], "--workers-per-trial: workers_per_trial and cpus_per_worker must be positive"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial: gpus_per_trial must not be negative"),
    (["--seeds", "0"], "--seeds: seeds must be positive"),
])
def test_bad_values_are_one_line_naming_the_flag(argv, message):
    with pytest.raises(UserError) as refused:
        overridden(*argv)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_sizes_are_selected_by_name_and_unknown_ones_named():
    spec = select_sizes(load_spec("demo"), "13k,1m")
    assert {a: list(s.sizes) for a, s in spec.archs.items()} == {"gpt": ["13k"], "lstm": ["1m"]}
    with pytest.raises(UserError, match=r"unknown size\(s\) huge"):
        select_sizes(load_spec("demo"), "huge")


def test_a_trials_own_fields_are_refused_in_the_train_block(tmp_path):
    path = tmp_path / "own.yaml"
    path.write_text("name: own\ndata: d\ntrain: {tokens: 4096, context: 16, batch_size: 4, precision: bf16}\n"
                    "archs:\n  gpt: {sizes: {a: {n_layer: 1, n_head: 1, n_embd: 8}}}\n")
    with pytest.raises(UserError, match=r"own.yaml.train: unknown key\(s\) precision"):
        load_spec(str(path))


RECORD = TrialRecord(arch="gpt", size="13k", model_fields={"n_layer": 1, "n_head": 2, "n_embd": 32},
                     params_total=14_000, params_non_embedding=12_608, tokens=3_000_000, context=128, batch_size=16,
                     lr=2e-3, seed=0, precision="fp32", compile=False, dropout=0.0, dataset="/data/demo",
                     dataset_hash="0123456789abcdef", spec_hash="abcdef012345", workers=1, cpus_per_worker=1,
                     gpus_per_worker=0.5)


def test_a_record_round_trips_through_mlflow_parameters():
    params = RECORD.params()
    assert all(isinstance(v, str) for v in params.values())
    assert params["n_layer"] == "1" and params["lr"] == "0.002" and params["compile"] == "False"
    assert TrialRecord.from_params(params) == RECORD
    assert TrialRecord.from_params(params).n("non_embedding") == 12_608
    assert TrialRecord.from_params(params).n("total") == 14_000
    compiled = dataclasses.replace(RECORD, compile=True)
    assert TrialRecord.from_params(compiled.params()).compile is True


def test_a_run_missing_a_parameter_names_it():
    params = RECORD.params()
    del params["params_non_embedding"]
    with pytest.raises(KeyError, match="params_non_embedding"):
        TrialRecord.from_params(params)


def test_a_run_logged_before_schedules_reads_back_as_one_cosine_cell():
    wsd = dataclasses.replace(RECORD, schedule="wsd", budgets="4096,8192", cooldown_fraction=0.2)
    assert TrialRecord.from_params(wsd.params()) == wsd
    params = wsd.params()
    for name in ("schedule", "budgets", "cooldown_fraction"):
        del params[name]
    old = TrialRecord.from_params(params)
    assert (old.schedule, old.budgets, old.cooldown_fraction) == ("cosine", "", 0.0)
    assert "schedule" not in old.model_fields
