"""The Gradient-Gap monitor and the theory-guided learning rate inside TRL's GRPOTrainer.

One import and one changed line in a TRL script::

    from rlvrlab.integrations.trl import GapConfig, GapGRPOTrainer
    trainer = GapGRPOTrainer(model=..., reward_funcs=..., args=grpo_config, train_dataset=...,
                             gap=GapConfig(gap_schedule="gap-adaptive"))   # was: GRPOTrainer(...)

What it adds to TRL (pinned: trl 1.16):

- **Diagnostics** (`gap/*`, the names of rlvrlab's own trainer, rlvrlab.lm.diagnostics): after each
  optimizer step, one forward pass over the completions the step trained on gives every
  completion's log-ratio ΔL = log π_new(o) − log π_old(o); log π_old comes free from TRL's own
  training forward (captured, not recomputed), and both come from TRL's own log-prob routine, so
  that a step that changes nothing gives ΔL = 0 exactly, under bf16 autocast too. From ΔL and the
  0/1 success of each completion: Δμ·η, the realized log-odds change (Lemma 3), var±, the
  critical-step ratio and rate, the cumulative alignment M, the share of groups without reward
  variance. They enter TRL's own metrics, so `report_to` sends them to TensorBoard / W&B / trackio,
  averaged over `logging_steps` like TRL's; every step's values also go to
  `output_dir/gap_metrics.parquet`.
- **Warnings**, each once per run (a `GapWarning`): the step overshot (crit_ratio > 1 or a negative
  realized log-odds change) for `gap_patience` consecutive steps; most groups had no reward variance.
- **The gap-adaptive learning rate** (`gap_schedule="gap-adaptive"`): rlvrlab's rule
  (GapAdaptiveRate) sets the *peak* rate, and TRL's schedule keeps its shape: the rate of step t is
  learning_rate × λ(t) × s_t, where λ is the `lr_scheduler_type` schedule and s_t the rule's scale.
  The scale enters the scheduler's own multiplier, so the scheduler never overwrites it, the
  logged `learning_rate` is the rate used, and it survives checkpoints.
- **Low-probability advantage reweighting** (`gap_alpha` = α > 0; METHODS.md §B, "Direction of RLVR
  updates"): every token's advantage becomes [1 + α(1 − π_old(y_t))]·Â, on top of any TRL loss
  (rlvrlab.updates' "low-prob" weighting, the one of the dapo-lowprob preset).
- **A learning rate before training** (`probe_trl(trainer)`, rlvrlab.integrations.trl_probe; any
  GRPOTrainer): rlvrlab.lm.probe's critical and recommended rate from a few of TRL's own steps at
  a tiny rate, with the trainer put back so that `trainer.train()` is the run it would have been.

Supported: trl 1.16.x (pinned by the `trl` extra, `>=1.16,<1.17`), on transformers 5; `check_trl()`
refuses at import a TRL that lacks a hook below, naming the version to install.

How it hooks in, with as little of TRL's private surface as gives exact ΔL. The monitor itself is
rlvrlab.lm.monitor.GapMonitor, the one rlvrlab's own trainer uses; this class is its adapter.
Public paths:
- success: the success reward function is wrapped (its outputs recorded, unchanged) — not
  TRL's `_calculate_rewards`;
- the post-step pass runs from a callback's `on_pre_optimizer_step` / `on_optimizer_step`,
  between `optimizer.step()` and `lr_scheduler.step()`;
- the monitor's state (M, the adaptive scale and estimate, warnings given, every row) is an
  `ExportableState` callback's state, saved in each checkpoint's trainer_state.json by
  transformers and read back in `on_train_begin` — not the two checkpoint methods;
- `compute_loss` marks the training forward; `create_scheduler` scales the schedule (both public).
Private methods still overridden, each calling TRL's own, and why no public path serves:
- `_generate_and_score_completions` (TRL): the only place the local generation batch exists
  whole, groups consecutive, before TRL shuffles and splits it; a row index added there keeps
  the groups through the shuffle;
- `_get_per_token_logps_and_entropies` (TRL): log π_old of each completion comes free and exact
  from TRL's own training forward (a forward of our own would cost as much as the post-step pass,
  and differ from TRL's fused path by float noise); α reads π_old there too;
- `_get_grad_norm` (transformers): the gradient norm before clipping (for the ‖g_GRPO‖ proxy and
  `grad_norm`) exists only there; callbacks see clipped (or loss-scaled) gradients.

Correct wherever a user puts it: both passes of ΔL must see one function. The post-step pass runs
in the training forward's mode (train), autocast (accelerate's wrapped forward), adapter (a PEFT
model's active adapter; η is over the trainable parameters, the adapter's) and with gradient
checkpointing off, which changes no value. Dropout would make ΔL noise (a 1e-12 step measured
Δμ·η ≈ 0.07 on GPT-2): a model with active dropout and `disable_dropout=False` is refused while
the diagnostics are on. The α weighting is computed once per generation batch from the
advantages TRL computed, so later passes (num_iterations > 1) read the same weighted advantages.

The post-step pass calls TRL's function once per distinct (prompt, completion) row (a confident
policy repeats its completions; the values are copied to the repeats). With `gap_unmixed` < 1 it
runs on a stratified sample of the groups: every group with both outcomes (and, on one process,
every group of one completion repeated) and that share of the others, drawn from every process's successes with one seed, so that every process draws the same
(rlvrlab.lm.diagnostics.measured_groups; under DeepSpeed or FSDP, whose forward is collective, and
on a multimodal batch every group is measured).

Limits: each optimizer step must train on whole generation batches (TRL's default,
steps_per_generation = gradient_accumulation_steps) so that every group is measured whole. With
num_iterations > 1 the later steps on a batch measure samples of an older policy (off-policy:
Lemma 3's expectation no longer holds exactly). η = ‖θ_new − θ_old‖ (for var± in score units and
η_crit) needs a copy of the trainable weights; under DeepSpeed or FSDP, whose parameters are
sharded, it is not measured (NaN), and nor is it with `gap_step_norm=False`; the ratio, Δμ·η and
the log-odds change are in log-probability units and need no η. The in-sample ΔL are optimistic
(issue 4's finding: 1.1–4.1× the fresh-sample ones): the step was fitted to them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rlvrlab import _checks
from rlvrlab.io import write_table
from rlvrlab.lm.diagnostics import GapAdaptiveRate, measured_groups, repeated_groups
from rlvrlab.lm.logprobs import unique_rows
from rlvrlab.lm.monitor import GapMonitor, GapWarning
from rlvrlab.updates import WEIGHTINGS

try:
    import trl
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState
    from trl import GRPOTrainer
    from trl.models.utils import disable_gradient_checkpointing
except ImportError as err:  # an extra, not a dependency
    raise ImportError(f"rlvrlab.integrations.trl needs TRL: pip install 'rlvrlab[trl]' ({err})") from err

__all__ = ["GapConfig", "GapGRPOTrainer", "GapWarning", "check_trl", "matched_config", "probe_trl"]

TRL_TESTED = "1.16"  # the TRL release line these hooks were read from and tested with
_HOOKS = {  # TRL / transformers methods the subclass overrides, with the parameters it relies on
    "_generate_and_score_completions": ["inputs"],
    "_get_per_token_logps_and_entropies": ["model", "input_ids", "attention_mask", "logits_to_keep", "batch_size"],
    "compute_loss": ["model", "inputs"],
    "_get_grad_norm": ["model", "grad_norm"],
    "create_scheduler": ["num_training_steps", "optimizer"],
}
METRICS = "gap_metrics.parquet"  # every step's values, in output_dir


def check_trl() -> None:
    """Fail clearly when the installed TRL lacks a method the subclass overrides (a TRL upgrade)."""
    for name, params in _HOOKS.items():
        method = getattr(GRPOTrainer, name, None)
        missing = [p for p in params if method is not None and p not in inspect.signature(method).parameters]
        if method is None or missing:
            raise ImportError(f"rlvrlab.integrations.trl was written for trl {TRL_TESTED}.x; the installed trl "
                              f"{trl.__version__} lacks GRPOTrainer.{name}({', '.join(missing or params)}): install "
                              f"trl=={TRL_TESTED}.* (pip install 'rlvrlab[trl]')")


check_trl()


@dataclass
class GapConfig:
    """The monitor's settings (prefixed ``gap_`` so that transformers' HfArgumentParser can parse
    them beside GRPOConfig: ``--gap_schedule gap-adaptive``)."""

    gap_diagnostics: bool = field(default=True, metadata={"help": "the post-step pass and the gap/* metrics"})
    gap_every: int = field(default=1, metadata={"help": "measure every N-th optimizer step (the pass costs one forward)"})
    gap_schedule: Literal["trl", "gap-adaptive"] = field(default="trl", metadata={
        "help": "trl: TRL's learning rate as configured; gap-adaptive: rlvrlab's rule sets the peak rate under TRL's schedule"})
    gap_fraction: float = field(default=0.5, metadata={"help": "gap-adaptive: aim at this fraction of the critical rate"})
    gap_smoothing: float = field(default=0.8, metadata={"help": "gap-adaptive: weight of the past in the running estimate"})
    gap_growth: float = field(default=1.1, metadata={"help": "gap-adaptive: growth per step while no threshold is in sight"})
    gap_ratchet: bool = field(default=False, metadata={
        "help": "gap-adaptive: aim at the lowest running critical rate seen so far (the critical rate falls as J rises)"})
    gap_lr_min: float | None = field(default=None, metadata={"help": "gap-adaptive: lowest peak rate (default learning_rate / 100)"})
    gap_lr_max: float | None = field(default=None, metadata={"help": "gap-adaptive: highest peak rate (default learning_rate × 100)"})
    gap_alpha: float = field(default=0.0, metadata={
        "help": "low-probability advantage reweighting [1 + α(1 − π_old)]·Â (METHODS.md §B; 0.1–0.2 there); 0: off"})
    gap_patience: int = field(default=3, metadata={"help": "consecutive steps before a warning"})
    gap_success_reward: str = field(default="", metadata={
        "help": "the reward function that verifies success (its name); empty: the only one"})
    gap_success_threshold: float = field(default=1.0, metadata={"help": "a completion succeeds when that reward >= this"})
    gap_unmixed: float = field(default=1.0, metadata={
        "help": "share of the groups without reward variance (all right or all wrong) the post-step pass measures, at least 2 "
                "of each kind (groups with both outcomes always; 1: every group, the exact full pass; less: a stratified "
                "sample, unbiased for the full pass, for monitoring: gap-adaptive read it worse in rlvrlab's trainer; "
                "DeepSpeed and FSDP measure every group)"})
    gap_step_norm: bool = field(default=True, metadata={
        "help": "measure η = ‖θ_new − θ_old‖ (a copy of the trainable weights each measured step)"})

    def __post_init__(self) -> None:
        for name in ("gap_every", "gap_patience"):
            _checks.integer(name, getattr(self, name))
        _checks.choose("gap_schedule", self.gap_schedule, ("trl", "gap-adaptive"))
        if self.gap_schedule == "gap-adaptive" and not self.gap_diagnostics:
            _checks.fail("gap_diagnostics", self.gap_diagnostics, "True with gap_schedule 'gap-adaptive' (the rule reads them)")
        GapAdaptiveRate.check(self.gap_fraction, self.gap_smoothing, self.gap_growth, prefix="gap_")
        for name in ("gap_lr_min", "gap_lr_max"):
            if getattr(self, name) is not None:
                _checks.positive(name, getattr(self, name))
        if not (math.isfinite(self.gap_alpha) and self.gap_alpha >= 0):
            _checks.fail("gap_alpha", self.gap_alpha, "a number >= 0 (0: no reweighting)")
        if not (isinstance(self.gap_unmixed, (int, float)) and 0 < self.gap_unmixed <= 1):
            _checks.fail("gap_unmixed", self.gap_unmixed, "a number in (0, 1] (1: every group)")
        if not math.isfinite(self.gap_success_threshold):
            _checks.fail("gap_success_threshold", self.gap_success_threshold, "a finite number")


def matched_config(output_dir: str, **overrides):
    """A GRPOConfig whose update is rlvrlab's "grpo" preset (mean-std advantages, clip 0.2, per-
    sequence token mean, no KL, Adam without decay, gradient clipping at 1, constant rate, float32,
    one generation batch per optimizer step); overrides on top. TRL's own defaults differ (bf16
    and activation checkpointing, on CPU too; loss_type "dapo"; lr 1e-6; a linear schedule)."""
    from trl import GRPOConfig

    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    settings = dict(output_dir=output_dir, gradient_accumulation_steps=1, num_iterations=1, loss_type="grpo", beta=0.0,
                    epsilon=0.2, scale_rewards="group", optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
                    lr_scheduler_type="constant", warmup_steps=0, bf16=False, fp16=False, use_vllm=False,
                    report_to=[], save_strategy="no", disable_tqdm=True, **{checkpointing: False})
    return GRPOConfig(**{**settings, **overrides})


class _GapCallback(TrainerCallback, ExportableState):
    """Runs the monitor between transformers' optimizer.step() and lr_scheduler.step(), and carries
    its state through checkpoints (trainer_state.json's ``stateful_callbacks``). Each trainer gets
    a subclass bound to it (``trainer``), so that transformers can re-create it without arguments
    (``restore_callback_states_from_checkpoint``)."""

    trainer: GapGRPOTrainer

    def state(self) -> dict:
        t = self.trainer
        return {"args": {}, "attributes": {}, "rlvrlab": {"monitor": t.gap_monitor.state_dict(), "scale": t.gap_scale}}

    def on_train_begin(self, args, state, control, **kwargs):
        # the TrainerState of a resumed run was read from the checkpoint before this event; a new
        # run's holds the initial state
        saved = state.stateful_callbacks.get(type(self).__name__)
        saved = saved[0] if isinstance(saved, list) else saved
        if saved and "rlvrlab" in saved:
            self.trainer.gap_monitor.load_state_dict(saved["rlvrlab"]["monitor"])
            self.trainer.gap_scale = saved["rlvrlab"]["scale"]

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._gap_before_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._gap_after_step()

    def on_save(self, args, state, control, **kwargs):
        self.trainer._gap_write_metrics()

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer._gap_write_metrics()


def _active_dropout(model: torch.nn.Module) -> str:
    """What in ``model`` drops out in train mode ('' when nothing does)."""
    n = sum(1 for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0)
    attention = sum(1 for m in model.modules() if isinstance(getattr(m, "attention_dropout", None), float) and m.attention_dropout > 0)
    parts = ([f"{n} dropout modules"] if n else []) + ([f"attention dropout in {attention} modules"] if attention else [])
    return " and ".join(parts)


def success_reward_index(trainer: GRPOTrainer, name: str | None, *, setting: str, unnamed: Any) -> int:
    """The index of the reward function named ``name`` that verifies success (the only one when
    ``name`` is empty); refused, as ``setting`` (showing ``unnamed`` when no name was given), when the
    name is unknown, several functions leave it ambiguous, or it names a reward model."""
    names = list(trainer.reward_func_names)
    if name:
        _checks.choose(setting, name, names)
        index = names.index(name)
    elif len(names) == 1:
        index = 0
    else:
        _checks.fail(setting, unnamed, f"the name of the reward function that verifies success, one of {', '.join(names)} "
                     "(the theory needs a 0/1 success per completion)")
    if isinstance(trainer.reward_funcs[index], torch.nn.Module):
        _checks.fail(setting, names[index], "a reward function that verifies success (a callable returning 0/1), not a reward model")
    return index


def _recording(func, sink: list):
    """``func`` (a TRL reward function, sync or async) with each call's outputs appended to ``sink``."""
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None)):
        @functools.wraps(func)
        async def recorded(*args, **kwargs):
            out = await func(*args, **kwargs)
            sink.append(list(out))
            return out
    else:
        @functools.wraps(func)
        def recorded(*args, **kwargs):
            out = func(*args, **kwargs)
            sink.append(list(out))
            return out
    return recorded


