"""The batched simulation loop: theta_{k+1} = theta_k + eta_k · w_k (eq. 3) for R runs at once.

At every step, for every run, the loop computes exactly (over the enumerated responses, or in
closed form) the quantities of the theory along the direction actually taken, per prompt and for the objective
J = Σ_c weights_c J_c (Section 5), before applying the step:

    J, log_odds, delta_mu, var_plus, var_minus (and E±[wᵀ∇²log π w] on request), eta, ‖w‖,
    M (eq. 12) and, once the step is taken, the realized log-odds change.

Directions and step sizes are pluggable rules (``rlvrlab.updates``). The prompts an update trains
on can change from step to step (``train_prompts``, e.g. the contextual bandit's curriculum), in
which case the alignment at the trained prompts is recorded too (``train_delta_mu``).

For the tabular bandit with an exact-gradient direction and a fixed step, ``simulate`` hands the
run to a fused kernel (``rlvrlab.simulate.tabular``) that computes the same records in closed form;
tests hold the two paths against each other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlvrlab import _checks
from rlvrlab.gap import GapStats, alignment_gain, combine_prompts, gap_stats_mc
from rlvrlab.policies import EnumerablePolicy
from rlvrlab.policies.model import Enumerated, Model, as_model
from rlvrlab.simulate.record import Recorder, Trajectory
from rlvrlab.updates import Direction, StepContext, make_direction, make_step_size

__all__ = ["simulate"]

DirectionRule = Callable[[StepContext], Direction]
StepRule = Callable[[StepContext, GapStats, Direction], torch.Tensor]
PromptSampler = Callable[[int, torch.Tensor, torch.Generator | None], torch.Tensor]


def _prepare_weights(weights: torch.Tensor | None, runs: int, prompts: int, dtype: torch.dtype) -> torch.Tensor:
    if weights is None:
        return torch.full((runs, prompts), 1.0 / prompts, dtype=dtype)
    w = torch.as_tensor(weights, dtype=dtype)
    if w.shape[-1] != prompts or bool((w < 0).any()) or not torch.allclose(w.sum(-1), torch.ones((), dtype=dtype)):
        _checks.fail("weights", f"shape {tuple(w.shape)}", f"a distribution over the {prompts} prompts: (C,) or (R, C), >= 0, summing to 1")
    return w.expand(runs, prompts).clone()


def _as_direction(direction: str | DirectionRule) -> DirectionRule:
    return make_direction(direction) if isinstance(direction, str) else direction


def _as_step_size(step_size: float | torch.Tensor | StepRule) -> StepRule:
    if isinstance(step_size, (int, float, torch.Tensor)):
        return make_step_size("fixed", eta=step_size)
    return step_size


STATELESS_STEP_SIZES = ("fixed", "cosine")  # step-size rules that read only the step number


def _objective(model: Model, theta: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """log J, log(1 - J) per prompt (R, C), and the objective's J and log-odds (R,)."""
    log_J, log_1mJ = model.masses(theta)  # (R, C)
    obj_J = (weights * log_J.exp()).sum(-1).clamp(max=1.0)  # rounding can exceed 1 by an ulp
    obj_lo = torch.logsumexp(weights.log() + log_J, -1) - torch.logsumexp(weights.log() + log_1mJ, -1)
    return log_J, log_1mJ, obj_J, obj_lo


def _state_only(model: Model, theta0: torch.Tensor, weights: torch.Tensor, steps: int, record_every: int,
                direction: DirectionRule, step_size: StepRule, train_prompts: PromptSampler | None,
                generator: torch.Generator | None, on_step: Callable[[int], None] | None) -> Trajectory:
    """simulate's loop without the statistics along the step (measure=False): the same steps, the
    same parameters at every step, J and log_odds (and eta) at the recorded steps."""
    R, C = weights.shape
    constants = model.constants()
    rec = Recorder(steps, record_every, R, C, theta0.dtype)
    theta = theta0.clone()
    for k in range(steps + 1):
        if rec.due(k) or train_prompts is not None:
            log_J, _, obj_J, obj_lo = _objective(model, theta, weights)
            if rec.due(k):
                rec.put(k, J=obj_J, log_odds=obj_lo)
        if k == steps:
            break
        train_w = weights if train_prompts is None else train_prompts(k, log_J.exp(), generator)
        ctx = StepContext(k, steps, theta, model, train_w, constants, generator)
        dirn = direction(ctx)
        eta = torch.as_tensor(step_size(ctx, None, dirn), dtype=theta.dtype).expand(R)
        if rec.due(k):
            rec.put(k, eta=eta)
        theta = theta + eta.unsqueeze(-1) * dirn.w
        if on_step is not None:
            on_step(1)
    return rec.trajectory(theta, constants, kernel="state-only")


