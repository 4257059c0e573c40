"""Unit tests for sampling: the GPT key/value cache and window policy, the LSTM's carried state, stopping, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from abcmusic.generate.sampling import Sample, SamplingConfig, lead_ins, sample, window_start
from abcmusic.models.gpt import GPT, GPTConfig
from abcmusic.models.lstm import LSTMConfig, LSTMModel

SEP = 0
VOCAB = 13


@pytest.fixture(autouse=True)
def one_thread():
    """Sampling runs ops on a few hundred numbers; on a busy machine, extra threads only wait on one another."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def peaky_gpt(seed: int = 0, bias: bool = True, context: int = 8) -> GPT:
    """A small GPT with large random weights, so that its next-token distribution depends strongly on the context:
    a cache or window that saw the wrong tokens then changes the samples, instead of nudging a near-uniform one."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=VOCAB, context=context, n_layer=2, n_head=2, n_embd=16, bias=bias))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    return model


def peaky_lstm(seed: int = 0) -> LSTMModel:
    torch.manual_seed(seed)
    model = LSTMModel(LSTMConfig(vocab_size=VOCAB, n_layer=2, n_embd=16, hidden=24))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 1.0)
    return model


def gpt_with_separator_logit(separator_logit: float) -> GPT:
    """A GPT whose output ignores its input: the separator's logit is `separator_logit`, the others about 0."""
    model = peaky_gpt()
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0  # the final hidden state is the first unit vector
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[SEP, 0] = separator_logit  # tied to wte: only the separator's embedding changes
    return model


def new_ids(samples: list[Sample]) -> list[tuple[int, ...]]:
    return [s.new_ids for s in samples]


# The window policy


def test_window_policy_restarts_from_the_last_half_context() -> None:
    starts, start = [], 0
    for length in range(1, 20):
        start = window_start(start, length, context=8)
        starts.append(start)
    # Grows to 8 tokens, then at 9 keeps the last 4 (start 5) and grows to 8 again (length 13), and so on.
    assert starts == [0] * 8 + [5] * 5 + [10] * 5 + [15]
    assert window_start(0, 30, context=8) == 26  # a long prompt is cut the same way
    assert window_start(0, 2, context=1) == 1  # context 1 still keeps one token


# The GPT key/value cache


@pytest.mark.parametrize("bias", [True, False])
def test_cached_forward_equals_full_forward(bias: bool) -> None:
    model = peaky_gpt(bias=bias, context=16).eval()
    idx = torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx).logits
        for chunks in ([1] * 16, [5, 1, 1, 3, 6]):  # one token at a time; and chunks after a cached prefix
            cache = model.initial_state(3)
            position = 0
            for size in chunks:
                logits = model(idx[:, position:position + size], state=cache).logits
                torch.testing.assert_close(logits, full[:, position:position + size], atol=1e-5, rtol=1e-5)
                position += size
            assert cache.length == 16
            with pytest.raises(ValueError, match="exceeds the model's context of 16"):
                model(idx[:, :1], state=cache)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.8, 3), (1.5, 1)])
def test_gpt_cached_sampling_equals_recomputing_the_window(temperature: float, top_k: int | None) -> None:
    model = peaky_gpt()  # context 8: 40 new tokens restart the window several times
    prompts = [[SEP], [SEP], [SEP], [3, 4, 5], list(range(1, 12))]  # a batch of three; a prompt longer than context
    samples = {}
    for use_cache in (True, False):
        config = SamplingConfig(max_new_tokens=40, temperature=temperature, top_k=top_k, seed=3, use_cache=use_cache)
        samples[use_cache] = sample(model, prompts, None, config)
    assert new_ids(samples[True]) == new_ids(samples[False])
    assert all(len(ids) == 40 for ids in new_ids(samples[True]))
    if top_k != 1:
        assert len(set(new_ids(samples[True])[:3])) == 3  # the batched rows are drawn independently


def test_gpt_cached_sampling_with_stops_equals_uncached() -> None:
    model = peaky_gpt(seed=2)
    configs = [SamplingConfig(max_new_tokens=30, seed=5, use_cache=use_cache) for use_cache in (True, False)]
    cached, uncached = (sample(model, [[SEP]] * 8, SEP, config) for config in configs)
    assert cached == uncached
    assert any(not s.truncated for s in cached)  # some rows stopped, so the batch kept running past them


