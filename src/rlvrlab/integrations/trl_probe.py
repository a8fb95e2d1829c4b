"""The learning-rate probe (rlvrlab.lm.probe) for TRL's GRPOTrainer, run before ``trainer.train()``.

    trainer = GapGRPOTrainer(model=..., reward_funcs=..., args=grpo_config, train_dataset=...)
    result = probe_trl(trainer)                          # 4 steps at 1e-5, then a scan of rates
    trainer.args.learning_rate = result.recommended_rate  # read by train() when it makes its optimizer
    trainer.train()                                       # the run it would have been without the probe

What it measures is rlvrlab.lm.probe's (see its docstring): ``steps`` optimizer steps of the run's
own update at a tiny rate lr_probe give the displacement per unit rate U = (θ_steps − θ0)/lr_probe;
the success rate J(θ0 + lr·U) is scanned on a geometric grid of rates from ``fresh`` new completions
per prompt of those steps' batches, every rate with the same random numbers; the critical rate is
where J falls back to J(θ0) after its peak, and the recommended rate is half of it. The scan and its
reading are probe.py's (scan_rates), so both trainers' probes read a curve the same way.

"The run's own update" here is TRL's: the steps are those ``trainer.train()`` would take first —
the batches of TRL's own train dataloader (a new one, as train() makes; its RepeatSampler is seeded
by ``args.seed``), TRL's ``training_step`` (its generation, reward functions, advantages, loss and
backward; GapGRPOTrainer's α reweighting included), gradient clipping at ``args.max_grad_norm``,
and the optimizer ``trainer.create_optimizer()`` makes (or the one passed as ``optimizers``), its
rate set to lr_probe for every parameter group and no scheduler step. The fresh completions come
from TRL's own generation and are scored by the trainer's reward functions, in training mode as
TRL generates.

Success (the theory's 0/1 reward) follows the monitor's convention (GapConfig): a completion
succeeds when the success reward function's output is >= ``success_threshold`` (default 1.0; a
None reward fails). For a GapGRPOTrainer both default to its GapConfig (``gap_success_reward``,
``gap_success_threshold``); a plain GRPOTrainer with several reward functions must name one.

Everything is put back, so that ``trainer.train()`` afterwards is the run it would have been: the
trainable parameters (and their gradients), every module's train/eval mode, the random streams
(python, numpy, torch, CUDA), the trainer's attributes (its optimizer slot — train() still makes
its own — TRL's step counter ``_step``, ``_buffered_inputs``, the metrics ``_metrics``, ``_logs``
and pending buffers, GapGRPOTrainer's recorded rewards and batch), ``trainer.state``
(``num_input_tokens_seen`` counts generated tokens), the reward function list, and accelerate's
record of the dataloader the probe used (``Accelerator._dataloaders`` and the gradient state's
active dataloader: the probe stops its iteration early). A user-supplied optimizer gets its state
and rates back. Tested: a run trained after the probe ends bit-identical to one without it.

Limits: one process, before train() (the steps do not all-reduce gradients: probe on one process,
then launch); transformers' own generation (vLLM's weights would need a sync per rate; a
rollout_func or environments keep state of their own); no fp16 loss scaling (bf16 and float32 are
fine). Under bf16 mixed precision the probe's steps run in accelerate's autocast, as the model
train() prepares does its forwards (tested: the probe's steps are train()'s, bit for bit, in bf16
too, on CPU).
The probe costs ``steps`` training steps, a first-step forward pair for the second-order rate and
up to ``points + 1`` generations of steps × prompts × fresh completions, and holds three copies
of the trainable weights (θ0, θ after the first step, θ after the last).
"""

from __future__ import annotations

import copy
import math
import random
import time
from typing import Any

import numpy as np
import torch
from transformers import set_seed
from trl.models.utils import disable_gradient_checkpointing

from rlvrlab import _checks
from rlvrlab.gap import gap_stats_mc
from rlvrlab.integrations.trl import _MULTIMODAL, GapGRPOTrainer, GRPOTrainer, _recording, success_reward_index
from rlvrlab.lm.diagnostics import critical_ratio
from rlvrlab.lm.probe import ProbeResult, check_probe, scan_rates, success_rate

