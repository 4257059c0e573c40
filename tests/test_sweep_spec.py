"""Experiment specs: the YAML files load onto the dataclasses, mistakes are named, the grid and plan are right."""

from __future__ import annotations

import dataclasses
import os

import pytest

from abcmusic.errors import UserError
from abcmusic.scaling.analysis import TrialCell, best_lr_cells, largest_budget_points
from abcmusic.scaling.cell import Cell
from abcmusic.sweep import driver
from abcmusic.sweep.plan import (TrialResources, check_compilers, check_splits_fit_context, concurrent_trials, plan,
                                 trial_record, trial_resources)
from abcmusic.sweep.spec import build_grid, load_spec
from abcmusic.tracking.trial_record import TrialRecord


@pytest.mark.parametrize("name", ["demo", "paper", "final", "tiny"])
def test_shipped_experiments_load_and_plan(name):
    spec = load_spec(name)
    planned = plan(spec, tuple(spec.archs), vocab_size=97)
    assert len(planned) == len(build_grid(spec)) > 0


def test_demo_spans_at_least_one_and_a_half_decades_per_architecture():
    spec = load_spec("demo")
    planned = plan(spec, ("gpt", "lstm"), vocab_size=51)
    for arch, n_sizes in (("gpt", 5), ("lstm", 4)):
        ns = [p.params_non_embedding for p in planned if p.trial.arch == arch]
        assert len(ns) == n_sizes and max(ns) / min(ns) >= 10**1.5


def test_paper_grid_matches_the_seed_study():
    planned = {p.trial.size: p for p in plan(load_spec("paper"), ("gpt", "lstm"), vocab_size=97)}
    assert 1.3e6 <= planned["tiny"].params_total <= 1.5e6
    assert 47e6 <= planned["large"].params_total <= 53e6
    assert 104e6 <= planned["xl"].params_total <= 110e6
    assert planned["rnn-large"].params_total == pytest.approx(42.2e6, rel=0.02)
    spec = load_spec("paper")
    assert spec.train.loop.context == 256 and spec.train.loop.tokens == 100_000_000
    assert spec.archs["gpt"].precision in ("bf16", "fp16") and spec.archs["lstm"].precision == "fp32"


def test_precision_and_compile_reach_each_trials_training_config(tmp_path, monkeypatch):
    path = tmp_path / "mixed.yaml"
    path.write_text("name: mixed\ndata: d\ntrain: {tokens: 4096, context: 16, batch_size: 4}\n"
                    "archs:\n  gpt: {precision: bf16, compile: true, sizes: {a: {n_layer: 1, n_head: 1, n_embd: 8}}}\n"
                    "  lstm: {precision: tf32, sizes: {b: {n_layer: 1, n_embd: 8, hidden: 8}}}\n")
    spec = load_spec(str(path))
    configs = {p.trial.arch: spec.train.for_trial(p.trial) for p in plan(spec, ("gpt", "lstm"), vocab_size=51)}
    assert (configs["gpt"].precision, configs["gpt"].compile) == ("bf16", True)
    assert (configs["lstm"].precision, configs["lstm"].compile) == ("tf32", False)
    path.write_text(path.read_text().replace("compile: true", "compile: 3"))
    with pytest.raises(UserError, match="gpt size a: compile must be true or false"):
        plan(load_spec(str(path)), ("gpt",), vocab_size=51)
    path.write_text(path.read_text().replace("precision: tf32", "precision: fp8"))
    with pytest.raises(UserError, match="lstm size b: precision must be one of fp32, tf32, bf16, fp16"):
        plan(load_spec(str(path)), ("lstm",), vocab_size=51)


