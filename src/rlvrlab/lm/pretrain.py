"""Tiny base models, trained here: a small Qwen2 from a `transformers` config, supervised on task data.

The paper starts RLVR from a pretrained math model whose success rate is moderate and varies from
question to question; nothing can be downloaded here, so we make such a model. A character
tokenizer over the tasks' alphabets and a Qwen2ForCausalLM of a few hundred thousand parameters
are trained on prompt + reference solution (loss on the solution tokens only, Adam, cosine decay)
and stopped early, as soon as the mean held-out success rate, sampled at temperature 1, reaches
`target_success`: a base model that is neither hopeless nor solved, with per-prompt success
spread over (0, 1), as RLVR needs.

Models are saved with `save_pretrained` (model, tokenizer, and `rlvrlab_pretrain.json` with the
settings and the held-out success per task) under a directory named by the hash of the settings,
so the same settings train once: `$RLVRLAB_CACHE` or ~/.cache/rlvrlab/models/<hash>.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from rlvrlab import _checks
from rlvrlab.lm.sampling import completion_texts, sample
from rlvrlab.lm.tasks import load_task
from rlvrlab.lm.tokenizer import char_tokenizer

__all__ = ["PretrainConfig", "cache_root", "evaluate_success", "model_dir", "pretrain"]


def _doc(default: Any, help: str) -> Any:
    """A field with its one-line doc in ``metadata["help"]`` (printed by ``rlvrlab lm pretrain --help-settings``)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of a tiny base model (defaults train in about a minute on 2 CPU cores); each field's
    doc is in its ``metadata["help"]`` (``rlvrlab lm pretrain --help-settings`` prints them)."""

    tasks: tuple[str, ...] = _doc(("add", "arith", "countdown"), "Tasks of rlvrlab.lm.tasks the model is trained on "
                                  "(their alphabets make the tokenizer).")
    mix: tuple[float, ...] = _doc((1.0, 2.0, 2.0), "Relative share of each task's examples, one per task (add is learned fastest).")
    hidden: int = _doc(96, "Hidden size of the Qwen2 model; divisible by heads.")
    layers: int = _doc(3, "Transformer layers.")
    heads: int = _doc(4, "Attention heads; divisible by kv_heads.")
    kv_heads: int = _doc(2, "Key-value heads (grouped-query attention).")
    intermediate: int = _doc(256, "Size of the MLP's hidden layer.")
    max_steps: int = _doc(3000, "Most Adam steps; training stops earlier once target_success is reached.")
    batch: int = _doc(64, "Examples (prompt + reference solution) per step.")
    lr: float = _doc(3e-3, "Adam's peak learning rate (cosine decay over max_steps).")
    target_success: float = _doc(0.35, "Stop once the mean held-out success rate reaches this, in (0, 1): "
                                       "a base model neither hopeless nor solved, as RLVR needs.")
    eval_every: int = _doc(100, "Held-out success is measured every this many steps.")
    eval_prompts: int = _doc(48, "Held-out prompts per task.")
    eval_samples: int = _doc(4, "Completions per held-out prompt, sampled at temperature 1.")
    max_new_tokens: int = _doc(48, "Longest completion in the evaluation, in tokens.")
    seed: int = _doc(0, "Seed of the weights, the data and the evaluation draws.")

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "kv_heads", "intermediate", "max_steps", "batch", "eval_every",
                     "eval_prompts", "eval_samples", "max_new_tokens"):
            _checks.integer(name, getattr(self, name))
        if self.hidden % self.heads or self.heads % self.kv_heads:
            _checks.fail("hidden/heads/kv_heads", (self.hidden, self.heads, self.kv_heads),
                         "hidden divisible by heads, heads divisible by kv_heads")
        if not 0 < self.target_success < 1:
            _checks.fail("target_success", self.target_success, "a number in (0, 1)")
        for t in self.tasks:
            load_task(t, name="tasks")  # unknown names and options fail here, listing the valid ones
        if len(self.mix) != len(self.tasks) or not all(isinstance(m, (int, float)) and m > 0 for m in self.mix):
            _checks.fail("mix", self.mix, f"{len(self.tasks)} positive numbers, one per task of {self.tasks}")

    def key(self) -> str:
        """Hash of the settings and of the tasks' own settings (a changed task default retrains)."""
        spec = {"settings": dataclasses.asdict(self), "tasks": [repr(load_task(t)) for t in self.tasks]}
        return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def cache_root() -> Path:
    return Path(os.environ.get("RLVRLAB_CACHE", Path.home() / ".cache" / "rlvrlab")) / "models"