__all__ = ["probe_trl"]

# attributes of the trainer that TRL changes in place (not by assignment) while it generates and trains
_MUTABLE = ("_metrics", "_logs", "_pending_metrics", "_pending_extra_logs", "_gap_rewards")


def probe_trl(trainer: GRPOTrainer, *, steps: int = 4, fresh: int = 4, lr_probe: float = 1e-5, lr_low: float = 1e-5,
              lr_high: float = 1e-1, points: int = 25, success_reward: str | None = None,
              success_threshold: float | None = None) -> ProbeResult:
    """The critical and recommended learning rate of ``trainer``'s run (a trl.GRPOTrainer or
    GapGRPOTrainer, before ``trainer.train()``), from ``steps`` (1 to 10) of TRL's own steps at
    ``lr_probe`` and a scan of ``points`` rates from ``lr_low`` to ``lr_high`` (geometric) with
    ``fresh`` (>= 2) completions per prompt of those steps' batches at each. ``success_reward``
    names the reward function that verifies success, ``success_threshold`` the reward at which a
    completion succeeds (defaults: a GapGRPOTrainer's GapConfig; else the only reward function, 1.0).
    Leaves the trainer as it found it (see the module docstring). Returns rlvrlab.lm.probe's
    ProbeResult; ``displacement`` is ‖U‖ over the trainable parameters (a PEFT model's adapter)."""
    check_probe(steps, fresh, lr_probe, lr_low, lr_high, points)
    index, threshold = _check_trainer(trainer, success_reward, success_threshold)
    start = time.perf_counter()
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    theta0 = torch.nn.utils.parameters_to_vector(params).detach().clone()
    saved = _save(trainer, params)
    try:
        batches, theta1, theta_n = _steps(trainer, params, steps, lr_probe)
        U = (theta_n - theta0) / lr_probe
        G = trainer.num_generations
        rows = [row for batch in batches for row in batch[::G] for _ in range(fresh)]  # each prompt of the steps, fresh times
        sink: list[list] = []
        trainer.reward_funcs[index] = _recording(saved["attributes"]["reward_funcs"][index], sink)
        trainer.num_generations = fresh  # TRL groups the rows by num_generations for its advantages
        seed = (trainer.args.seed * 1_000_003 + 2_000_003) % 2**32  # the scan's random numbers, restarted at every rate

        def sample(theta: torch.Tensor) -> tuple[dict, torch.Tensor]:
            torch.nn.utils.vector_to_parameters(theta, params)
            set_seed(seed)  # python, numpy, torch and CUDA: generation and any randomness of the reward functions
            sink.clear()
            out = trainer._generate_and_score_completions(rows)
            rewards = [r for call in sink for r in call]
            success = torch.tensor([r is not None and float(r) >= threshold for r in rewards], dtype=torch.float32)
            return out, success.view(-1, fresh)  # (P, fresh)

        def rate_J(lr: float) -> tuple[float, float]:
            try:
                return success_rate(sample(theta0 + lr * U)[1])
            except RuntimeError as err:  # sampling from non-finite logits: a step that overflows solves nothing
                if "inf" in str(err) or "nan" in str(err):
                    return 0.0, 0.0
                raise

        # J0 at θ0, and the completions drawn there (never trained on) whose log-ratios over the first probe step give
        # its second-order ratio, as rlvrlab's probe reads it
        measured, success0 = sample(theta0.clone())
        J0, se0 = success_rate(success0)
        old = _log_probs(trainer, measured)
        torch.nn.utils.vector_to_parameters(theta1, params)
        delta = (_log_probs(trainer, measured) - old).float().cpu()[None]  # (1, N)
        stats = gap_stats_mc(success0.reshape(1, -1), proj=delta)
        ratio = float(critical_ratio(stats.delta_mu, stats.var_plus, stats.var_minus)[0])
        second_order = math.nan if math.isnan(ratio) else math.inf if ratio == 0 else lr_probe / ratio
        return scan_rates(rate_J, J0=J0, se0=se0, lr_low=lr_low, lr_high=lr_high, points=points, steps=steps,
                          displacement=float(U.norm()), second_order=second_order, completions=len(rows), start=start)
    finally:
        torch.nn.utils.vector_to_parameters(theta0, params)
        _restore(trainer, params, saved)


