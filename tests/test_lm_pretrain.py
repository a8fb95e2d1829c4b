"""Tiny base models: trained on the tasks' reference solutions, saved with save_pretrained, cached
by the hash of their settings and of the tasks' settings."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_PRETRAIN
from rlvrlab.lm.pretrain import PretrainConfig, model_dir, pretrain
from rlvrlab.lm.tasks import make_task
from rlvrlab.lm.trainer import load_model


def test_saved_model_loads_as_a_hugging_face_causal_lm(tiny_base_model):
    model, tok = load_model(tiny_base_model)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    for name in ("add", "arith", "countdown"):  # every character of every task is a token of its own
        task = make_task(name)
        p = task.sample(1, seed=0)[0]
        text = p.prompt + task.solution(p)
        ids = tok(text)["input_ids"]
        assert len(ids) == len(text) and tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_record_is_consistent_with_itself(tiny_base_model):
    record = json.loads((tiny_base_model / "rlvrlab_pretrain.json").read_text())
    cfg = PretrainConfig(**TINY_PRETRAIN)
    assert record["settings"]["hidden"] == cfg.hidden and record["steps"] <= cfg.max_steps
    for task, rates in record["per_prompt_success"].items():
        assert len(rates) == cfg.eval_prompts
        assert record["held_out_success"][task] == pytest.approx(sum(rates) / len(rates))
        assert record["fraction_of_prompts_strictly_between_0_and_1"][task] == pytest.approx(
            sum(0 < r < 1 for r in rates) / len(rates))
        assert all(r in (0, 0.5, 1) for r in rates)  # eval_samples = 2


def test_same_settings_are_read_from_the_cache(tiny_base_model):
    root = tiny_base_model.parent
    calls = []
    again = pretrain(PretrainConfig(**TINY_PRETRAIN), root, on_step=calls.append)
    assert again == tiny_base_model and calls == []
    assert model_dir(PretrainConfig(**{**TINY_PRETRAIN, "seed": 1}), root) != tiny_base_model


def test_the_cache_key_follows_the_tasks_settings(monkeypatch):
    import rlvrlab.lm.pretrain as pretrain_module
    from rlvrlab.lm.tasks import AdditionTask

    before = PretrainConfig().key()
    # a changed task default must retrain
    real = pretrain_module.load_task
    monkeypatch.setattr(pretrain_module, "load_task", lambda spec, **kw: AdditionTask(max_digits=5) if spec == "add" else real(spec, **kw))
    assert PretrainConfig().key() != before
    monkeypatch.undo()
    # a task option (a longer worked solution) names another model
    assert PretrainConfig(tasks=("add:repeat=2",), mix=(1.0,)).key() != PretrainConfig(tasks=("add",), mix=(1.0,)).key()


def test_pretraining_learns_the_reference_solutions(tiny_base_model):
    # the trained model gives the reference solution a higher likelihood than a fresh one of the same shape
    from transformers import AutoConfig, AutoModelForCausalLM

    model, tok = load_model(tiny_base_model)
    torch.manual_seed(0)
    fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_base_model))
    task = make_task("add")
    p = task.sample(1, seed=123)[0]
    ids = torch.tensor([tok(p.prompt + task.solution(p))["input_ids"] + [tok.eos_token_id]])
    n = len(tok(p.prompt)["input_ids"])
    labels = ids.clone()
    labels[:, :n] = -100
    with torch.no_grad():
        assert model(input_ids=ids, labels=labels).loss < 0.9 * fresh(input_ids=ids, labels=labels).loss  # 2.8 vs 3.2 nats


@pytest.mark.parametrize("kw, message", [
    (dict(mix=(1.0, 2.0)), r"^mix: got \(1.0, 2.0\); allowed: 3 positive numbers, one per task"),
    (dict(tasks=("add", "sudoku")), r"sudoku"),
    (dict(hidden=30, heads=4), r"^hidden/heads/kv_heads: got"),
    (dict(target_success=1.0), r"^target_success: got 1.0; allowed: a number in \(0, 1\)"),
])
def test_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        PretrainConfig(**kw)