def model_dir(config: PretrainConfig, root: Path | None = None) -> Path:
    return (root or cache_root()) / f"tiny-qwen2-{config.key()}"


def _batches(examples: list[tuple[list[int], list[int]]], batch: int, rng: random.Random, pad_id: int):
    """Right-padded (ids, attention, labels) with labels -100 on prompt and padding."""
    while True:
        rng.shuffle(examples)
        for i in range(0, len(examples) - batch + 1, batch):
            chunk = examples[i : i + batch]
            L = max(len(p) + len(c) for p, c in chunk)
            ids = torch.full((batch, L), pad_id, dtype=torch.long)
            labels = torch.full((batch, L), -100, dtype=torch.long)
            attn = torch.zeros((batch, L), dtype=torch.long)
            for j, (p, c) in enumerate(chunk):
                seq = p + c
                ids[j, : len(seq)] = torch.tensor(seq)
                labels[j, len(p) : len(seq)] = torch.tensor(c)
                attn[j, : len(seq)] = 1
            yield ids, attn, labels


def evaluate_success(model, tokenizer, problems_by_task: dict[str, list], tasks: dict, *, samples: int,
                     max_new_tokens: int, seed: int) -> dict[str, list[float]]:
    """Per task, the sampled success rate of each problem (temperature 1, ``samples`` draws)."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    out = {}
    for name, problems in problems_by_task.items():
        prompts = [tokenizer(p.prompt)["input_ids"] for p in problems]
        roll = sample(model, prompts, G=samples, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                      pad_id=tokenizer.pad_token_id, generator=gen)
        ok = [tasks[name].verify(t, problems[i // samples]) for i, t in enumerate(completion_texts(tokenizer, roll))]
        out[name] = [sum(ok[i * samples:(i + 1) * samples]) / samples for i in range(len(problems))]
    model.train()
    return out


def pretrain(config: PretrainConfig, root: Path | None = None, *, on_step: Callable[[int], None] | None = None) -> Path:
    """Train (or find in the cache) the tiny base model for ``config``; returns its directory."""
    final = model_dir(config, root)
    if (final / "rlvrlab_pretrain.json").exists():
        return final
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tasks = {name: load_task(name) for name in config.tasks}
    tokenizer = char_tokenizer("".join("".join(t.alphabet) for t in tasks.values()))
    evals = {name: t.sample(config.eval_prompts, seed=10_000 + config.seed) for name, t in tasks.items()}
    held_out = {p.prompt for ps in evals.values() for p in ps}
    examples = []
    for i, (name, task) in enumerate(tasks.items()):
        n = int(round(200 * config.batch * config.mix[i] / max(config.mix)))
        for p in task.sample(n, seed=config.seed * 100 + i):
            if p.prompt not in held_out:
                examples.append((tokenizer(p.prompt)["input_ids"], tokenizer(task.solution(p))["input_ids"] + [tokenizer.eos_token_id]))
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=config.hidden, intermediate_size=config.intermediate,
                      num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.kv_heads,
                      max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, config.max_steps) / config.max_steps)))
    batches = _batches(examples, config.batch, rng, tokenizer.pad_token_id)
    history = []
    model.train()
    for step in range(1, config.max_steps + 1):
        ids, attn, labels = next(batches)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(1)
        if step % config.eval_every == 0 or step == config.max_steps:
            success = evaluate_success(model, tokenizer, evals, tasks, samples=config.eval_samples,
                                       max_new_tokens=config.max_new_tokens, seed=config.seed)
            mean = sum(sum(v) / len(v) for v in success.values()) / len(success)
            history.append({"step": step, "loss": float(loss.detach()), "success": {k: sum(v) / len(v) for k, v in success.items()}})
            if mean >= config.target_success:
                break
    record = {"settings": dataclasses.asdict(config), "steps": step, "history": history,
              "held_out_success": history[-1]["success"],
              "per_prompt_success": {k: v for k, v in success.items()},
              "fraction_of_prompts_strictly_between_0_and_1": {k: sum(0 < x < 1 for x in v) / len(v) for k, v in success.items()}}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "rlvrlab_pretrain.json").write_text(json.dumps(record, indent=2))
    if final.exists():  # another process finished first: keep its model
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, final)
    return final