_MULTIMODAL = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
               "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


class GapGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with rlvrlab's Gradient-Gap monitor, gap-adaptive rate and α reweighting
    (see the module docstring). Takes GRPOTrainer's arguments, plus ``gap`` (a GapConfig)."""

    def __init__(self, *args, gap: GapConfig | None = None, **kwargs):
        self.gap = gap if gap is not None else GapConfig()
        if not isinstance(self.gap, GapConfig):
            _checks.fail("gap", type(self.gap).__name__, "a GapConfig")
        self._gap_inputs: dict | None = None  # the micro-batch whose training forward is under way
        super().__init__(*args, **kwargs)
        g, a = self.gap, self.args
        index = success_reward_index(self, g.gap_success_reward, setting="gap_success_reward", unnamed="")
        self._gap_rewards: list[list] = []  # the success reward's outputs since the last generation batch
        self.reward_funcs[index] = _recording(self.reward_funcs[index], self._gap_rewards)
        if g.gap_diagnostics and a.steps_per_generation != a.gradient_accumulation_steps:
            _checks.fail("steps_per_generation", a.steps_per_generation,
                         f"gradient_accumulation_steps = {a.gradient_accumulation_steps} (TRL's default): the monitor measures "
                         "each optimizer step on the whole generation batch it trained on, every group complete")
        dropout = _active_dropout(self.model)
        if g.gap_diagnostics and dropout:
            _checks.fail("disable_dropout", a.disable_dropout,
                         f"True (GRPOConfig(disable_dropout=True)) for a model with {dropout}: with dropout the two passes of "
                         "the monitor's log-ratios see different functions and measure noise, and RL training is off-policy; "
                         "or gap_diagnostics=False")
        rule = None
        if g.gap_schedule == "gap-adaptive":
            rule = GapAdaptiveRate(g.gap_fraction, g.gap_smoothing, g.gap_growth,
                                   g.gap_lr_min if g.gap_lr_min is not None else a.learning_rate / 100,
                                   g.gap_lr_max if g.gap_lr_max is not None else a.learning_rate * 100, g.gap_ratchet)
        self.gap_monitor = GapMonitor(patience=g.gap_patience, adaptive=rule, on_warning=self._gap_warn)
        self.gap_scale = 1.0  # the rule's peak rate / learning_rate (gap-adaptive)
        self._gap_batch: dict | None = None  # the local generation batch (before TRL shuffles it)
        self._gap_success: torch.Tensor | None = None  # (n,) success of each local completion
        self._gap_old: torch.Tensor | None = None  # (n,) log π_old of each local completion, from the training forward
        self._gap_before: list[torch.Tensor] | None = None
        self._gap_grad_norm = math.nan
        self._gap_params = [p for p in self.model.parameters() if p.requires_grad]  # a PEFT model's: the adapter's
        self.add_callback(type("GapMonitorCallback", (_GapCallback,), {"trainer": self})())

    @property
    def gap_history(self) -> list[dict[str, float]]:
        """One row per measured step, every value (NaN and inf too): the monitor's history."""
        return self.gap_monitor.history

    def _gap_warn(self, message: str) -> None:
        if self.accelerator.is_main_process:
            warnings.warn(message, GapWarning, stacklevel=2)

    # --- what TRL hands over -------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        self._gap_rewards.clear()
        out = super()._generate_and_score_completions(inputs)
        if self.model.training and self.gap.gap_diagnostics:
            n = out["completion_ids"].shape[0]
            device = out["completion_ids"].device
            rewards = [r for call in self._gap_rewards for r in call]
            if len(rewards) != n:
                raise RuntimeError(f"the Gradient-Gap monitor recorded {len(rewards)} success rewards for {n} completions")
            # a None reward (TRL: NaN) is a failure
            reward = torch.tensor([math.nan if r is None else float(r) for r in rewards], device=device)
            self._gap_success = reward >= self.gap.gap_success_threshold
            out["rlvrlab_row"] = torch.arange(n, device=device)  # survives TRL's shuffle and split
            self._gap_batch = dict(out)
            self._gap_old = torch.full((n,), math.nan, device=device)
        return out

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._gap_inputs = inputs if self.model.training else None
        try:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        finally:
            self._gap_inputs = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        inputs, self._gap_inputs = self._gap_inputs, None  # only the first call inside compute_loss: the training forward
        if inputs is not None and torch.is_grad_enabled():
            logps = out[0].detach()  # (b, T) log π of the current (pre-step) weights
            mask = inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
            if "rlvrlab_row" in inputs and self._gap_old is not None:
                self._gap_old[inputs["rlvrlab_row"]] = (logps * mask).sum(-1)
            if self.gap.gap_alpha > 0:
                # TRL reads inputs["advantages"] after this forward and accepts (B, T) advantages. The
                # weights come from TRL's advantages as generated, kept beside them: a later pass over
                # the same buffered batch (num_iterations > 1) must not weight weighted advantages
                adv = inputs.setdefault("rlvrlab_advantages", inputs["advantages"])
                old = inputs.get("old_per_token_logps")
                old = logps if old is None else old
                if adv.dim() == 2:  # already per token (a subclass of TRL's)
                    inputs["advantages"] = adv * WEIGHTINGS["low-prob"](torch.ones_like(adv[:, 0]), old, mask, alpha=self.gap.gap_alpha)
                else:
                    inputs["advantages"] = WEIGHTINGS["low-prob"](adv, old, mask, alpha=self.gap.gap_alpha)
        return out

    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)  # before clipping, as TRL logs it
        self._gap_grad_norm = float(norm) if norm is not None else math.nan
        return norm

    def create_scheduler(self, num_training_steps, optimizer=None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if self.gap.gap_schedule == "gap-adaptive" and not getattr(scheduler, "_rlvrlab_scaled", False):
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                _checks.fail("lr_scheduler_type", getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type),
                             "a schedule of the LambdaLR kind (constant, linear, cosine, polynomial, ... of transformers; "
                             "not reduce_lr_on_plateau, nor a scheduler of your own of another kind) with gap_schedule "
                             f"'gap-adaptive'; got a {type(scheduler).__name__}")
            # the rule's scale rides on the schedule's own multiplier: scheduler.step() can never overwrite it
            scheduler.lr_lambdas = [lambda step, f=f: f(step) * self.gap_scale for f in scheduler.lr_lambdas]
            scheduler._rlvrlab_scaled = True
        return scheduler

    # --- the post-step pass --------------------------------------------------------------------

    def _gap_measuring(self) -> bool:
        return self.gap.gap_diagnostics and self._gap_batch is not None and (self.state.global_step + 1) % self.gap.gap_every == 0

    def _gap_sharded(self) -> bool:
        return bool(getattr(self, "is_deepspeed_enabled", False) or getattr(self, "is_fsdp_enabled", False))

    def _gap_before_step(self) -> None:
        if self._gap_measuring() and self.gap.gap_step_norm and not self._gap_sharded():
            self._gap_before = [p.detach().clone() for p in self._gap_params]

    @torch.no_grad()
    def _gap_after_step(self) -> None:
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used (the scheduler has not stepped yet)
        if not self._gap_measuring():
            return
        batch, old = self._gap_batch, self._gap_old
        if bool(torch.isnan(old).any()):
            raise RuntimeError(f"the Gradient-Gap monitor saw {int(torch.isnan(old).sum())} of {old.numel()} completions "
                               "of the generation batch left out of this optimizer step's training forward")
        eta = math.nan
        if self._gap_before is not None:
            eta = math.sqrt(sum(float((p.detach() - q).double().pow(2).sum()) for p, q in zip(self._gap_params, self._gap_before)))
            self._gap_before = None
        mask = batch["completion_mask"] if "tool_mask" not in batch else batch["completion_mask"] * batch["tool_mask"]
        G, n = self.num_generations, old.shape[0]
        # which groups the pass measures (rlvrlab.lm.diagnostics.measured_groups): from every process's successes, the same
        # draw on each. A sharded model's forward is collective, and a multimodal batch's image tensors are not per row:
        # there every group is measured
        success = self.accelerator.gather(self._gap_success.float()).cpu().view(-1, G)  # global order: groups are consecutive
        media = {k: batch[k] for k in _MULTIMODAL if batch.get(k) is not None}
        fraction = 1.0 if self._gap_sharded() or media else self.gap.gap_unmixed
        repeated = None  # groups of one completion repeated cost one row: measured for certain (one process: its groups are whole)
        if self.accelerator.num_processes == 1:
            repeated = repeated_groups(batch["completion_ids"], batch["completion_mask"], G).cpu()
        keep = measured_groups(success, fraction, torch.Generator().manual_seed(self.args.seed * 7919 + self.state.global_step),
                               always=repeated)
        rows = keep.repeat_interleave(G)[self.accelerator.process_index * n:][:n].to(old.device)  # this process's rows
        new = torch.zeros_like(old)
        if bool(rows.any()):
            ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)[rows]
            attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)[rows]
            repeat = torch.arange(len(ids), device=ids.device)
            if not media:  # a completion sampled again and again (a confident policy) runs once
                first, repeat = unique_rows(ids.masked_fill(attention == 0, -1))
                ids, attention = ids[first], attention[first]
            # the training forward's mode, autocast and adapter; checkpointing off changes no value, and neither does
            # no_grad (the callback runs with grad enabled, where TRL's function would record a graph for nothing)
            with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs), torch.no_grad():
                logps, _, _ = super()._get_per_token_logps_and_entropies(
                    self.model, ids, attention, batch["completion_ids"].shape[1], batch_size=self.args.per_device_train_batch_size,
                    **media)
            new[rows] = (logps[repeat] * mask[rows]).sum(-1).to(new.dtype)
        local = torch.stack([torch.where(rows, new - old, 0.0), mask.sum(-1).float()], 1)  # (n, 2)
        both = self.accelerator.gather(local).float().cpu()  # (N, 2)
        delta, length = both[:, 0].view(-1, G), both[:, 1]
        self._gap_old = torch.full_like(old, math.nan)  # num_iterations > 1: the next step re-measures this batch
        row = {"step": self.state.global_step + 1, "learning_rate": lr, "grad_norm": self._gap_grad_norm}
        row.update(self.gap_monitor.measure(delta, success, eta=eta, lr=lr, grad_norm=self._gap_grad_norm,
                                            mean_length=float(length.mean()), measured=keep, always=repeated))
        peak = self.args.learning_rate * self.gap_scale
        self.gap_scale = self.gap_monitor.record(row, rate=peak) / self.args.learning_rate
        if self.gap.gap_schedule == "gap-adaptive":
            row["gap/scale"] = self.gap_scale
        metrics = self._metrics["train"]
        for k, v in row.items():
            if k.startswith("gap/") and math.isfinite(v):  # TRL averages each over logging_steps; undefined ones stay out
                metrics[k].append(v)

    # --- results -------------------------------------------------------------------------------

    def _gap_write_metrics(self) -> None:
        if self.gap.gap_diagnostics and self.args.should_save and self.gap_history:
            write_table(os.path.join(self.args.output_dir, METRICS), self.gap_monitor.table())


def __getattr__(name: str):
    # probe_trl lives in rlvrlab.integrations.trl_probe, which builds on this module: imported on first use, so that
    # either module can be imported first
    if name == "probe_trl":
        from rlvrlab.integrations.trl_probe import probe_trl

        return probe_trl
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
