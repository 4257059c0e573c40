"""The training loop without Ray: schedule, budget, evaluation points, learning, and exact resumption."""

from __future__ import annotations

import copy
import os
import shutil
import time
import numpy as np
import pytest
import torch

from abcmusic.models.registry import build_model
from abcmusic.train.compilers import CompilerMissing
from abcmusic.train.loop import TrainConfig, eval_starts, evaluate, evaluate_split, train, window_batch

VOCAB = 12


def tiny_gpt(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("gpt", {"vocab_size": VOCAB, "context": 16, "n_layer": 1, "n_head": 2, "n_embd": 16})


def pattern_stream(length: int = 5000) -> np.ndarray:
    """A periodic token stream: a model that learns anything drives its loss far below ln(vocab)."""
    return (np.arange(length) % 7 + 2).astype(np.uint16)


def config(**overrides) -> TrainConfig:
    fields = dict(tokens=16 * 8 * 60, context=16, batch_size=8, lr=3e-3, eval_points=4, checkpoints=3,
                  eval_batches=2, seed=0)
    return TrainConfig(**(fields | overrides))


def test_schedule_warms_up_then_decays_to_the_floor():
    c = config(tokens=16 * 8 * 100, warmup_fraction=0.1, lr=1e-3, min_lr_fraction=0.1)
    assert c.steps == 100
    assert c.lr_at(0) == pytest.approx(1e-4)
    assert c.lr_at(9) == pytest.approx(1e-3)
    assert c.lr_at(99) == pytest.approx(1e-4, rel=0.01)
    lrs = [c.lr_at(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_budget_and_batch_validation():
    with pytest.raises(ValueError, match="smaller than one batch"):
        config(tokens=100).validate()
    with pytest.raises(ValueError, match="not divisible"):
        config(batch_size=6).validate(world_size=4)
    with pytest.raises(ValueError, match="micro_batch_size"):
        config(batch_size=8, micro_batch_size=3).validate()
    with pytest.raises(ValueError, match="precision"):
        config(precision="fp8").validate()


def test_report_steps_are_log_spaced_and_end_at_the_last_step():
    c = config(tokens=16 * 8 * 1000, eval_points=6, checkpoints=4)
    evals, checkpoints = c.report_steps()
    assert max(evals) == c.steps == 1000 and c.steps in checkpoints
    assert min(evals) <= 20  # the first evaluation comes early: the curve's start is log-spaced
    assert len(evals) == 6 and len(checkpoints) == 4 and 250 in checkpoints and 250 not in evals
    # evaluations cost the same whatever the step: checkpoints between them do not add any
    assert evals == {int(round(s)) for s in np.geomspace(10, 1000, 6)}


def test_windows_are_inputs_and_next_token_targets():
    stream = np.arange(100, dtype=np.uint16)
    x, y = window_batch(stream, np.array([0, 10]), 5)
    assert x.tolist() == [[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]]
    assert y.tolist() == [[1, 2, 3, 4, 5], [11, 12, 13, 14, 15]]
    assert (eval_starts(stream, 2, 3, 5) == eval_starts(stream, 2, 3, 5)).all()


def test_split_loss_covers_every_full_window_once_with_its_standard_error():
    model = tiny_gpt()
    stream = np.random.default_rng(0).integers(0, VOCAB, 16 * 37 + 5).astype(np.uint16)
    split = evaluate_split(model, stream, context=16, batch=8, device=torch.device("cpu"), precision="fp32")
    assert split.windows == 37 and split.tokens == 37 * 16  # the 5 tokens after the last full window are left out
    # the same windows one at a time through the model's own loss: the same mean, and their spread gives the error
    starts = np.arange(0, 37 * 16, 16).reshape(37, 1)
    per_window = [evaluate(model, stream, starts[i:i + 1], 16, torch.device("cpu"), "fp32") for i in range(37)]
    assert split.loss == pytest.approx(np.mean(per_window), rel=1e-6)
    assert split.standard_error == pytest.approx(np.std(per_window, ddof=1) / np.sqrt(37), rel=1e-5)
    assert model.training  # left as it was found
    with pytest.raises(ValueError, match="too short"):
        evaluate_split(model, stream[:16], 16, 8, torch.device("cpu"), "fp32")


def test_training_learns_and_reports_every_evaluation():
    reports = []
    final = train(tiny_gpt(), pattern_stream(), pattern_stream(), config(), lambda m, s: reports.append((m, s)))
    val_losses = [m["val_loss"] for m, _ in reports if "val_loss" in m]
    assert len(val_losses) == len(config().report_steps()[0])
    assert val_losses[-1] < 0.5 * np.log(VOCAB) and val_losses[-1] < val_losses[0]
    assert final["tokens_seen"] == config().steps * 16 * 8
    assert sum(s is not None for _, s in reports) == len(config().report_steps()[1])
    # the last report's own time is in the returned report_seconds, so the last report leaves timings out
    assert "report_seconds" in reports[0][0] and "report_seconds" not in reports[-1][0]
    assert final["report_seconds"] > reports[-2][0]["report_seconds"]


def test_startup_is_the_time_before_the_first_step_and_no_part_is_counted_twice():
    called = time.perf_counter()
    final = train(tiny_gpt(), pattern_stream(), pattern_stream(), config(), lambda m, s: None)
    wall = time.perf_counter() - called
    parts = [final[k] for k in ("startup_seconds", "train_seconds", "eval_seconds", "report_seconds")]
    assert min(parts) > 0 and sum(parts) <= wall


def test_resuming_from_a_checkpoint_gives_the_uninterrupted_result():
    straight_model = tiny_gpt()
    straight = train(straight_model, pattern_stream(), pattern_stream(), config(), lambda m, s: None)

    states = []
    # The state holds live tensors (the loop's contract: save it before returning), so keep a copy.
    train(tiny_gpt(), pattern_stream(), pattern_stream(), config(),
          lambda m, s: states.append(copy.deepcopy(s)) if s else None)
    middle = states[0]  # the first checkpoint, a third of the way
    assert 0 < middle["step"] < config().steps
    resumed_model = tiny_gpt(seed=99)  # different init: everything must come from the state
    resumed = train(resumed_model, pattern_stream(), pattern_stream(), config(), lambda m, s: None,
                    resume_state=middle)
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_early_stopping_stops_when_val_loss_stops_improving():
    # The model learns the training pattern; on unrelated random validation tokens it only grows more confidently
    # wrong, so the validation loss stops improving early.
    noise = np.random.default_rng(0).integers(2, VOCAB, 4000).astype(np.uint16)
    final = train(tiny_gpt(), pattern_stream(), noise, config(tokens=16 * 8 * 400, early_stopping_patience=2),
                  lambda m, s: None)
    assert final.get("early_stopped") == 1 and final["step"] < 400


def test_bf16_autocast_trains_on_cpu():
    final = train(tiny_gpt(), pattern_stream(), pattern_stream(), config(precision="bf16"), lambda m, s: None)
    assert np.isfinite(final["val_loss"])


def test_resuming_from_the_final_checkpoint_returns_its_metrics():
    states = []
    straight = train(tiny_gpt(), pattern_stream(), pattern_stream(), config(),
                     lambda m, s: states.append(copy.deepcopy(s)) if s else None)
    last = states[-1]
    assert last["step"] == config().steps
    resumed = train(tiny_gpt(seed=5), pattern_stream(), pattern_stream(), config(), lambda m, s: None,
                    resume_state=last)
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"])
    assert resumed["tokens_seen"] == straight["tokens_seen"]
    assert resumed["startup_seconds"] > 0  # no step ran: the time to the loop


@pytest.mark.parametrize("precision, allowed", [("fp32", False), ("tf32", True), ("bf16", False)])
def test_tf32_is_on_only_under_tf32_and_the_settings_are_restored(precision: str, allowed: bool) -> None:
    """PyTorch's defaults let cuDNN (an LSTM) use TF32 while matmuls do not: fp32 must mean IEEE fp32 for both,
    over the whole run (the backward pass runs outside autocast) and its evaluations."""
    seen = []
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    before = flags()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (not allowed, not allowed)
    try:
        train(tiny_gpt(), pattern_stream(), pattern_stream(), config(precision=precision),
              lambda m, s: seen.append(flags()))
        assert set(seen) == {(allowed, allowed)}
        assert flags() == (not allowed, not allowed)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_tf32_is_fp32_on_a_cpu():
    models = [tiny_gpt(), tiny_gpt()]
    results = [train(model, pattern_stream(), pattern_stream(), config(precision=precision), lambda m, s: None)
               for model, precision in zip(models, ("fp32", "tf32"))]
    assert results[0]["val_loss"] == results[1]["val_loss"]
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)


def test_reported_losses_and_norms_are_plain_floats():
    """They stay on the device between reports (no GPU wait per step) and become floats when reported."""
    reports = []
    train(tiny_gpt(), pattern_stream(), pattern_stream(), config(), lambda m, s: reports.append(m))
    for metrics in reports:
        assert all(type(value) in (int, float) for value in metrics.values()), metrics


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_training_matches_eager_training():
    models = [tiny_gpt(), tiny_gpt()]
    results = [train(model, pattern_stream(), pattern_stream(), config(tokens=16 * 8 * 20, compile=compiled),
                     lambda m, s: None) for model, compiled in zip(models, (False, True))]
    assert results[1]["val_loss"] == pytest.approx(results[0]["val_loss"], rel=1e-3)
    # the compiled module wraps the model: what is checkpointed and returned is the model's own state
    assert list(models[1].state_dict()) == list(models[0].state_dict())
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4)


def test_compile_without_a_compiler_fails_before_the_first_step_and_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ on it
    steps = []
    with pytest.raises(CompilerMissing, match=r"^compile: true needs a C\+\+ compiler for Inductor's CPU kernels "
                                              r"\(g\+\+, or \$CXX\) on "):
        train(tiny_gpt(), pattern_stream(), pattern_stream(), config(compile=True), lambda m, s: steps.append(m))
    assert steps == []


def test_compile_must_be_a_boolean():
    with pytest.raises(ValueError, match="compile must be true or false"):
        config(compile="yes").validate()


def wsd(**overrides) -> TrainConfig:
    return config(**({"tokens": 16 * 8 * 100, "schedule": "wsd", "budgets": (0.25, 0.5), "warmup_fraction": 0.1,
                      "eval_points": 3, "checkpoints": 2} | overrides))


def test_wsd_is_constant_after_warmup_and_each_cell_cools_down_over_its_last_fifth():
    c = wsd(cooldown_shape="linear", lr=1e-3, min_lr_fraction=0.1)
    assert [(cell.steps, cell.cooldown_start, cell.tokens) for cell in c.cells()] == [
        (25, 20, 25 * 128), (50, 40, 50 * 128), (100, 80, 100 * 128)]
    assert c.lr_at(0) == pytest.approx(1e-4) and c.lr_at(9) == pytest.approx(1e-3)
    assert {c.lr_at(s) for s in range(10, 80)} == {1e-3}
    assert c.lr_at(99) == pytest.approx(1e-4)
    first = c.cells()[0]
    assert [c.cooldown_lr(first, s) for s in (19, 20, 24)] == pytest.approx([1e-3, 1e-3 - 0.9e-3 / 5, 1e-4])
    sqrt_shape = wsd(lr=1e-3, min_lr_fraction=0.0)
    assert sqrt_shape.cooldown_lr(first, 20) == pytest.approx(1e-3 * (1 - 0.2 ** 0.5))
    assert [cell.tokens for cell in wsd(budgets=(3200, 0.5, 1.0)).cells()] == [3200, 6400, 12800]
    assert config().cells()[0].cooldown_start == config().steps  # cosine: one cell, the run's end


def test_wsd_settings_are_validated():
    with pytest.raises(ValueError, match="schedule"):
        config(schedule="step").validate()
    with pytest.raises(ValueError, match="budgets need schedule: wsd"):
        config(budgets=(0.5,)).validate()
    with pytest.raises(ValueError, match="budget 2e\\+06"):
        wsd(budgets=(2e6,)).validate()
    with pytest.raises(ValueError, match="no room for warm-up"):
        wsd(budgets=(0.05,)).validate()
    with pytest.raises(ValueError, match="early stopping"):
        wsd(early_stopping_patience=2).validate()


def test_a_branch_equals_a_run_trained_to_its_budget_and_leaves_the_main_run_unchanged():
    cells = []
    branched_model = tiny_gpt()
    branched = train(branched_model, pattern_stream(), pattern_stream(), wsd(), lambda m, s: None,
                     report_cell=lambda m, s: cells.append(m))
    assert [m["cell/tokens"] for m in cells] == [25 * 128, 50 * 128]
    assert branched["cell/tokens"] == 100 * 128 and branched["tokens_seen"] == 100 * 128
    assert branched["tokens_trained"] == (100 + 5 + 10) * 128

    # The same schedule trained to the second budget alone (the same warm-up steps, 10): the branch's cell.
    alone = train(tiny_gpt(), pattern_stream(), pattern_stream(),
                  wsd(tokens=50 * 128, budgets=(), warmup_fraction=0.2), lambda m, s: None)
    assert alone["cell/val_loss"] == pytest.approx(cells[1]["cell/val_loss"], rel=1e-5)

    # Without branches the main run is the same run: every branch restores the state it started from.
    plain_model = tiny_gpt()
    plain = train(plain_model, pattern_stream(), pattern_stream(), wsd(budgets=()), lambda m, s: None)
    assert plain["cell/val_loss"] == pytest.approx(branched["cell/val_loss"], rel=1e-5)
    for a, b in zip(plain_model.state_dict().values(), branched_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_run_resumed_after_a_cell_never_repeats_it_and_ends_as_the_uninterrupted_run():
    straight = train(tiny_gpt(), pattern_stream(), pattern_stream(), wsd(), lambda m, s: None)
    saved = []
    train(tiny_gpt(), pattern_stream(), pattern_stream(), wsd(), lambda m, s: None,
          report_cell=lambda m, s: saved.append((m, copy.deepcopy(s))))
    first_cell, after_first = saved[0]
    assert after_first["cells_done"] == 1 and after_first["step"] == 20  # the branch point, the cell done

    cells_after_resume = []
    resumed = train(tiny_gpt(seed=7), pattern_stream(), pattern_stream(), wsd(), lambda m, s: None,
                    resume_state=after_first, report_cell=lambda m, s: cells_after_resume.append(m))
    assert [m["cell/tokens"] for m in cells_after_resume] == [50 * 128]
    assert resumed["cell/val_loss"] == pytest.approx(straight["cell/val_loss"], rel=1e-5)
    assert resumed["tokens_trained"] == (80 + 10) * 128  # from step 20: the rest of the run and one branch
