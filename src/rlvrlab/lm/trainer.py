"""A lean GRPO trainer for any Hugging Face causal LM, with live Gradient-Gap diagnostics.

Each step: B prompts from the training split, G completions each sampled with a KV cache
(rlvrlab.lm.sampling), rewards from the task's verifier, the preset's loss from
rlvrlab.updates.presets (the one implementation the simulators use: GRPO, Dr. GRPO, DAPO, GSPO,
RLOO, and REINFORCE with a sampled advantage; epochs > 1 for PPO's inner steps), Adam (fused
where the device has it) or plain SGD with gradient clipping, and then one
extra forward pass over the batch just trained on for the diagnostics of
rlvrlab.lm.diagnostics (Δμ·η, the realized log-odds change, var±, the critical-step ratio, the
paper's ‖g_GRPO‖ proxy), together with the curves every GRPO monitor reads, under the names TRL
logs them by: reward and reward_std, frac_reward_zero_std (groups without reward variance),
entropy, grad_norm, clip_ratio/{low,high,region}_mean, completions/{mean,max,min}_length and
completions/clipped_ratio (truncated completions), advantage_std, learning_rate, loss, and with
`kl_reference` the KL to the initial model (TRL's k3 estimator, `kl`; one more forward per step).

Each distinct completion runs through the model once, in the training forward and in the post-step
pass (a confident policy repeats itself; exact: the repeats' values are copied, their gradients add
up; benchmarks/distinct_rows.py: the forward + backward 1.56x faster on arith, 2.34x on add). With `diagnostics_unmixed` < 1 the post-step pass runs on a stratified sample of the groups instead of all of them:
every group with both outcomes, every group of one completion repeated (one row) and that share of
the other groups all right or all wrong, counted U/k times (rlvrlab.lm.diagnostics.measured_groups): the gap/* values are then unbiased for the full
pass's, with standard errors that include the sampling, and `gap/measured_groups` says how many
groups ran. It costs precision, and where few groups have both outcomes its errors have heavy
tails (benchmarks/diagnostics_sampled.py); the default, 1, is the exact full pass.

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

Run directory: config.json, metrics.parquet (one row per step: `gap/...`, TRL's names above,
`loss/...`, `eval/...`), with `prompt_table` prompts.parquet (one row per step, prefix and prompt:
rlvrlab.lm.monitor.GapMonitor.prompt_table), checkpoints/latest.pt every `checkpoint_every` steps (model,
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

import torch

from rlvrlab import _checks
from rlvrlab.io import atomic_write_json, write_table
from rlvrlab.lm.config import TrainConfig, nondefault_settings
from rlvrlab.lm.diagnostics import GapAdaptiveRate, measured_groups, repeated_groups
from rlvrlab.lm.models import check_prompts, load_model, resolve_device
from rlvrlab.lm.monitor import GapMonitor, GapWarning, gap_warnings
from rlvrlab.lm.tasks import load_task
from rlvrlab.lm.sampling import Rollout, completion_texts, sample, token_logprobs
from rlvrlab.updates import get_preset, policy_loss

__all__ = ["DivergedError", "GRPOTrainer", "GapWarning", "RewardError", "TrainConfig", "descendant", "disable_dropout", "gap_warnings",
           "load_model"]


class RewardError(ValueError):
    """A reward function failed or returned something other than 0/1 for one sample."""


class DivergedError(ValueError):
    """The loss or the weights became non-finite: the learning rate is far past the critical one."""


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability of ``model`` to 0 (TRL's ``disable_dropout``); returns how
    many modules had one. RL training with dropout is off-policy (log π_old and the update see
    other masks than the sampler), and the monitor's two passes of ΔL would see different
    functions: a step of rate 1e-12 measured Δμ·η ≈ 0.07 on a GPT-2 with p = 0.1."""
    n = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            module.p, n = 0.0, n + 1
    return n


