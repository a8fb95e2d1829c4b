"""Settings of a GRPO run of rlvrlab's trainer (rlvrlab.lm.trainer.GRPOTrainer, `rlvrlab lm train`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlvrlab import _checks
from rlvrlab.lm.diagnostics import GapAdaptiveRate
from rlvrlab.updates import PRESETS, get_preset
from rlvrlab.updates.advantages import ADVANTAGES

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a GRPO run (defaults: a few minutes on a laptop CPU with the tiny base model)."""

    model: str = ""  # a directory with a Hugging Face causal LM and its tokenizer
    task: str = "add"  # a task of rlvrlab.lm.tasks, or a .jsonl / .parquet question-answer file
    preset: str = "grpo"
    advantage: str = ""  # override the preset's advantage (e.g. reinforce with "none"); empty: the preset's
    alpha: float | None = None  # override the preset's token-reweighting strength (dapo-lowprob, ...); None: the preset's
    prompts: int = 400  # problems drawn from the task (held-out share: holdout)
    batch_size: int = 64  # completions per step: batch_size / group prompts, group completions each
    group: int = 8
    max_new_tokens: int = 48
    steps: int = 100
    lr: float = 1e-3
    schedule: Literal["constant", "cosine", "gap-adaptive"] = "constant"
    adaptive_fraction: float = 0.5
    adaptive_smoothing: float = 0.8
    adaptive_growth: float = 1.1
    lr_min: float = 1e-6
    lr_max: float = 1e-1
    epochs: int = 1
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    holdout: float = 0.2
    eval_every: int = 10
    eval_samples: int = 5
    diagnostics: bool = True
    fresh_samples: int = 0  # completions per prompt for unbiased (never trained on) diagnostics; 0: off
    checkpoint_every: int = 25
    tensorboard: bool = False
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("prompts", "batch_size", "group", "max_new_tokens", "steps", "epochs", "eval_every", "eval_samples",
                     "checkpoint_every"):
            _checks.integer(name, getattr(self, name))
        if self.group < 2:
            _checks.fail("group", self.group, "an integer >= 2 (GRPO compares completions within a group)")
        if self.batch_size % self.group:
            _checks.fail("batch_size", self.batch_size,
                         f"a multiple of group = {self.group} (batch_size / group prompts of group completions each)")
        _checks.choose("preset", self.preset, PRESETS)
        if self.alpha is not None:
            get_preset(self.preset, alpha=self.alpha)  # the preset's own checks of alpha
        if self.advantage:
            _checks.choose("advantage", self.advantage, [a for a in ADVANTAGES if a != "exact"])
        elif PRESETS[self.preset].advantage == "exact":
            sampled = [n for n, p in PRESETS.items() if p.advantage != "exact"]
            _checks.fail("preset", self.preset, f"{', '.join(sampled)}, or {self.preset} with an advantage set "
                         "(its exact advantage r - J needs the exact J of a simulator; e.g. advantage=none)")
        _checks.choose("schedule", self.schedule, ("constant", "cosine", "gap-adaptive"))
        for name in ("lr", "lr_min", "lr_max", "temperature", "max_grad_norm"):
            _checks.positive(name, getattr(self, name))
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:") and self.device[5:].isdigit()):
            _checks.fail("device", self.device, "auto, cpu, cuda, cuda:N or mps")
        if not 0 < self.holdout < 1:
            _checks.fail("holdout", self.holdout, "a fraction in (0, 1)")
        GapAdaptiveRate.check(self.adaptive_fraction, self.adaptive_smoothing, self.adaptive_growth, prefix="adaptive_")
        if not (isinstance(self.fresh_samples, int) and self.fresh_samples >= 0 and self.fresh_samples != 1):
            _checks.fail("fresh_samples", self.fresh_samples, "0 (off) or an integer >= 2")
        if self.fresh_samples and not self.diagnostics:
            _checks.fail("diagnostics", self.diagnostics, "True when fresh_samples > 0")
        if self.schedule == "gap-adaptive" and not self.diagnostics:
            _checks.fail("diagnostics", self.diagnostics, "True with schedule 'gap-adaptive' (the rule reads the diagnostics)")

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.group


