"""Settings of a GRPO run of rlvrlab's trainer (rlvrlab.lm.trainer.GRPOTrainer, `rlvrlab lm train`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rlvrlab import _checks
from rlvrlab.lm.diagnostics import GapAdaptiveRate
from rlvrlab.lm.tasks import TASKS, check_task_spec
from rlvrlab.updates import PRESETS, get_preset
from rlvrlab.updates.advantages import ADVANTAGES

__all__ = ["DEFAULT_SETTINGS", "TrainConfig", "nondefault_settings"]


def _doc(default: Any, help: str) -> Any:
    """A field with its one-line doc in ``metadata["help"]`` (printed by ``rlvrlab lm train --help-settings``)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a GRPO run (defaults: a few minutes on a laptop CPU with the tiny base model).

    Each field's doc is in its ``metadata["help"]``; ``rlvrlab lm train --help-settings`` prints them
    all, with types and defaults (the keys of ``--set key=value``).
    """

    model: str = _doc("", "Directory of a Hugging Face causal LM and its tokenizer (rlvrlab lm pretrain makes one).")
    task: str = _doc("add", f"A task of rlvrlab.lm.tasks ({', '.join(TASKS)}), or a .jsonl / .parquet question-answer file.")
    preset: str = _doc("grpo", f"Update rule, a paper's advantage x surrogate x aggregation: {', '.join(PRESETS)}.")
    advantage: str = _doc("", "Override the preset's advantage (" + ", ".join(a for a in ADVANTAGES if a != "exact")
                          + "; e.g. reinforce with none); empty: the preset's own.")
    alpha: float | None = _doc(None, "Override the preset's token-reweighting strength (dapo-lowprob, -dominate, -ppl); "
                                     "none: the preset's own.")
    prompts: int = _doc(400, "Problems drawn from the task; a share `holdout` of them is held out for evaluation.")
    batch_size: int = _doc(64, "Completions per step: batch_size / group prompts, group completions each.")
    group: int = _doc(8, "Completions per prompt (G); GRPO's advantage compares them, so >= 2.")
    max_new_tokens: int = _doc(48, "Longest completion, in tokens (sampling stops there or at EOS).")
    steps: int = _doc(100, "Optimizer steps (each on one batch).")
    lr: float = _doc(1e-3, "The optimizer's learning rate (the initial one under cosine and gap-adaptive).")
    optimizer: Literal["adam", "sgd"] = _doc(
        "adam", "adam (what practice uses: each coordinate divided by its running gradient scale, so a rescaled loss takes "
                "the same steps), or sgd (plain gradient steps, θ ← θ − lr·g after clipping: the paper's η·w, where a length "
                "normalization changes the step).")
    schedule: Literal["constant", "cosine", "gap-adaptive", "probe"] = _doc(
        "constant", "Learning-rate schedule; gap-adaptive follows adaptive_fraction of the measured critical rate; "
                    "probe follows the recommended rate of rlvrlab.lm.probe, scanned before the first step (and every probe_every).")
    adaptive_fraction: float = _doc(0.5, "gap-adaptive: the next rate is this fraction of the smoothed critical rate, in (0, 1].")
    adaptive_smoothing: float = _doc(0.8, "gap-adaptive: weight on the past in the running mean of the critical rate, in [0, 1).")
    adaptive_growth: float = _doc(1.1, "gap-adaptive: factor the rate grows by while no critical rate is in sight, in [1, 2].")
    adaptive_ratchet: bool = _doc(False, "gap-adaptive: aim at the lowest running critical rate seen so far (after its warm-up), "
                                         "not the current one: the critical rate falls as J rises (eq. 17-18).")
    adaptive_start: Literal["lr", "probe"] = _doc(
        "lr", "gap-adaptive: where the rule starts. lr: at lr, its running critical rate unknown (it grows the rate by "
              "adaptive_growth until a first estimate); probe: the probe scans before the first step (probe_steps, "
              "probe_fresh, as schedule probe), its critical rate starts the running one, and no step is above "
              "adaptive_fraction of it (a start far above the threshold damages the model before any in-run estimate).")
    probe_every: int = _doc(0, "probe: scan again every this many steps (0: only before the first step).")
    probe_rescan: str = _doc("any", "probe: what a re-scan may do to the aim: any (follow it) or lower (only lower it: the "
                                    "critical rate falls as the success rate rises, eq. 17-18).")
    probe_steps: int = _doc(4, "probe: the scan's steps at a tiny rate, from 1 to 10 (rlvrlab.lm.probe).")
    probe_fresh: int = _doc(4, "probe: completions per prompt and scanned rate (>= 2).")
    lr_min: float = _doc(1e-6, "gap-adaptive: the lowest rate the rule may set.")
    lr_max: float = _doc(1e-1, "gap-adaptive: the highest rate the rule may set.")
    epochs: int = _doc(1, "Optimizer passes over each batch (PPO's inner steps; > 1 makes the clipped surrogate bite).")
    max_grad_norm: float = _doc(1.0, "Gradient clipping: the largest global gradient norm of a step.")
    temperature: float = _doc(1.0, "Sampling temperature of the training completions.")
    holdout: float = _doc(0.2, "Share of the problems held out for evaluation, in (0, 1).")
    eval_every: int = _doc(10, "Held-out accuracy every this many steps (and at the last).")
    eval_samples: int = _doc(5, "Completions per held-out prompt in an evaluation.")
    diagnostics: bool = _doc(True, "Gradient-Gap diagnostics (gap/*) from one extra forward pass per step; "
                                   "schedule gap-adaptive and fresh_samples need them.")
    diagnostics_unmixed: float = _doc(1.0, "Share of the groups without reward variance (all right or all wrong) that the "
                                           "post-step pass measures, at least 2 of each kind; groups with both outcomes, and "
                                           "groups of one completion repeated, are always measured. 1: every group (the exact "
                                           "full pass); less: a stratified sample whose gap/* values are unbiased for the full "
                                           "pass's, their standard errors including the sampling's "
                                           "(rlvrlab.lm.diagnostics.measured_groups). For monitoring: schedule gap-adaptive read "
                                           "it worse (arith, 3 seeds: higher rates, lower accuracy).")
    fresh_samples: int = _doc(0, "Completions per prompt drawn and never trained on, for unbiased gap_fresh/* diagnostics; "
                                 "0: off, else >= 2.")
    prompt_table: bool = _doc(False, "Also write prompts.parquet: the diagnostics per prompt and step (J_q, Δμ_q·η, var±, "
                                     "critical-step ratio), for each set of completions measured.")
    kl_reference: bool = _doc(False, "Log kl, the KL of the policy to the initial model (TRL's k3 estimator), from a frozen copy "
                                     "of the initial model: its memory and one more forward per step.")
    checkpoint_every: int = _doc(25, "Checkpoint (model, optimizer, random states, metrics) every this many steps, to resume from.")
    tensorboard: bool = _doc(False, "Also log every metric to OUT/tensorboard.")
    device: str = _doc("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps.")
    seed: int = _doc(0, "Seed of the problems drawn, the split and every sampling generator.")

    def __post_init__(self) -> None:
        for name in ("prompts", "batch_size", "group", "max_new_tokens", "steps", "epochs", "eval_every", "eval_samples",
                     "checkpoint_every"):
            _checks.integer(name, getattr(self, name))
        if self.group < 2:
            _checks.fail("group", self.group, "an integer >= 2 (GRPO compares completions within a group)")
        if self.batch_size % self.group:
            _checks.fail("batch_size", self.batch_size,
                         f"a multiple of group = {self.group} (batch_size / group prompts of group completions each)")
        check_task_spec(self.task)
        _checks.choose("preset", self.preset, PRESETS)
        if self.alpha is not None:
            get_preset(self.preset, alpha=self.alpha)  # the preset's own checks of alpha
        if self.advantage:
            _checks.choose("advantage", self.advantage, [a for a in ADVANTAGES if a != "exact"])
        elif PRESETS[self.preset].advantage == "exact":
            sampled = [n for n, p in PRESETS.items() if p.advantage != "exact"]
            _checks.fail("preset", self.preset, f"{', '.join(sampled)}, or {self.preset} with an advantage set "
                         "(its exact advantage r - J needs the exact J of a simulator; e.g. advantage=none)")
        _checks.choose("schedule", self.schedule, ("constant", "cosine", "gap-adaptive", "probe"))
        _checks.choose("optimizer", self.optimizer, ("adam", "sgd"))
        if isinstance(self.probe_every, bool) or not isinstance(self.probe_every, int) or self.probe_every < 0:
            _checks.fail("probe_every", self.probe_every, "an integer >= 0 (0: scan only before the first step)")
        _checks.choose("probe_rescan", self.probe_rescan, ("any", "lower"))
        _checks.choose("adaptive_start", self.adaptive_start, ("lr", "probe"))
        if self.adaptive_start == "probe" and self.schedule != "gap-adaptive":
            _checks.fail("adaptive_start", self.adaptive_start, f"lr with schedule {self.schedule!r} (probe starts the gap-adaptive "
                         "rule; schedule 'probe' scans by itself)")
        from rlvrlab.lm.probe import check_probe

        check_probe(self.probe_steps, self.probe_fresh, 1e-5, 1e-5, 1e-1, 25, prefix="probe_")
        for name in ("lr", "lr_min", "lr_max", "temperature", "max_grad_norm"):
            _checks.positive(name, getattr(self, name))
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:") and self.device[5:].isdigit()):
            _checks.fail("device", self.device, "auto, cpu, cuda, cuda:N or mps")
        if not 0 < self.holdout < 1:
            _checks.fail("holdout", self.holdout, "a fraction in (0, 1)")
        GapAdaptiveRate.check(self.adaptive_fraction, self.adaptive_smoothing, self.adaptive_growth, prefix="adaptive_")
        if not (isinstance(self.fresh_samples, int) and self.fresh_samples >= 0 and self.fresh_samples != 1):
            _checks.fail("fresh_samples", self.fresh_samples, "0 (off) or an integer >= 2")
        if not (isinstance(self.diagnostics_unmixed, (int, float)) and 0 < self.diagnostics_unmixed <= 1):
            _checks.fail("diagnostics_unmixed", self.diagnostics_unmixed, "a number in (0, 1] (1: every group)")
        if self.fresh_samples and not self.diagnostics:
            _checks.fail("diagnostics", self.diagnostics, "True when fresh_samples > 0")
        if self.prompt_table and not self.diagnostics:
            _checks.fail("diagnostics", self.diagnostics, "True when prompt_table is on (the table holds the diagnostics)")
        if self.schedule == "gap-adaptive" and not self.diagnostics:
            _checks.fail("diagnostics", self.diagnostics, "True with schedule 'gap-adaptive' (the rule reads the diagnostics)")

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.group

    def identity(self) -> dict[str, Any]:
        """The settings that differ from the defaults, as JSON holds them: what names a run. Two
        configs with equal identities are the same run, whatever settings later versions add (a
        run made before a setting existed ran with what is now its default)."""
        return nondefault_settings(dataclasses.asdict(self))


DEFAULT_SETTINGS: dict[str, Any] = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(TrainConfig)}))
"""TrainConfig's defaults as JSON holds them (a config.json's "settings")."""


def nondefault_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` (a TrainConfig's, e.g. read back from a run's config.json) without those at
    their default, as JSON holds them; a key TrainConfig does not know is kept."""
    plain = json.loads(json.dumps(dict(settings)))
    return {k: v for k, v in plain.items() if k not in DEFAULT_SETTINGS or v != DEFAULT_SETTINGS[k]}