def heldout_generator(seed: int, step: int, device: torch.device | str) -> torch.Generator:
    """The held-out evaluation's own generator after ``step`` steps: it leaves the training RNG
    alone, and any trainer evaluating the same model at the same step samples the same completions."""
    return torch.Generator(device).manual_seed(seed * 7919 + step)


class GRPOTrainer:
    """Trains ``config.model`` on ``config.task`` into ``out`` (see the module docstring)."""

    def __init__(self, config: TrainConfig, out: str | Path, *, reward_fn: Callable[[str, Any], float] | None = None,
                 on_step: Callable[[int], None] | None = None, on_warning: Callable[[str], None] | None = None):
        self.config, self.out, self.on_step = config, Path(out), on_step
        self.on_warning = on_warning or (lambda message: warnings.warn(message, GapWarning, stacklevel=3))
        _checks.writable_dir("out", self.out)  # before any work
        self.device = resolve_device(config.device)
        self.task = load_task(config.task)
        self.reward_fn = reward_fn or self.task.verify
        problems = self.task.sample(config.prompts, seed=config.seed)
        if len(problems) < 2:
            _checks.fail("task", config.task, "a task or file with at least 2 problems")
        n_eval = max(1, int(round(config.holdout * len(problems))))
        self.heldout = problems[:n_eval]
        seen = {p.prompt for p in self.heldout}  # held-out accuracy is measured on problems never trained on
        self.train_set = [p for p in problems[n_eval:] if p.prompt not in seen]
        self.model, self.tokenizer = load_model(config.model)
        check_prompts(self.tokenizer, [p.prompt for p in problems], name="task")
        self.model.to(self.device)
        disable_dropout(self.model)
        self.model.eval()  # every pass (sampling, training, diagnostics) in one mode: see disable_dropout
        if len(self.train_set) < config.prompts_per_step:
            _checks.fail("batch_size", config.batch_size,
                         f"at most group × {len(self.train_set)} (the training prompts available)")
        self.preset = get_preset(config.preset, epochs=config.epochs, **({"advantage": config.advantage} if config.advantage else {}),
                                 **({"alpha": config.alpha} if config.alpha is not None else {}))
        self.reference = None  # the initial model, frozen, for the KL to it (one more forward per step: only when asked)
        if config.kl_reference:
            self.reference = load_model(config.model)[0].to(self.device).eval().requires_grad_(False)
            disable_dropout(self.reference)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        fused = self.device.type in ("cpu", "cuda") and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in self.params)
        if config.optimizer == "sgd":  # the paper's plain step θ + η·w, η = lr·‖clipped gradient‖
            self.opt = torch.optim.SGD(self.params, lr=config.lr)
        else:
            self.opt = torch.optim.Adam(self.params, lr=config.lr, fused=fused or None)  # fused: one kernel for all parameters
        K = config.steps
        shape = {"constant": lambda s: 1.0, "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * min(s, K) / K)),
                 "gap-adaptive": lambda s: 1.0, "probe": lambda s: 1.0}[config.schedule]
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, shape)
        self.gen = torch.Generator(self.device).manual_seed(config.seed)
        self.fresh_gen = torch.Generator(self.device).manual_seed(config.seed + 1_000_003)
        self.step = 0
        self.probe_target = math.nan  # schedule "probe": the rate it aims at, from the last scan
        rule = GapAdaptiveRate(config.adaptive_fraction, config.adaptive_smoothing, config.adaptive_growth,
                               config.lr_min, config.lr_max, config.adaptive_ratchet) if config.schedule == "gap-adaptive" else None
        self.monitor = GapMonitor(adaptive=rule, on_warning=self.on_warning, per_prompt=config.prompt_table)
        self.prompt_index = {p.prompt: i for i, p in enumerate(self.train_set)}  # a prompt's id in prompts.parquet
        self.writer = None
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
        prompts = self.tokenizer([p.prompt for p in problems])["input_ids"]
        try:
            rollout = sample(self.model, prompts, G=G, max_new_tokens=self.config.max_new_tokens,
                             eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id, generator=generator,
                             temperature=self.config.temperature)
        except RuntimeError:  # finite weights can still overflow in the forward (attention, logits)
            with torch.no_grad():
                logits = self.model(input_ids=torch.tensor([prompts[0]], device=self.device)).logits
            if bool(torch.isfinite(logits).all()):
                raise
            raise self._diverged(f"after step {self.step}", self.opt.param_groups[0]["lr"]) from None
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
                measured.append(("gap_fresh/", fresh, fresh_reward, token_logprobs(self.model, fresh, distinct=True)[0]))
        before = torch.cat([p.detach().flatten() for p in self.params]) if cfg.diagnostics else None
        # each distinct completion runs once (a confident policy repeats itself): the repeats' gradients add up on it
        logp, entropy = token_logprobs(self.model, rollout, entropy=True, distinct=True)
        logp_old = logp.detach()
        measured.insert(0, ("gap/", rollout, reward, logp_old))
        lr = self.opt.param_groups[0]["lr"]
        for epoch in range(self.preset.epochs):
            if epoch:
                logp, _ = token_logprobs(self.model, rollout, distinct=True)
            loss, lm = policy_loss(self.preset, logp.view(B, G, T), logp_old.view(B, G, T), reward, mask)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm))
            self.opt.step()
        if cfg.schedule not in ("gap-adaptive", "probe"):  # those two set the rate themselves
            self.sched.step()
        lengths = rollout.lengths.float()
        # the curves every GRPO monitor reads, under TRL's names (rlwatch, rldoctor, rlprobe and a TRL dashboard read them)
        row = {"step": self.step, "loss": float(loss.detach()), "learning_rate": lr, "grad_norm": grad_norm,
               "entropy": float(entropy.sum() / rollout.completion_mask.sum()),
               "reward": float(reward.mean()), "reward_std": float(reward.std()),
               "frac_reward_zero_std": float(lm["loss/zero_variance_groups"]), "advantage_std": float(lm["loss/advantage_std"]),
               "loss/abs_advantage": float(lm["loss/abs_advantage"]), "clip_ratio/region_mean": float(lm["loss/clipfrac"]),
               "clip_ratio/low_mean": float(lm["loss/clipfrac_low"]), "clip_ratio/high_mean": float(lm["loss/clipfrac_high"]),
               "completions/mean_length": float(lengths.mean()), "completions/max_length": float(lengths.max()),
               "completions/min_length": float(lengths.min()),
               "completions/clipped_ratio": float((~(rollout.completion_ids == self.tokenizer.eos_token_id).any(-1)).float().mean())}
        if self.reference is not None:  # TRL's k3 estimator of KL(π_θ ‖ π_ref), per completion token, before the step
            with torch.inference_mode():
                ref, _ = token_logprobs(self.reference, rollout, distinct=True)
                log_ratio = ref - logp_old  # masked tokens are 0 in both, so their k3 term is 0
                row["kl"] = float((log_ratio.exp() - log_ratio - 1).sum() / rollout.completion_mask.sum())
        if "loss/advantage_weight" in lm:  # weighted presets (dapo-lowprob, ...): Σ|Ã_t| / Σ|Â|
            row["loss/advantage_weight"] = float(lm["loss/advantage_weight"])
        if cfg.diagnostics:
            with torch.inference_mode():  # a little cheaper than no_grad; the outputs never meet autograd
                eta = float((torch.cat([p.detach().flatten() for p in self.params]) - before).norm())
                sampler = torch.Generator().manual_seed(cfg.seed * 7919 + self.step)  # which unmixed groups: a function of the step
                for prefix, roll, r, old in measured:
                    repeated = repeated_groups(roll.completion_ids, roll.completion_mask, roll.group)  # one row each: measured for certain
                    keep = measured_groups(r, cfg.diagnostics_unmixed, sampler, always=repeated)
                    rows = keep.repeat_interleave(r.shape[1]).to(old.device)
                    new, _ = token_logprobs(self.model, roll.groups(keep), distinct=True)  # a repeated completion runs once
                    delta = torch.zeros(r.shape, dtype=old.dtype, device=old.device)  # groups left out: never read
                    delta.view(-1)[rows] = (new - old[rows]).sum(-1)  # log-ratio of each completion (masked tokens are 0)
                    if not bool(torch.isfinite(delta).all()):  # finite weights whose forward overflows
                        raise self._diverged(f"at step {self.step + 1}", lr)
                    row.update(self.monitor.measure(delta, r, eta=eta, lr=lr, grad_norm=grad_norm, prefix=prefix,
                                                    mean_length=float(roll.lengths.float().mean()),
                                                    prompt_ids=[self.prompt_index[p.prompt] for p in problems],
                                                    lengths=roll.lengths.view(r.shape), measured=keep, always=repeated))
        self._check_finite(row, lr)
        return row

    def _check_finite(self, row: dict[str, float], lr: float) -> None:
        """Stop a run whose loss, weights or post-step log-probabilities became non-finite, before it
        samples from them."""
        finite = math.isfinite(row["loss"]) and bool(torch.isfinite(torch.stack(torch._foreach_norm(self.params))).all())
        if not finite:
            raise self._diverged(f"at step {self.step + 1}", lr)

    def _diverged(self, when: str, lr: float) -> DivergedError:
        return DivergedError(f"the loss or the model became non-finite {when} with learning rate {lr:.3g}: the "
                             "rate is far past the critical one; lower it (gap/lr_crit in the metrics so far estimates the "
                             "critical rate, and --schedule gap-adaptive sets the rate from it)")

    @property
    def rows(self) -> list[dict[str, float]]:
        """Every row so far (step 0's evaluation, then one per step): the monitor's history."""
        return self.monitor.history

    def _probe_schedule(self) -> dict[str, float]:
        """Schedule "probe": before the first step (and every probe_every steps) scan for the critical
        rate of the next steps (rlvrlab.lm.probe.scan with `schedule_scan`'s settings) and aim at its
        recommended rate (with probe_rescan "lower", a re-scan only ever lowers the aim); the rate
        moves toward the aim by at most a factor 2 a step, and the first step is never above it (a
        start far above the threshold damages the model before any rule can react)."""
        from rlvrlab.lm.probe import scan, scan_columns, schedule_scan

        cfg, row = self.config, {}
        lr = self.opt.param_groups[0]["lr"]
        if self.step == 0 or cfg.probe_every and self.step % cfg.probe_every == 0:
            r = scan(self, **schedule_scan(cfg))
            row = scan_columns(r)
            if not math.isnan(r.recommended_rate):
                aim = min(max(r.recommended_rate, cfg.lr_min), cfg.lr_max)
                lower = cfg.probe_rescan == "lower" and not math.isnan(self.probe_target)  # a re-scan may only lower it
                self.probe_target = min(aim, self.probe_target) if lower else aim
        if not math.isnan(self.probe_target):
            lr = min(lr, self.probe_target) if self.step == 0 else min(max(self.probe_target, lr / 2), 2 * lr)
            self._set_lr(min(max(lr, cfg.lr_min), cfg.lr_max))
        return row

    def _adaptive_start(self) -> dict[str, float]:
        """Schedule gap-adaptive with adaptive_start "probe", before the first step: a probe scan, whose
        critical rate starts the rule's running one (GapAdaptiveRate.prior); the first step's rate is
        the lower of lr and the rule's aim. The rule moves it by at most 2x a step after that."""
        from rlvrlab.lm.probe import scan, scan_columns, schedule_scan

        cfg = self.config
        r = scan(self, **schedule_scan(cfg))
        aim = self.monitor.adaptive.prior(r.critical_rate)
        if not math.isnan(aim):
            self._set_lr(min(max(min(self.opt.param_groups[0]["lr"], aim), cfg.lr_min), cfg.lr_max))
        return scan_columns(r)

    def _set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    @torch.no_grad()
    def evaluate(self) -> float:
        """Held-out accuracy: the mean over eval_samples completions of every held-out prompt."""
        gen = heldout_generator(self.config.seed, self.step, self.device)
        return float(self._rollout(self.heldout, self.config.eval_samples, gen)[1].mean())

    # --- run, checkpoint, resume -----------------------------------------------------------------

    def _checkpoint(self) -> None:
        path = self.out / "checkpoints" / "latest.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"step": self.step, "monitor": self.monitor.state_dict(),
                 "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                 "generator": self.gen.get_state(), "fresh_generator": self.fresh_gen.get_state(),
                 "torch_rng": torch.get_rng_state(), "settings": dataclasses.asdict(self.config), "probe_target": self.probe_target}
        tmp = path.with_name(".latest.pt.tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def _resume(self) -> None:
        path = self.out / "checkpoints" / "latest.pt"
        if not path.exists():
            return
        state = torch.load(path, weights_only=False, map_location="cpu")  # RNG states are CPU tensors; load_state_dict moves the rest
        if nondefault_settings(state["settings"]) != self.config.identity():
            _checks.fail("--out", str(self.out), "a directory whose checkpoint has the same settings, or --force to start over")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        self.fresh_gen.set_state(state["fresh_generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        self.probe_target = state.get("probe_target", math.nan)
        self.monitor.load_state_dict(state["monitor"])

    def _write_metrics(self) -> None:
        write_table(self.out / "metrics.parquet", self.monitor.table())
        if self.config.prompt_table:
            write_table(self.out / "prompts.parquet", self.monitor.prompt_table())

    def train(self, *, resume: bool = True) -> list[dict[str, float]]:
        """Run to config.steps (resuming from the checkpoint in ``out`` when there is one)."""
        if resume:
            self._resume()  # before config.json: a refused resume leaves the old run's as it was
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", {"settings": dataclasses.asdict(self.config)})
        if self.step == 0 and not self.rows:
            prefixes = ("gap/", "gap_fresh/") if self.config.fresh_samples else ("gap/",)
            self.monitor.record({"step": 0, "eval/accuracy": self.evaluate()} | self.monitor.start(prefixes))
        while self.step < self.config.steps:
            scanned = {}
            if self.config.schedule == "probe":
                scanned = self._probe_schedule()
            elif self.config.schedule == "gap-adaptive" and self.config.adaptive_start == "probe" and self.step == 0:
                scanned = self._adaptive_start()
            try:
                row = self.train_step() | scanned
            except DivergedError:
                self._write_metrics()  # the rows so far (the last checkpoint stays the last good state)
                raise
            self.step += 1
            row["step"] = self.step
            if self.step % self.config.eval_every == 0 or self.step == self.config.steps:
                row["eval/accuracy"] = self.evaluate()
            lr = self.monitor.record(row)
            if self.config.schedule == "gap-adaptive":
                self._set_lr(lr)
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

    key = hashlib.sha256(json.dumps(config.identity(), sort_keys=True).encode()).hexdigest()[:12]
    out = (root or cache_root()) / f"grpo-{key}"
    if not (out / "model" / "config.json").exists():
        GRPOTrainer(config, out, on_step=on_step, on_warning=lambda message: None).train()
    return out / "model"


def summary_of(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Headline numbers of a run."""
    acc = [(r["step"], r["eval/accuracy"]) for r in rows if math.isfinite(r.get("eval/accuracy", math.nan))]
    ratios = [r["gap/crit_ratio"] for r in rows if not math.isnan(r.get("gap/crit_ratio", math.nan))]  # inf: against the gap
    return {"accuracy_start": acc[0][1] if acc else math.nan, "accuracy_end": acc[-1][1] if acc else math.nan,
            "M_end": rows[-1].get("gap/M", math.nan), "steps": rows[-1]["step"],
            "median_crit_ratio": float(torch.tensor(ratios).median()) if ratios else math.nan,
            "steps_past_crit": sum(r > 1 for r in ratios)}