def test_compile_without_the_devices_compiler_is_refused_on_a_local_ray_only(tmp_path, monkeypatch):
    path = tmp_path / "compiled.yaml"
    path.write_text("name: c\ndata: d\ntrain: {tokens: 4096, context: 16, batch_size: 4}\n"
                    "archs:\n  gpt: {compile: true, sizes: {a: {n_layer: 1, n_head: 1, n_embd: 8}}}\n"
                    "  lstm: {sizes: {b: {n_layer: 1, n_embd: 8, hidden: 8}}}\n")
    planned = plan(load_spec(str(path)), ("gpt", "lstm"), vocab_size=51)
    cpu = TrialResources(workers=1, cpus_per_worker=1, gpus_per_worker=0)
    gpu = dataclasses.replace(cpu, gpus_per_worker=1)
    for variable in ("CC", "CXX"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on it
    with pytest.raises(UserError, match=r"^gpt: compile: true needs a C\+\+ compiler for Inductor's CPU kernels"):
        check_compilers(planned, cpu, joined=False)
    with pytest.raises(UserError, match=r"^gpt: compile: true needs a C compiler for Triton's kernels"):
        check_compilers(planned, gpu, joined=False)
    check_compilers(planned, gpu, joined=True)  # a cluster's trials check the nodes they run on
    check_compilers([p for p in planned if p.trial.arch == "lstm"], cpu, joined=False)  # nothing compiles

    # Each device's own compiler: g++ (or $CXX) for the CPU, gcc or clang (or $CC) for Triton.
    (tmp_path / "g++").write_text("#!/bin/sh\n")
    (tmp_path / "g++").chmod(0o755)
    check_compilers(planned, cpu, joined=False)
    with pytest.raises(UserError, match="Triton"):
        check_compilers(planned, gpu, joined=False)
    monkeypatch.setenv("CC", str(tmp_path / "g++"))
    check_compilers(planned, gpu, joined=False)
    monkeypatch.setenv("CXX", "no-such-cxx")
    with pytest.raises(UserError, match=r"\$CXX=no-such-cxx is not found"):
        check_compilers(planned, cpu, joined=False)


def test_grid_repeats_sizes_over_learning_rates_and_seeds():
    spec = dataclasses.replace(load_spec("tiny"), seeds=3)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, lrs=(1e-3, 3e-3)))
    grid = build_grid(spec)
    assert len(grid) == 3 * 2 * 3
    assert len({t.key for t in grid}) == len(grid)


def test_the_width_rule_scales_each_sizes_rate_and_the_run_records_both(tmp_path):
    rule = tmp_path / "rule.yaml"
    rule.write_text("name: x\ndata: d\ntrain: {tokens: 4096, context: 8, batch_size: 4, lrs: [0.01]}\n"
                    "archs:\n  gpt: {lr_reference_width: 64, lr_width_exponent: 0.5,\n"
                    "    sizes: {w16: {n_layer: 1, n_head: 2, n_embd: 16}, w256: {n_layer: 1, n_head: 2, n_embd: 256}}}\n"
                    "  lstm: {lr_reference_width: 64, lr_width_exponent: 0.5,\n"
                    "    sizes: {h64: {n_layer: 1, n_embd: 8, hidden: 64}}}\n")
    spec = load_spec(str(rule))
    planned = {p.trial.key: p for p in plan(spec, ("gpt", "lstm"), vocab_size=51)}
    # GPT scales by n_embd, the LSTM by hidden (not its embedding): (64/16)^0.5, (64/256)^0.5, (64/64)^0.5
    assert [round(p.lr, 12) for p in planned.values()] == [0.02, 0.005, 0.01]
    assert [spec.train.for_trial(p.trial).lr for p in planned.values()] == [p.lr for p in planned.values()]
    record = trial_record(planned["gpt-w16-lr0.01-s0"], spec, "d", "0" * 16, TrialResources(1, 1, 0))
    assert (record.lr, record.lr_grid) == (pytest.approx(0.02), 0.01)
    assert TrialRecord.from_params(record.params()) == record
    off = dataclasses.replace(spec, archs={"gpt": dataclasses.replace(spec.archs["gpt"], lr_reference_width=0)})
    assert {p.lr for p in plan(off, ("gpt",), vocab_size=51)} == {0.01}
    rule.write_text(rule.read_text().replace("lr_reference_width: 64", "lr_reference_width: -1", 1))
    with pytest.raises(UserError, match="rule.yaml.archs.gpt: lr_reference_width must not be negative"):
        load_spec(str(rule))


def test_unknown_and_missing_keys_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: d\ntrain: {tokens: 1, context: 8, batch_size: 1, learning_rate: 1}\n"
                   "archs: {gpt: {sizes: {a: {n_layer: 1, n_head: 1, n_embd: 8}}}}\n")
    with pytest.raises(UserError, match="bad.yaml.train: unknown key.*learning_rate"):
        load_spec(str(bad))
    bad.write_text("name: x\ndata: d\narchs: {gpt: {sizes: {}}}\n")
    with pytest.raises(UserError, match="missing key.*train"):
        load_spec(str(bad))
    with pytest.raises(UserError, match="no experiment 'nope'"):
        load_spec("nope")


def test_plan_rejects_what_cannot_train():
    spec = load_spec("tiny")
    with pytest.raises(UserError, match="unknown architecture transformer"):
        plan(spec, ("transformer",), vocab_size=51)
    small_budget = dataclasses.replace(spec, train=dataclasses.replace(
        spec.train, loop=dataclasses.replace(spec.train.loop, tokens=10)))
    with pytest.raises(UserError, match="smaller than one batch"):
        plan(small_budget, ("gpt",), vocab_size=51)
    bad_heads = dataclasses.replace(spec, archs={"gpt": dataclasses.replace(
        spec.archs["gpt"], sizes={"odd": {"n_layer": 1, "n_head": 3, "n_embd": 16}})})
    with pytest.raises(UserError, match="gpt size odd"):
        plan(bad_heads, ("gpt",), vocab_size=51)


