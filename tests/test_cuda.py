"""The same library on a CUDA GPU: training in each precision, checkpoints that load on a CPU, sampling.

Skipped where torch sees no GPU (CI, laptops). Imports only torch, numpy and the library's models, training loop and
sampling, so it runs on a bare GPU machine: `python -m pytest tests/test_cuda.py`.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from abcmusic.generate.sampling import SamplingConfig, sample
from abcmusic.models.registry import build_model
from abcmusic.train.loop import TrainConfig, train
from abcmusic.train.precision import tf32_mode

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VOCAB = 12
CUDA = torch.device("cuda")
MODELS = {
    "gpt": {"vocab_size": VOCAB, "context": 32, "n_layer": 2, "n_head": 2, "n_embd": 32},
    "lstm": {"vocab_size": VOCAB, "n_layer": 2, "n_embd": 32, "hidden": 32},
}


def pattern_stream(length: int = 20000) -> np.ndarray:
    return (np.arange(length) % 7 + 2).astype(np.uint16)


def config(precision: str, lr: float = 3e-3) -> TrainConfig:
    return TrainConfig(tokens=32 * 16 * 150, context=32, batch_size=16, lr=lr, eval_points=3, checkpoints=2,
                       eval_batches=2, precision=precision)


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_training_on_the_gpu_learns_in_every_precision(arch: str, precision: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, MODELS[arch]).to(CUDA)
    val_losses = []
    # The LSTM learns the pattern more slowly: at 3e-3 it ends at 1.88 on a CPU and on a GPU alike.
    final = train(model, pattern_stream(), pattern_stream(), config(precision, lr=1e-2 if arch == "lstm" else 3e-3),
                  lambda metrics, state: val_losses.append(metrics["val_loss"]) if "val_loss" in metrics else None,
                  device=CUDA)
    assert np.isfinite(final["val_loss"]) and final["val_loss"] < 0.3 * np.log(VOCAB) < val_losses[0]
    assert final["tokens_per_s"] > 0


@pytest.mark.parametrize("arch, precision", [("gpt", "bf16"), ("lstm", "fp32")])
def test_compiled_training_on_the_gpu_learns(arch: str, precision: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, MODELS[arch]).to(CUDA)
    run = dataclasses.replace(config(precision, lr=1e-2 if arch == "lstm" else 3e-3), compile=True)
    final = train(model, pattern_stream(), pattern_stream(), run, lambda metrics, state: None, device=CUDA)
    assert final["val_loss"] < 0.3 * np.log(VOCAB)


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_a_gpu_checkpoint_loads_on_a_cpu_with_weights_only(arch: str) -> None:
    """The checkpoint a GPU trial saves is what generate.py loads, possibly on a machine with no GPU."""
    torch.manual_seed(0)
    model = build_model(arch, MODELS[arch]).to(CUDA)
    states = []
    train(model, pattern_stream(), pattern_stream(), config("bf16"),
          lambda metrics, state: states.append(buffer_of(state)) if state else None, device=CUDA)
    restored = torch.load(io.BytesIO(states[-1]), map_location="cpu", weights_only=True)
    cpu_model = build_model(arch, MODELS[arch])
    cpu_model.load_state_dict(restored["model"])
    x = torch.from_numpy(pattern_stream(33)[None, :-1].astype(np.int64))
    model.eval()
    cpu_model.eval()
    with torch.no_grad():
        gpu_logits = model(x.to(CUDA)).logits.cpu()
        cpu_logits = cpu_model(x).logits
    assert torch.allclose(gpu_logits, cpu_logits, atol=1e-3, rtol=1e-3)


def buffer_of(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_sampling_on_the_gpu_is_seeded_and_the_cache_changes_nothing(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, MODELS[arch])
    with torch.no_grad():
        for param in model.parameters():  # a peaked distribution: a wrong cache or state changes the tokens
            param.normal_(0.0, 0.5)
    runs = {}
    for use_cache, seed in ((True, 3), (False, 3), (True, 4)):
        settings = SamplingConfig(max_new_tokens=80, seed=seed, use_cache=use_cache)
        runs[use_cache, seed] = [s.new_ids for s in sample(model, [[0]] * 4, None, settings, device=CUDA)]
    assert next(model.parameters()).device.type == "cuda"
    assert runs[True, 3] == runs[False, 3] != runs[True, 4]
    assert all(len(ids) == 80 for ids in runs[True, 3])


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_fp32_on_the_gpu_is_ieee_fp32_and_tf32_is_not(arch: str) -> None:
    """Under fp32 a GPU forward matches the CPU's closely; under tf32 (10-bit mantissa) visibly less so. PyTorch's
    own default would run the LSTM's cuDNN kernels in TF32 even in fp32."""
    torch.manual_seed(0)
    fields = {**MODELS[arch], "n_embd": 256} | ({"hidden": 256} if arch == "lstm" else {"n_head": 4})
    model = build_model(arch, fields).eval()
    x = torch.randint(0, VOCAB, (8, 32))
    with torch.no_grad():
        cpu_logits = model(x).logits
        errors = {}
        for precision in ("fp32", "tf32"):
            with tf32_mode(precision):
                errors[precision] = float((model.to(CUDA)(x.to(CUDA)).logits.cpu() - cpu_logits).abs().max())
            model.cpu()
    assert errors["fp32"] < 1e-4 and errors["tf32"] > 10 * errors["fp32"], errors