def _first_prompt(stats: GapStats) -> GapStats:
    return stats.map(lambda t: t[..., 0])


def simulate(
    policy: EnumerablePolicy | Model,
    reward: torch.Tensor | object | None,
    theta0: torch.Tensor,
    *,
    steps: int,
    direction: str | DirectionRule = "gradient",
    step_size: float | torch.Tensor | StepRule = 0.1,
    weights: torch.Tensor | None = None,
    train_prompts: PromptSampler | None = None,
    record_every: int = 1,
    per_prompt: bool | None = None,
    curvature: bool = False,
    generator: torch.Generator | None = None,
    on_step: Callable[[int], None] | None = None,
    fast: bool = True,
    measure: bool = True,
) -> Trajectory:
    """Run R simulations of eq. (3) for ``steps`` steps and record the theory's vocabulary.

    policy:        an EnumerablePolicy with N responses and C (or 1, shared) prompts, or a
                   closed-form policy (rlvrlab.policies.independent)
    reward:        (C, N) shared by all runs, or (R, C, N), entries 0/1; or the closed-form
                   policy's reward object
    theta0:        (R, d) initial parameters, one row per run
    direction:     a rule name ("gradient", "normalized-gradient", "gap") or a rule from make_direction
    step_size:     a number or (R,) tensor (fixed eta), or a rule from make_step_size
    weights:       (C,) or (R, C) prompt distribution of the objective J (default uniform)
    train_prompts: optional fn(k, J (R, C), generator) -> (R, C) prompt weights the step trains on
    record_every:  keep every k-th step (and the final state); M is accumulated at every step
    per_prompt:    record (S, R, C) per-prompt metrics (default: when C > 1)
    curvature:     also record E±[wᵀ∇²log π w] (the second-order term of App. F)
    on_step:       called with the number of steps just done (a progress bar)
    fast:          allow the fused tabular kernel where it applies
    measure:       compute the statistics along every step (delta_mu, var±, M, ...); False records
                   only J, log_odds and eta at the recorded steps, for runs used only for where they
                   end (a bisection's runs): the same parameters at every step, a third to a half of the work.
                   Needs a step size that does not read the statistics (fixed or cosine)
    """
    if not (isinstance(steps, int) and steps >= 1):
        _checks.fail("steps", steps, "an integer >= 1")
    if not (isinstance(record_every, int) and record_every >= 1):
        _checks.fail("record_every", record_every, "an integer >= 1")
    theta0 = torch.as_tensor(theta0)
    if theta0.dim() != 2 or theta0.shape[1] != policy.n_params or not theta0.is_floating_point():
        _checks.fail("theta0", f"shape {tuple(theta0.shape)}", f"a floating-point (R, d) tensor with d = {policy.n_params}")
    if not bool(torch.isfinite(theta0).all()):
        _checks.fail("theta0", "non-finite entries", "finite parameters")
    R, dtype = theta0.shape[0], theta0.dtype
    model = as_model(policy, reward, R, dtype)
    C = model.n_prompts
    weights = _prepare_weights(weights, R, C, dtype)
    direction, step_size = _as_direction(direction), _as_step_size(step_size)
    per_prompt = C > 1 if per_prompt is None else per_prompt

    if not measure:
        if getattr(step_size, "__name__", None) not in STATELESS_STEP_SIZES:
            _checks.fail("measure", False, f"True, or a step size that does not read the statistics ({', '.join(STATELESS_STEP_SIZES)})")
        return _state_only(model, theta0, weights, steps, record_every, direction, step_size, train_prompts, generator,
                           on_step)

    if fast and train_prompts is None and not curvature and not per_prompt and isinstance(model, Enumerated):
        from rlvrlab.simulate import tabular

        if tabular.applies(model.policy, model.reward, direction, step_size):
            return tabular.run(model.policy, model.reward, theta0, steps=steps, direction=direction, step_size=step_size,
                               record_every=record_every, on_step=on_step)

    constants = model.constants()
    rec = Recorder(steps, record_every, R, C, dtype)
    theta = theta0.clone()
    M = torch.zeros(R, dtype=dtype)
    M_prompt = torch.zeros(R, C, dtype=dtype)
    M_train = torch.zeros(R, dtype=dtype)
    prev_log_odds = prev_prompt_lo = None

    for k in range(steps + 1):
        log_J, log_1mJ, obj_J, obj_lo = _objective(model, theta, weights)
        if prev_log_odds is not None and rec.due(k - 1):
            rec.put(k - 1, log_odds_change=obj_lo - prev_log_odds)
            if per_prompt:
                rec.put_prompt(k - 1, log_odds_change=(log_J - log_1mJ) - prev_prompt_lo)
        prev_log_odds, prev_prompt_lo = obj_lo, log_J - log_1mJ
        if rec.due(k):
            rec.put(k, J=obj_J, log_odds=obj_lo, M=M.clone())
            if per_prompt:
                rec.put_prompt(k, J=log_J.exp().clamp(max=1.0), log_odds=log_J - log_1mJ, M=M_prompt.clone())
            if train_prompts is not None:
                rec.put(k, M_train=M_train.clone())
        if k == steps:
            break

        train_w = weights if train_prompts is None else train_prompts(k, log_J.exp(), generator)
        ctx = StepContext(k, steps, theta, model, train_w, constants, generator)
        dirn = direction(ctx)
        w = dirn.w
        per = model.along(theta, w, curvature=curvature)  # (R, C)
        obj = _first_prompt(per) if C == 1 else combine_prompts(per, weights)
        trn = obj if train_prompts is None else combine_prompts(per, train_w)
        w_norm = w.norm(dim=-1)
        eta = torch.as_tensor(step_size(ctx, trn, dirn), dtype=dtype).expand(R)
        if not bool(torch.isfinite(eta).all()) or bool((eta < 0).any()):
            _checks.fail(f"step size at step {k}", f"eta in [{eta.min().item():g}, {eta.max().item():g}]",
                         "finite step sizes >= 0 (check the rule's settings)")

        if rec.due(k):
            rec.put(k, delta_mu=obj.delta_mu, var_plus=obj.var_plus, var_minus=obj.var_minus, eta=eta, w_norm=w_norm)
            if curvature:
                rec.put(k, curv_plus=obj.curv_plus, curv_minus=obj.curv_minus)
            if train_prompts is not None:
                rec.put(k, train_J=trn.J, train_delta_mu=trn.delta_mu)
            if per_prompt:
                rec.put_prompt(k, delta_mu=per.delta_mu, var_plus=per.var_plus, var_minus=per.var_minus)
            for name, value in (dirn.metrics or {}).items():
                rec.put(k, **{name.replace("/", "_"): value})
            if dirn.samples is not None:
                mc = gap_stats_mc(dirn.samples.reward, proj=model.sample_proj(theta, w, dirn.samples))
                if C == 1:
                    rec.put(k, J_mc=mc.J[:, 0], delta_mu_mc=mc.delta_mu[:, 0], se_delta_mu_mc=mc.se_delta_mu[:, 0])
                if per_prompt:
                    rec.put_prompt(k, J_mc=mc.J, delta_mu_mc=mc.delta_mu)

        M += alignment_gain(obj.delta_mu, eta)
        M_prompt += alignment_gain(per.delta_mu, eta.unsqueeze(-1))
        M_train += alignment_gain(trn.delta_mu, eta)
        theta = theta + eta.unsqueeze(-1) * w
        if on_step is not None:
            on_step(1)
    return rec.trajectory(theta, constants, kernel="generic")
