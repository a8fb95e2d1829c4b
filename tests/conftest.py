"""Shared test settings: one thread (tests run in parallel under xdist), a modest, reproducible
Hypothesis profile, and a fixture for modules that want float64 as the default dtype."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

settings.register_profile(
    "rlvrlab",
    max_examples=30,
    deadline=None,
    derandomize=True,  # fixed examples: a failure reproduces on every run
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("rlvrlab")


@pytest.fixture
def float64():
    """float64 as the default dtype for one test, restored afterwards (the library's users keep
    float32 as their default, so tests that create tensors implicitly opt in explicitly)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


TINY_PRETRAIN = dict(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, max_steps=30, batch=16, eval_every=15,
                     eval_prompts=4, eval_samples=2, max_new_tokens=24)


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory):
    """A one-layer Qwen2 pretrained for 30 steps by rlvrlab.lm.pretrain (a few seconds), for tests
    that need a real model directory: weights, tokenizer and rlvrlab_pretrain.json."""
    from rlvrlab.lm.pretrain import PretrainConfig, pretrain

    return pretrain(PretrainConfig(**TINY_PRETRAIN), tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random one-layer Qwen2 (hidden 32) on the tasks' character tokenizer: its completions are noise, so
    tests that need reward variance use a reward of their own."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlvrlab.lm.tasks import make_task
    from rlvrlab.lm.tokenizer import char_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    tok = char_tokenizer("".join("".join(make_task(t).alphabet) for t in ("add", "arith", "countdown")))
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # a larger (tied) EOS embedding makes completions end at different lengths
        model.model.embed_tokens.weight[tok.eos_token_id] *= 3.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
