"""Unit tests for the GPT and LSTM models: parameter counts, forward/backward, causality, state, the registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from abcmusic.models.gpt import GPT, GPTConfig, gpt_flops_per_token, gpt_param_counts
from abcmusic.models.lstm import LSTMConfig, LSTMModel, lstm_flops_per_token, lstm_param_counts
from abcmusic.models import ModelOutput
from abcmusic.models.registry import ARCHITECTURES, build_model, make_config

GPT_CONFIGS = [
    GPTConfig(vocab_size=11, context=8, n_layer=1, n_head=1, n_embd=4),
    GPTConfig(vocab_size=97, context=32, n_layer=2, n_head=4, n_embd=32, dropout=0.1),
    GPTConfig(vocab_size=50, context=16, n_layer=3, n_head=2, n_embd=24, bias=False),
]
LSTM_CONFIGS = [
    LSTMConfig(vocab_size=11, n_layer=1, n_embd=8, hidden=8),  # tied
    LSTMConfig(vocab_size=97, n_layer=2, n_embd=16, hidden=32, dropout=0.1),  # untied
    LSTMConfig(vocab_size=50, n_layer=3, n_embd=24, hidden=24),  # tied
    LSTMConfig(vocab_size=40, n_layer=2, n_embd=32, hidden=16),  # untied
]


@pytest.mark.parametrize("config", GPT_CONFIGS)
def test_gpt_closed_form_counts_match_module(config: GPTConfig) -> None:
    model = GPT(config)
    counts = gpt_param_counts(config)
    assert counts.total == model.num_params()
    assert counts.non_embedding == model.num_params(non_embedding=True)
    embeddings = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    assert counts.total - counts.non_embedding == embeddings == (config.vocab_size + config.context) * config.n_embd


@pytest.mark.parametrize("config", LSTM_CONFIGS)
def test_lstm_closed_form_counts_match_module(config: LSTMConfig) -> None:
    model = LSTMModel(config)
    counts = lstm_param_counts(config)
    assert counts.total == model.num_params()
    assert counts.non_embedding == model.num_params(non_embedding=True)
    assert (model.head.weight is model.embedding.weight) == config.tied
    vocab_indexed = config.vocab_size * config.n_embd + config.vocab_size
    if not config.tied:
        vocab_indexed += config.hidden * config.vocab_size
    assert counts.total - counts.non_embedding == vocab_indexed
    assert counts.non_embedding == sum(p.numel() for p in model.lstm.parameters())


def test_gpt_forward_backward() -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=97, context=32, n_layer=2, n_head=4, n_embd=32)
    model = GPT(config)
    idx = torch.randint(0, config.vocab_size, (4, config.context))
    targets = torch.randint(0, config.vocab_size, (4, config.context))
    logits, loss, state = model(idx, targets)
    assert state is None  # a window without a state keeps none
    assert logits.shape == (4, config.context, config.vocab_size)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(math.log(config.vocab_size), rel=0.1)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    assert model(idx[:, :5]).loss is None


def test_gpt_rejects_sequence_longer_than_context() -> None:
    model = GPT(GPT_CONFIGS[0])
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_gpt_is_causal() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, context=16, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 20, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 20
    with torch.no_grad():
        before = model(idx).logits
        after = model(changed).logits
    torch.testing.assert_close(before[:, :10], after[:, :10])
    assert not torch.allclose(before[:, 10:], after[:, 10:])


@pytest.mark.parametrize("config", LSTM_CONFIGS[:2], ids=["tied", "untied"])
def test_lstm_forward_backward(config: LSTMConfig) -> None:
    torch.manual_seed(0)
    model = LSTMModel(config)
    idx = torch.randint(0, config.vocab_size, (3, 12))
    targets = torch.randint(0, config.vocab_size, (3, 12))
    logits, loss, (h, c) = model(idx, targets)
    assert logits.shape == (3, 12, config.vocab_size)
    assert h.shape == c.shape == (config.n_layer, 3, config.hidden)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(math.log(config.vocab_size), rel=0.1)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch, fields", [
    ("gpt", {"vocab_size": 30, "context": 20, "n_layer": 2, "n_head": 2, "n_embd": 16}),
    ("lstm", {"vocab_size": 30, "n_layer": 2, "n_embd": 16, "hidden": 24}),
])
def test_a_state_carries_the_sequence_across_calls(arch: str, fields: dict) -> None:
    """What sampling relies on, for every architecture: a state from initial_state, passed from call to call,
    gives the logits of one call over the whole sequence; a fresh one gives exactly those of no state."""
    torch.manual_seed(0)
    model = build_model(arch, fields).eval()
    idx = torch.randint(0, 30, (2, 20))
    with torch.no_grad():
        whole = model(idx)
        assert isinstance(whole, ModelOutput)
        assert torch.equal(model(idx, state=model.initial_state(2)).logits, whole.logits)
        first = model(idx[:, :8], state=model.initial_state(2))
        second = model(idx[:, 8:], state=first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], dim=1), whole.logits, atol=1e-5, rtol=1e-5)
    assert model.max_context == fields.get("context")  # the LSTM's is unbounded: None
    if arch == "lstm":
        for a, b in zip(second.state, whole.state):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("make, match", [
    (lambda: GPTConfig(vocab_size=10, context=8, n_layer=2, n_head=3, n_embd=16), "divisible"),
    (lambda: GPTConfig(vocab_size=0, context=8, n_layer=2, n_head=2, n_embd=16), "vocab_size"),
    (lambda: GPTConfig(vocab_size=10, context=-1, n_layer=2, n_head=2, n_embd=16), "context"),
    (lambda: GPTConfig(vocab_size=10, context=8, n_layer=2, n_head=2, n_embd=16, dropout=1.0), "dropout"),
    (lambda: GPTConfig(vocab_size=10, context=8, n_layer=2.0, n_head=2, n_embd=16), "n_layer"),
    (lambda: LSTMConfig(vocab_size=10, n_layer=0, n_embd=8, hidden=8), "n_layer"),
    (lambda: LSTMConfig(vocab_size=10, n_layer=1, n_embd=8, hidden=-8), "hidden"),
    (lambda: LSTMConfig(vocab_size=10, n_layer=1, n_embd=8, hidden=8, dropout=-0.1), "dropout"),
])
def test_config_validation(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("arch, config", [("gpt", GPT_CONFIGS[1]), ("lstm", LSTM_CONFIGS[1])])
def test_registry_round_trip(arch: str, config) -> None:
    stored = dataclasses.asdict(config)
    assert make_config(arch, **stored) == config
    model = build_model(arch, stored)
    assert isinstance(model, ARCHITECTURES[arch].model_class)
    assert model.config == config
    assert ARCHITECTURES[arch].param_counts(config).total == model.num_params()
    assert ARCHITECTURES[arch].flops_per_token(config) > 0


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'x'; choose from gpt, lstm"):
        build_model("x", {})
    with pytest.raises(ValueError, match="unknown architecture 'x'; choose from gpt, lstm"):
        make_config("x")
    with pytest.raises(ValueError, match="n_hidden"):
        make_config("lstm", vocab_size=10, n_layer=1, n_embd=8, hidden=8, n_hidden=8)
    with pytest.raises(ValueError, match="missing.*hidden"):
        make_config("lstm", vocab_size=10, n_layer=1, n_embd=8)


def test_seed_study_sizes() -> None:
    small = gpt_param_counts(GPTConfig(vocab_size=97, context=256, n_layer=3, n_head=3, n_embd=192))
    assert 1.3e6 <= small.total <= 1.5e6
    large = gpt_param_counts(GPTConfig(vocab_size=97, context=256, n_layer=12, n_head=12, n_embd=864))
    assert large.total == pytest.approx(107e6, rel=0.03)
    lstm = lstm_param_counts(LSTMConfig(vocab_size=97, n_layer=5, n_embd=1024, hidden=1024))
    assert lstm.total == pytest.approx(42.2e6, rel=0.02)


def test_flops_per_token_formulas() -> None:
    gpt = GPTConfig(vocab_size=97, context=256, n_layer=3, n_head=3, n_embd=192)
    expected = 6 * (gpt_param_counts(gpt).non_embedding + 192 * 97) + 12 * 3 * 192 * 256
    assert gpt_flops_per_token(gpt) == expected
    lstm = LSTMConfig(vocab_size=97, n_layer=2, n_embd=16, hidden=32)
    lstm_weights = 4 * 32 * (16 + 32) + 4 * 32 * (32 + 32)
    assert lstm_flops_per_token(lstm) == 6 * (lstm_weights + 32 * 97)