def _check_trainer(trainer: Any, success_reward: str | None, success_threshold: float | None) -> tuple[int, float]:
    """The index of the success reward function and the success threshold; a trainer the probe
    cannot take TRL's first steps on is refused."""
    if not isinstance(trainer, GRPOTrainer):
        _checks.fail("trainer", type(trainer).__name__, "a trl.GRPOTrainer or rlvrlab's GapGRPOTrainer (probe_trl takes "
                     "TRL's GRPO update)")
    if trainer.state.global_step or trainer._step:
        _checks.fail("trainer", f"a trainer at step {trainer.state.global_step} (micro-step {trainer._step})",
                     "a trainer before trainer.train(): the probe prices the run's first steps")
    a = trainer.args
    if trainer.accelerator.num_processes > 1:
        _checks.fail("num_processes", trainer.accelerator.num_processes, "1: probe_trl runs before train() on one "
                     "process, whose steps do not all-reduce gradients (probe on one process, then launch the run)")
    if getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False):
        _checks.fail("trainer", "DeepSpeed or FSDP", "a trainer without sharding (its optimizer is made inside train())")
    if trainer.use_vllm or getattr(trainer, "use_transformers_continuous_batching", False):
        _checks.fail("use_vllm" if trainer.use_vllm else "use_transformers_continuous_batching", True,
                     "False: probe_trl generates with transformers' generate (vLLM would need a weight sync per rate)")
    if trainer.rollout_func is not None or getattr(trainer, "environment_factories", None) is not None:
        _checks.fail("rollout_func" if trainer.rollout_func is not None else "environment_factory", "set",
                     "none: their state is the user's, and the probe could not put it back")
    if trainer.accelerator.scaler is not None:
        _checks.fail("fp16", a.fp16, "False (bf16 or float32): fp16's loss scaling is the prepared optimizer's")
    gap = trainer.gap if isinstance(trainer, GapGRPOTrainer) else None
    if success_reward is None and gap is not None and gap.gap_success_reward:
        success_reward = gap.gap_success_reward
    index = success_reward_index(trainer, success_reward, setting="success_reward", unnamed=None)
    if success_threshold is None:
        success_threshold = gap.gap_success_threshold if gap is not None else 1.0
    if isinstance(success_threshold, bool) or not isinstance(success_threshold, (int, float)) or not math.isfinite(success_threshold):
        _checks.fail("success_threshold", success_threshold, "a finite number (a completion succeeds when its reward >= it)")
    return index, float(success_threshold)


def _steps(trainer: GRPOTrainer, params: list[torch.nn.Parameter], steps: int,
           lr_probe: float) -> tuple[list[list[dict]], torch.Tensor, torch.Tensor]:
    """``steps`` optimizer steps as transformers' training loop takes them (the micro-batches of
    each step through TRL's training_step, clipping, optimizer.step, zero_grad) at lr_probe. Returns
    the generation batches TRL generated for (lists of dataset rows, each prompt num_generations
    times in a row), and the trainable parameters after the first and after the last step."""
    batches: list[list[dict]] = []
    generate = trainer._generate_and_score_completions  # the bound method (GapGRPOTrainer's hook included)

    def recorded(inputs):
        batches.append(list(inputs))
        return generate(inputs)

    trainer._generate_and_score_completions = recorded  # an instance attribute, removed afterwards
    optimizer = trainer.optimizer if trainer.optimizer is not None else trainer.create_optimizer()
    for group in optimizer.param_groups:
        group["lr"] = lr_probe  # every group, whatever its multiplier: the probe's rate is the same for all
    model, a = trainer.model_wrapped, trainer.args
    loader = trainer.get_train_dataloader()  # a new one, as train() makes: the run's own first batches
    epoch = iter(loader)
    theta1 = None
    for step in range(steps):
        micro, num_items = trainer.get_batch_samples(epoch, a.gradient_accumulation_steps, a.device)
        if len(micro) < a.gradient_accumulation_steps:
            _checks.fail("steps", steps, f"at most {step} (the train dataset holds {step} optimizer steps' batches)")
        trainer.current_gradient_accumulation_steps = len(micro)
        for inputs in micro:
            with trainer.accelerator.autocast():  # train()'s prepared model forwards under it (mixed precision)
                trainer.training_step(model, inputs, num_items)
        if a.max_grad_norm is not None and a.max_grad_norm > 0:
            trainer.accelerator.clip_grad_norm_(model.parameters(), a.max_grad_norm)
        optimizer.step()
        model.zero_grad()
        if step == 0:
            theta1 = torch.nn.utils.parameters_to_vector(params).detach().clone()
    epoch = None  # the iterator, stopped early; its accelerate bookkeeping is put back by _restore
    theta_n = torch.nn.utils.parameters_to_vector(params).detach().clone()
    return batches, theta1, theta_n