def test_gpt_cache_makes_the_cost_linear() -> None:
    """Count the token positions the model computes: one per new token plus the window refills, with the cache;
    the whole window every step without it."""
    model = peaky_gpt(context=16)
    fed = []
    model.transformer.h[0].register_forward_pre_hook(lambda module, args: fed.append(args[0].shape[1]))
    sample(model, [[SEP]], None, SamplingConfig(max_new_tokens=100))
    cached = sum(fed)
    # 100 steps of one position each (the first is the one-token prompt), but 8 positions at each of the 10
    # restarts (lengths 17, 26, ..., 98: every 9 tokens).
    assert cached == 100 + 10 * 7
    fed.clear()
    sample(model, [[SEP]], None, SamplingConfig(max_new_tokens=100, use_cache=False))
    assert sum(fed) > 10 * 100


# The LSTM's carried state


@pytest.mark.parametrize("top_k", [None, 4])
def test_lstm_stateful_sampling_equals_recomputing_the_prefix(top_k: int | None) -> None:
    model = peaky_lstm()
    prompts = [[SEP], [SEP], [SEP], [3, 4, 5, 6]]
    cached, uncached = (sample(model, prompts, None, SamplingConfig(max_new_tokens=30, top_k=top_k, seed=1,
                                                                     use_cache=use_cache))
                        for use_cache in (True, False))
    assert new_ids(cached) == new_ids(uncached)
    assert len(set(new_ids(cached))) == 4


# Seeds, stopping, batches


@pytest.mark.parametrize("make_model", [peaky_gpt, peaky_lstm], ids=["gpt", "lstm"])
def test_same_seed_same_samples_other_seed_other_samples(make_model) -> None:
    model = make_model()
    prompts = [[SEP]] * 3 + [[2, 3]]
    first, again, other = (sample(model, prompts, None, SamplingConfig(max_new_tokens=20, seed=seed))
                           for seed in (7, 7, 8))
    assert first == again
    assert new_ids(first) != new_ids(other)


def test_certain_separator_stops_at_once() -> None:
    samples = sample(gpt_with_separator_logit(50.0), [[SEP]] * 4, SEP, SamplingConfig(max_new_tokens=10))
    assert samples == [Sample((SEP,), (), truncated=False)] * 4


def test_impossible_separator_truncates_at_the_limit() -> None:
    samples = sample(gpt_with_separator_logit(-50.0), [[SEP]] * 4 + [[5, 6]], SEP, SamplingConfig(max_new_tokens=9))
    assert [s.truncated for s in samples] == [True] * 5
    assert [len(s.new_ids) for s in samples] == [9] * 5
    assert all(SEP not in s.new_ids for s in samples)


@pytest.mark.parametrize("use_cache", [True, False])
def test_rows_stop_at_their_own_separator(use_cache: bool) -> None:
    # p(separator) = 1/13 per token: rows end at different lengths, a third run to the limit.
    model = gpt_with_separator_logit(0.0)
    samples = sample(model, [[SEP]] * 32, SEP, SamplingConfig(max_new_tokens=12, seed=0, use_cache=use_cache))
    assert len(samples) == 32
    for s in samples:
        assert SEP not in s.new_ids
        assert s.truncated == (len(s.new_ids) == 12)
    lengths = {len(s.new_ids) for s in samples}
    assert len(lengths) > 3 and 12 in lengths and min(lengths) < 3


def test_results_keep_the_prompts_order_across_groups_and_chunks() -> None:
    model = peaky_gpt()
    prompts = [[SEP], [4, 5], [SEP], [SEP, 7, 8, 9], [6, 6], [SEP]]
    config = SamplingConfig(max_new_tokens=5, batch_size=2)
    samples = sample(model, prompts, None, config)
    assert [s.prompt_ids for s in samples] == [tuple(p) for p in prompts]
    assert all(len(s.new_ids) == 5 for s in samples)
    assert samples == sample(model, prompts, None, config)
    # A prompt alone in its batch gets the same tokens as through the model step by step with the same draws.
    [alone] = sample(model, [[SEP, 7, 8, 9]], None, SamplingConfig(max_new_tokens=5, seed=11))
    generator = torch.Generator().manual_seed(11)
    tokens = [SEP, 7, 8, 9]
    with torch.no_grad():
        for _ in range(5):
            probs = torch.softmax(model(torch.tensor([tokens])).logits[:, -1], dim=-1)
            tokens.append(torch.multinomial(probs, 1, generator=generator).item())
    assert alone.new_ids == tuple(tokens[4:])


