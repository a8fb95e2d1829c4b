"""A lean GRPO trainer for any Hugging Face causal LM, with live Gradient-Gap diagnostics.

Each step: B prompts from the training split, G completions each sampled with a KV cache
(rlvrlab.lm.sampling), rewards from the task's verifier, the preset's loss from
rlvrlab.updates.presets (the one implementation the simulators use: GRPO, Dr. GRPO, DAPO, GSPO,
RLOO, and REINFORCE with a sampled advantage; epochs > 1 for PPO's inner steps), Adam with
gradient clipping (fused where the device has it), and then one
extra forward pass over the batch just trained on for the diagnostics of
rlvrlab.lm.diagnostics (Δμ·η, the realized log-odds change, var±, the critical-step ratio, the
paper's ‖g_GRPO‖ proxy), together with entropy, lengths, clip fraction and the fraction of groups
without reward variance.

The step was computed from those very samples, so the in-sample log-ratios overstate how much the
step moved the policy on responses it did not see: Lemma 3 is exact in expectation only for
samples independent of the step. With `fresh_samples` = n > 0, n more completions per prompt are
drawn from π_old before the step and never trained on; the same diagnostics from them are logged
as `gap_fresh/...` (unbiased, at the cost of sampling n more completions per prompt).

Every `eval_every` steps, held-out accuracy: the mean over `eval_samples` completions of each
held-out prompt (20% of the pool by default). When the steps overshoot (crit_ratio > 1 or a
negative realized log-odds change) or most groups lack reward variance for 3 consecutive steps,
the trainer warns once (`on_warning`, default a GapWarning).

Learning rate: constant, cosine, or gap-adaptive: after each step the estimated ratio of the step
to the second-order critical step gives the critical rate lr/ratio (`gap/lr_crit`); one batch's
estimate is noisy, so its geometric running mean (weight `adaptive_smoothing` on the past) is what
the rule follows: the next rate is `adaptive_fraction` of it, moving at most a factor 2 per step
and kept in [lr_min, lr_max] (rlvrlab.updates' gap-adaptive rule, with the statistics a trainer
without enumeration has). While no threshold is in sight the rate grows by `adaptive_growth`.

Run directory: config.json, metrics.parquet (one row per step, `gap/...`, `loss/...`,
`charts/...`, `eval/...`), checkpoints/latest.pt every `checkpoint_every` steps (model,
optimizer, scheduler, every random state, the metrics so far) and model/ at the end. All
randomness comes from explicit generators whose states are checkpointed, so a run resumed after
a kill ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from rlvrlab import _checks
from rlvrlab.io import atomic_write_json, write_table
from rlvrlab.lm.config import TrainConfig
from rlvrlab.lm.diagnostics import GapAdaptiveRate, step_diagnostics
from rlvrlab.lm.models import load_model, resolve_device
from rlvrlab.lm.tasks import load_task
from rlvrlab.lm.sampling import Rollout, completion_texts, sample, token_logprobs
from rlvrlab.updates import get_preset, policy_loss

__all__ = ["GRPOTrainer", "GapWarning", "RewardError", "TrainConfig", "descendant", "gap_warnings", "load_model"]


class GapWarning(UserWarning):
    """The diagnostics say the run is in trouble (once per kind and run, from GRPOTrainer.train;
    pass ``on_warning`` to the trainer to receive the message instead)."""


def _past_critical(row: dict[str, float]) -> bool:
    """The step overshot: past the second-order critical step, or it lowered the log-odds of success."""
    return row.get("gap/crit_ratio", math.nan) > 1 or row.get("gap/log_odds_change", math.nan) < 0


def gap_warnings(rows: list[dict[str, float]], patience: int = 3) -> dict[str, str]:
    """Warnings the rows so far call for, each once: the steps overshoot (gap/crit_ratio > 1, or a
    negative realized log-odds change) or most groups have no reward variance, for ``patience``
    consecutive steps."""
    out: dict[str, str] = {}
    steps = [r for r in rows if "gap/crit_ratio" in r]
    for i in range(len(steps) - patience + 1):
        window = steps[i : i + patience]
        if "crit" not in out and all(_past_critical(r) for r in window):
            last = window[-1]
            out["crit"] = (f"the step overshot for {patience} consecutive steps (steps {window[0]['step']}-{last['step']}; "
                           f"gap/crit_ratio {last['gap/crit_ratio']:.2f}, gap/log_odds_change "
                           f"{last.get('gap/log_odds_change', math.nan):.3g}): learning rate {last['charts/lr']:.3g} is past the "
                           f"estimated critical step, which puts the critical rate near {last['gap/lr_crit']:.3g} (gap/lr_crit)")
        if "variance" not in out and all(r["gap/zero_variance_groups"] > 0.5 for r in window):
            out["variance"] = (f"more than half of the groups had no reward variance for {patience} consecutive steps (steps "
                               f"{window[0]['step']}-{window[-1]['step']}): they give GRPO no signal; a larger group, or "
                               "prompts of intermediate difficulty, would")
    return out


class RewardError(ValueError):
    """A reward function failed or returned something other than 0/1 for one sample."""


class GRPOTrainer:
    """Trains ``config.model`` on ``config.task`` into ``out`` (see the module docstring)."""

    def __init__(self, config: TrainConfig, out: str | Path, *, reward_fn: Callable[[str, Any], float] | None = None,
                 on_step: Callable[[int], None] | None = None, on_warning: Callable[[str], None] | None = None):
        self.config, self.out, self.on_step = config, Path(out), on_step
        self.on_warning = on_warning or (lambda message: warnings.warn(message, GapWarning, stacklevel=3))
        self.device = resolve_device(config.device)
        self.model, self.tokenizer = load_model(config.model)
        self.model.to(self.device)
        self.task = load_task(config.task)
        self.reward_fn = reward_fn or self.task.verify
        problems = self.task.sample(config.prompts, seed=config.seed)
        if len(problems) < 2:
            _checks.fail("task", config.task, "a task or file with at least 2 problems")
        n_eval = max(1, int(round(config.holdout * len(problems))))
        self.heldout, self.train_set = problems[:n_eval], problems[n_eval:]
        if len(self.train_set) < config.prompts_per_step:
            _checks.fail("batch_size", config.batch_size,
                         f"at most group × {len(self.train_set)} (the training prompts available)")
        self.preset = get_preset(config.preset, epochs=config.epochs, **({"advantage": config.advantage} if config.advantage else {}),
                                 **({"alpha": config.alpha} if config.alpha is not None else {}))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        fused = self.device.type in ("cpu", "cuda") and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in self.params)
        self.opt = torch.optim.Adam(self.params, lr=config.lr, fused=fused or None)  # fused: one kernel for all parameters
        K = config.steps
        shape = {"constant": lambda s: 1.0, "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * min(s, K) / K)),
                 "gap-adaptive": lambda s: 1.0}[config.schedule]
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, shape)
        self.gen = torch.Generator(self.device).manual_seed(config.seed)
        self.fresh_gen = torch.Generator(self.device).manual_seed(config.seed + 1_000_003)
        self.step, self.rows = 0, []
        self.M = {"gap/": 0.0, "gap_fresh/": 0.0}  # cumulative positive alignment, in-sample and fresh
        self.rate = GapAdaptiveRate(config.adaptive_fraction, config.adaptive_smoothing, config.adaptive_growth,
                                    config.lr_min, config.lr_max)
        self.writer = None
        self.warned: set[str] = set()
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                _checks.fail("tensorboard", True, "False, or install tensorboard (pip install tensorboard)")
            self.writer = SummaryWriter(str(self.out / "tensorboard"))

    # --- data --------------------------------------------------------------------------------

    def _batch(self) -> list:
        """The step's prompts: consecutive slices of a permutation of the training set per epoch."""
        B, n = self.config.prompts_per_step, len(self.train_set)
        start = (self.step * B) % n
        epoch = (self.step * B) // n
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)).tolist()
        idx = (order + order)[start : start + B]
        return [self.train_set[i] for i in idx]

    def _rewards(self, texts: list[str], problems: list, G: int) -> torch.Tensor:
        out = []
        for i, text in enumerate(texts):
            problem = problems[i // G]
            try:
                r = self.reward_fn(text, problem)
            except Exception as err:
                raise RewardError(f"reward function raised {type(err).__name__}: {err} on completion {text!r} "
                                  f"for prompt {getattr(problem, 'prompt', problem)!r}") from err
            if not isinstance(r, (int, float, bool)) or isinstance(r, float) and not math.isfinite(r) or r not in (0, 1):
                raise RewardError(f"reward function returned {r!r} for completion {text!r} of prompt "
                                  f"{getattr(problem, 'prompt', problem)!r}; allowed: 0 or 1 (verifiable pass/fail)")
            out.append(float(r))
        return torch.tensor(out, device=self.device).view(-1, G)

    def _rollout(self, problems: list, G: int, generator: torch.Generator) -> tuple[Rollout, torch.Tensor]:
        """G completions of each problem and their (len(problems), G) rewards."""
        prompts = [self.tokenizer(p.prompt)["input_ids"] for p in problems]
        self.model.eval()
        rollout = sample(self.model, prompts, G=G, max_new_tokens=self.config.max_new_tokens,
                         eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id, generator=generator,
                         temperature=self.config.temperature)
        return rollout, self._rewards(completion_texts(self.tokenizer, rollout), problems, G)

    # --- one step ------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        cfg, G = self.config, self.config.group
        problems = self._batch()
        rollout, reward = self._rollout(problems, G, self.gen)
        B, T = len(problems), rollout.completion_ids.shape[1]
        mask = rollout.completion_mask.view(B, G, T)
        measured = []  # (prefix, rollout, reward, log-probs before the step) for the post-step diagnostics
        if cfg.fresh_samples:
            fresh, fresh_reward = self._rollout(problems, cfg.fresh_samples, self.fresh_gen)
            with torch.inference_mode():
                measured.append(("gap_fresh/", fresh, fresh_reward, token_logprobs(self.model, fresh)[0]))
        self.model.train()
        before = torch.cat([p.detach().flatten() for p in self.params]) if cfg.diagnostics else None
        logp, entropy = token_logprobs(self.model, rollout, entropy=True)
        logp_old = logp.detach()
        measured.insert(0, ("gap/", rollout, reward, logp_old))
        lr = self.opt.param_groups[0]["lr"]
        for epoch in range(self.preset.epochs):
            if epoch:
                logp, _ = token_logprobs(self.model, rollout)
            loss, lm = policy_loss(self.preset, logp.view(B, G, T), logp_old.view(B, G, T), reward, mask)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm))
            self.opt.step()
        if cfg.schedule != "gap-adaptive":
            self.sched.step()
        lengths = rollout.lengths.float()
        row = {"step": self.step, "loss/policy": float(loss.detach()), "loss/clipfrac": float(lm["loss/clipfrac"]),
               "loss/abs_advantage": float(lm["loss/abs_advantage"]), "charts/lr": lr, "charts/grad_norm": grad_norm,
               "charts/entropy": float(entropy.sum() / rollout.completion_mask.sum()),
               "charts/length_mean": float(lengths.mean()), "charts/length_max": float(lengths.max()),
               "charts/truncated": float((~(rollout.completion_ids == self.tokenizer.eos_token_id).any(-1)).float().mean()),
               "charts/reward": float(reward.mean()), "loss/zero_variance_groups": float(lm["loss/zero_variance_groups"])}
        if "loss/advantage_weight" in lm:  # weighted presets (dapo-lowprob, ...): Σ|Ã_t| / Σ|Â|
            row["loss/advantage_weight"] = float(lm["loss/advantage_weight"])
        if cfg.diagnostics:
            self.model.eval()
            with torch.inference_mode():  # a little cheaper than no_grad; the outputs never meet autograd
                eta = float((torch.cat([p.detach().flatten() for p in self.params]) - before).norm())
                for prefix, roll, r, old in measured:
                    new, _ = token_logprobs(self.model, roll)
                    delta = (new - old).sum(-1).view(r.shape)  # log-ratio of each completion (masked tokens are 0)
                    diag = step_diagnostics(delta, r, eta=eta, grad_norm=grad_norm, mean_length=float(roll.lengths.float().mean()))
                    row.update({prefix + k.removeprefix("gap/"): v for k, v in diag.items()})
                    d = diag["gap/delta_mu_eta"]
                    self.M[prefix] += max(d, 0.0) if math.isfinite(d) else 0.0
                    row[prefix + "M"] = self.M[prefix]
            ratio = row["gap/crit_ratio"]
            row["gap/lr_crit"] = lr / ratio if ratio > 0 else (math.inf if ratio <= 0 else math.nan)
            if cfg.schedule == "gap-adaptive":
                self._adapt(ratio, lr)
        return row

    def _adapt(self, ratio: float, lr: float) -> None:
        new = self.rate(ratio, lr)
        for g in self.opt.param_groups:
            g["lr"] = new

    @torch.no_grad()
    def evaluate(self) -> float:
        """Held-out accuracy: the mean over eval_samples completions of every held-out prompt."""
        gen = torch.Generator(self.device).manual_seed(self.config.seed * 7919 + self.step)  # leaves the training RNG alone
        return float(self._rollout(self.heldout, self.config.eval_samples, gen)[1].mean())

    # --- run, checkpoint, resume -----------------------------------------------------------------

    def _checkpoint(self) -> None:
        path = self.out / "checkpoints" / "latest.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"step": self.step, "M": self.M, "log_lr_crit": self.rate.log_lr_crit, "rows": self.rows,
                 "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                 "generator": self.gen.get_state(), "fresh_generator": self.fresh_gen.get_state(),
                 "torch_rng": torch.get_rng_state(), "settings": dataclasses.asdict(self.config)}
        tmp = path.with_name(".latest.pt.tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def _resume(self) -> None:
        path = self.out / "checkpoints" / "latest.pt"
        if not path.exists():
            return
        state = torch.load(path, weights_only=False, map_location="cpu")  # RNG states are CPU tensors; load_state_dict moves the rest
        if state["settings"] != dataclasses.asdict(self.config):
            _checks.fail("--out", str(self.out), "a directory whose checkpoint has the same settings, or --force to start over")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        self.fresh_gen.set_state(state["fresh_generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.M, self.rows = state["step"], state["M"], state["rows"]
        self.rate.log_lr_crit = state["log_lr_crit"]

    def _write_metrics(self) -> None:
        names = list(dict.fromkeys(k for row in self.rows for k in row))
        table = pa.table({k: [row.get(k, math.nan) for row in self.rows] for k in names})
        write_table(self.out / "metrics.parquet", table)

    def train(self, *, resume: bool = True) -> list[dict[str, float]]:
        """Run to config.steps (resuming from the checkpoint in ``out`` when there is one)."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", {"settings": dataclasses.asdict(self.config)})
        if resume:
            self._resume()
        if self.step == 0 and not self.rows:
            start = {"step": 0, "eval/accuracy": self.evaluate(), "gap/M": 0.0}
            self.rows.append(start | ({"gap_fresh/M": 0.0} if self.config.fresh_samples else {}))
        while self.step < self.config.steps:
            row = self.train_step()
            self.step += 1
            row["step"] = self.step
            if self.step % self.config.eval_every == 0 or self.step == self.config.steps:
                row["eval/accuracy"] = self.evaluate()
            self.rows.append(row)
            for kind, message in gap_warnings(self.rows[-3:]).items():
                if kind not in self.warned:
                    self.warned.add(kind)
                    self.on_warning(message)
            if self.writer is not None:
                for k, v in row.items():
                    if k != "step" and math.isfinite(v):
                        self.writer.add_scalar(k, v, self.step)
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self._write_metrics()
                self._checkpoint()
            if self.on_step is not None:
                self.on_step(1)
        self._write_metrics()
        self.model.save_pretrained(self.out / "model")
        self.tokenizer.save_pretrained(self.out / "model")
        if self.writer is not None:
            self.writer.close()
        return self.rows


def descendant(config: TrainConfig, root: Path | None = None, *, on_step: Callable[[int], None] | None = None) -> Path:
    """The model a GRPO run with ``config`` ends with, trained once into the cache (as `pretrain`
    does for the base: ``<cache>/grpo-<hash of the settings>``, resumable) and found there after."""
    from rlvrlab.lm.pretrain import cache_root

    key = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()[:12]
    out = (root or cache_root()) / f"grpo-{key}"
    if not (out / "model" / "config.json").exists():
        GRPOTrainer(config, out, on_step=on_step, on_warning=lambda message: None).train()
    return out / "model"


def summary_of(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Headline numbers of a run."""
    acc = [(r["step"], r["eval/accuracy"]) for r in rows if math.isfinite(r.get("eval/accuracy", math.nan))]
    ratios = [r["gap/crit_ratio"] for r in rows if math.isfinite(r.get("gap/crit_ratio", math.nan))]
    return {"accuracy_start": acc[0][1] if acc else math.nan, "accuracy_end": acc[-1][1] if acc else math.nan,
            "M_end": rows[-1].get("gap/M", math.nan), "steps": rows[-1]["step"],
            "median_crit_ratio": float(torch.tensor(ratios).median()) if ratios else math.nan,
            "steps_past_crit": sum(r > 1 for r in ratios)}