@torch.no_grad()
def _log_probs(trainer: GRPOTrainer, out: dict) -> torch.Tensor:
    """(n,) log π of each completion of a TRL generation batch under the current weights, from TRL's
    own log-prob routine in the training forward's mode and autocast, as the monitor measures ΔL."""
    mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs), trainer.accelerator.autocast():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, out["completion_ids"].shape[1], batch_size=trainer.args.per_device_train_batch_size,
            **{k: out[k] for k in _MULTIMODAL if out.get(k) is not None})
    return (logps.float() * mask).sum(-1)


def _rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _save(trainer: GRPOTrainer, params: list[torch.nn.Parameter]) -> dict:
    gradient_state = trainer.accelerator.gradient_state
    return {
        "attributes": dict(vars(trainer)),  # which object each attribute names (restored by identity)
        "contents": {k: copy.deepcopy(getattr(trainer, k)) for k in _MUTABLE if hasattr(trainer, k)},
        "state": copy.deepcopy(vars(trainer.state)),
        "reward_funcs": list(trainer.reward_funcs),
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in params],
        "modes": [(m, m.training) for m in trainer.model.modules()],
        "rng": _rng_states(),
        "optimizer": None if trainer.optimizer is None else copy.deepcopy(trainer.optimizer.state_dict()),
        "dataloaders": len(trainer.accelerator._dataloaders),
        # accelerate's GradientState is shared by every instance (its __dict__ is one class-level dict)
        "gradient_state": {k: list(v) if isinstance(v, list) else v for k, v in vars(gradient_state).items()},
    }


def _restore(trainer: GRPOTrainer, params: list[torch.nn.Parameter], saved: dict) -> None:
    for p, g in zip(params, saved["grads"]):
        p.grad = g
    for m, training in saved["modes"]:
        m.training = training
    rng = saved["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])
    if saved["optimizer"] is not None:  # the user's own optimizer (optimizers=...): its state and rates back
        saved["attributes"]["optimizer"].load_state_dict(saved["optimizer"])
    trainer.reward_funcs[:] = saved["reward_funcs"]
    attributes = saved["attributes"]
    for k in [k for k in vars(trainer) if k not in attributes]:
        delattr(trainer, k)
    for k, v in attributes.items():
        setattr(trainer, k, v)
    for k, v in saved["contents"].items():  # the same objects (others hold them: a reward wrapper, a callback), old contents
        target = getattr(trainer, k)
        if isinstance(target, list):
            target[:] = v
        else:
            target.clear()
            target.update(v)
    state = vars(trainer.state)
    state.clear()
    state.update(saved["state"])
    del trainer.accelerator._dataloaders[saved["dataloaders"]:]
    shared = vars(trainer.accelerator.gradient_state)
    for k in [k for k in shared if k not in saved["gradient_state"]]:
        del shared[k]
    for k, v in saved["gradient_state"].items():
        if isinstance(v, list) and isinstance(shared.get(k), list):
            shared[k][:] = v
        else:
            shared[k] = v