def test_gpu_requests_are_checked_against_the_cluster():
    spec = load_spec("paper")
    with pytest.raises(UserError, match="has 0 GPU"):
        trial_resources(spec, {"CPU": 16})
    assert trial_resources(spec, {"CPU": 16, "GPU": 4}).gpus_per_worker == 1
    assert trial_resources(load_spec("demo"), {"CPU": 2}).gpus_per_worker == 0
    assert trial_resources(load_spec("demo"), {"CPU": 2, "GPU": 1}).gpus_per_worker == 1
    # A joined cluster with an autoscaler starts with no GPU node: the trials' requests are what scale it up.
    assert trial_resources(spec, {"CPU": 8}, can_scale_up=True).gpus_per_worker == 1


def test_fit_cells_use_each_size_and_budgets_best_learning_rate_with_all_its_seeds():
    def cell(arch: str, size: str, n: float, d: float, lr: float, loss: float, seed: int = 0) -> TrialCell:
        return TrialCell(arch, lr, Cell(size=size, n=n, d=d, loss=loss, loss_se=0.01, flops=6 * n * d, epochs=0.5,
                                        seed=seed))

    cells = [cell("gpt", "s", 100, 1e5, 1e-3, 2.0), cell("gpt", "s", 100, 1e5, 1e-3, 2.2, seed=1),  # mean 2.1
             cell("gpt", "s", 100, 1e5, 3e-3, 1.9), cell("gpt", "s", 100, 1e5, 3e-3, 2.1, seed=1),  # 2.0: best
             cell("gpt", "s", 100, 2e5, 1e-3, 1.7), cell("gpt", "s", 100, 2e5, 3e-3, 1.8),  # here 1e-3 wins
             cell("gpt", "m", 1000, 1e5, 1e-3, 1.5), cell("lstm", "s", 100, 1e5, 1e-3, 2.5)]
    chosen = best_lr_cells(cells)
    assert sorted((c.n, c.d, c.loss) for c in chosen["gpt"]) == [(100, 1e5, 1.9), (100, 1e5, 2.1), (100, 2e5, 1.7),
                                                                  (1000, 1e5, 1.5)]
    assert [c.loss for c in chosen["lstm"]] == [2.5]
    assert sorted(largest_budget_points(chosen["gpt"])) == [(100, 1.7)]


def test_a_split_shorter_than_one_context_window_is_refused(tmp_path):
    manifest = {"splits": {"train": {"tokens": 10_000, "tunes": 50}, "val": {"tokens": 100, "tunes": 2}}}
    check_splits_fit_context(manifest, 64, tmp_path)
    with pytest.raises(UserError, match="the val split .* 103 tokens"):
        check_splits_fit_context(manifest, 128, tmp_path)



def test_ray_settings_keep_the_users_and_reach_the_trials(monkeypatch):
    for name in driver.RAY_ENV_FOR_TRIALS + ("RAY_DEDUP_LOGS",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1.5")
    before = set(os.environ)
    driver._set_ray_environment(joined=False)
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "1.5"  # a user's own value stays
    assert float(os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"]) >= 24 * 3600  # queued trials keep waiting
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    # Train's controllers and workers read these from their own environment: each one set here is forwarded
    assert {n for n in set(os.environ) - before if n.startswith("RAY_TRAIN_")} <= set(driver.RAY_ENV_FOR_TRIALS)

    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
    driver._set_ray_environment(joined=True)
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ  # a cluster's nodes can be preempted


def test_a_local_ray_runs_as_many_trials_as_its_scarcest_resource_holds():
    cpu_only = TrialResources(workers=1, cpus_per_worker=1, gpus_per_worker=0)
    assert concurrent_trials({"CPU": 2.0}, cpu_only) == 2
    assert concurrent_trials({"CPU": 1.0}, dataclasses.replace(cpu_only, cpus_per_worker=4)) == 1  # never zero
    one_gpu = TrialResources(workers=1, cpus_per_worker=4, gpus_per_worker=1)
    # a 1-GPU workstation: one trial trains, one more starts its processes and waits for the GPU
    assert concurrent_trials({"CPU": 64.0, "GPU": 1.0}, one_gpu) == 2
    assert concurrent_trials({"CPU": 64.0, "GPU": 8.0}, one_gpu) == 9
    assert concurrent_trials({"CPU": 8.0, "GPU": 8.0}, one_gpu) == 2  # the CPUs are scarcer
    ddp = TrialResources(workers=2, cpus_per_worker=1, gpus_per_worker=0.5, custom_per_worker={"fake_gpu": 1})
    assert concurrent_trials({"CPU": 16.0, "GPU": 3.0, "fake_gpu": 2.0}, ddp) == 2