# Lead-ins


@pytest.mark.parametrize("make_model", [peaky_gpt, peaky_lstm], ids=["gpt", "lstm"])
def test_lead_ins_are_the_end_of_a_tune_the_model_wrote(make_model) -> None:
    model = make_model()
    config = SamplingConfig(max_new_tokens=30, seed=4)
    contexts, drawn = lead_ins(model, 6, SEP, config, keep=5)
    # The same tunes drawn directly with the lead-ins' seed: each context is the last 5 tokens of
    # [separator] + tune + [separator], closed with a separator even where the tune hit the limit.
    tunes = sample(model, [[SEP]] * 6, SEP, SamplingConfig(max_new_tokens=30, seed=5))
    assert contexts == [((SEP,) + t.new_ids + (SEP,))[-5:] for t in tunes]
    assert drawn == sum(len(t.new_ids) + (not t.truncated) for t in tunes)
    assert all(c[-1] == SEP and len(c) <= 5 for c in contexts)
    assert any(len(t.new_ids) >= 4 for t in tunes), "the check above needs tunes longer than the kept tokens"
    assert lead_ins(model, 6, SEP, config, keep=5) == (contexts, drawn)


def test_a_lead_in_that_reaches_the_limit_is_closed_with_a_separator() -> None:
    contexts, drawn = lead_ins(gpt_with_separator_logit(-50.0), 3, SEP, SamplingConfig(max_new_tokens=7), keep=4)
    assert drawn == 21
    assert all(len(c) == 4 and c[-1] == SEP and SEP not in c[:-1] for c in contexts)


def test_a_tune_shorter_than_the_lead_in_keeps_its_opening_separator() -> None:
    contexts, drawn = lead_ins(gpt_with_separator_logit(50.0), 2, SEP, SamplingConfig(max_new_tokens=7), keep=8)
    assert contexts == [(SEP, SEP)] * 2 and drawn == 2


@pytest.mark.parametrize("keep", [0, 1, True, 2.5])
def test_a_lead_in_keeps_at_least_two_tokens(keep) -> None:
    with pytest.raises(ValueError, match="at least 2 tokens"):
        lead_ins(peaky_gpt(), 1, SEP, SamplingConfig(), keep=keep)


def test_sampling_restores_training_mode() -> None:
    model = peaky_gpt().train()
    sample(model, [[SEP]], SEP, SamplingConfig(max_new_tokens=3))
    assert model.training


# Errors a user can cause


@pytest.mark.parametrize("fields, match", [
    ({"temperature": 0.0}, "temperature must be a number above 0; got 0.0"),
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"top_k": 0}, "top_k must be an integer of at least 1; got 0"),
    ({"top_k": 2.5}, "top_k"),
    ({"max_new_tokens": 0}, "max_new_tokens must be an integer of at least 1; got 0"),
    ({"batch_size": 0}, "batch_size"),
])
def test_config_validation(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**fields)


def test_prompt_and_model_validation() -> None:
    model, config = peaky_gpt(), SamplingConfig(max_new_tokens=2)
    with pytest.raises(ValueError, match="at least one token"):
        sample(model, [[SEP], []], SEP, config)
    with pytest.raises(ValueError, match="outside the model's vocabulary of 13"):
        sample(model, [[SEP, 13]], SEP, config)
    with pytest.raises(ValueError, match="stop id 13 is outside"):
        sample(model, [[SEP]], 13, config)
    with pytest.raises(TypeError, match="can only sample from a LanguageModel"):
        sample(torch.nn.Linear(2, 2), [[SEP]], SEP, config)


# The training forward is unchanged


def test_training_forward_gives_the_same_loss_as_before_the_cache() -> None:
    """The losses the GPT gave before the cache was added (tests/test_models.py's second config, dropout 0.1)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, context=32, n_layer=2, n_head=4, n_embd=32, dropout=0.1))
    idx = torch.randint(0, 97, (4, 32))
    targets = torch.randint(0, 97, (4, 32))
    torch.manual_seed(1)
    assert model(idx, targets).loss.item() == pytest.approx(4.568340301513672, rel=1e-6)
    model.eval()
    assert model(idx, targets).loss.item() == pytest.approx(4.564716339111328, rel=1e-6)
