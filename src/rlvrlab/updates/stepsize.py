"""Step-size rules eta_k (eq. 3), one signature: ``rule(ctx, stats, direction, **options) -> eta (R,)``.

stats are the exact GapStats of the step's training objective along w (batch shape (R,));
direction is the Direction the step takes (w (R, d), and for sampled updates the batch). Rules:

    "fixed"         eta_k = eta (a number, or one per run)
    "cosine"        eta_k = eta_min + (eta - eta_min)(1 + cos(pi k / K)) / 2, the schedule GRPO
                    is usually trained with (Section 2)
    "condition-13a" eta_k = fraction · min{[Delta_mu]_+ / (2(L_o + 8G_o²)), 1/(2 sqrt(L_o))}:
                    inside Theorem 1(b)'s condition, so the logistic bound (13b) must hold
    "condition-15a" eta_k = fraction · (15a) with J_k and the psi_1 norm of the response length:
                    Theorem 3's condition, so (15b) must hold. T_psi1 "current" uses the psi_1
                    norm under pi_k (all that Lemma 2's proof uses, eq. 46b), "uniform" the bound
                    T_inf / log 2 valid for every policy (Assumption 3)
    "gap-adaptive"  eta_k = fraction · the second-order critical step along w (App. F), from
                    exact statistics or from the step's own samples, capped by (18) (its G_p²
                    measured along the step) or (15a)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from rlvrlab import _checks, theory
from rlvrlab.gap import GapStats, combine_prompts, gap_stats_mc
from rlvrlab.updates.context import Direction, StepContext, bind

__all__ = ["STEP_SIZES", "make_step_size"]


def _per_run(value: float | torch.Tensor, ctx: StepContext) -> torch.Tensor:
    R = ctx.theta.shape[0]
    return torch.as_tensor(value, dtype=ctx.theta.dtype).expand(R).clone()


def _check_eta(eta: float | torch.Tensor, field: str = "eta") -> None:
    _checks.finite_nonneg(field, eta)


def fixed(ctx: StepContext, stats: GapStats, direction: Direction, *, eta: float | torch.Tensor) -> torch.Tensor:
    """A constant step size (checked once, when the rule is made)."""
    return _per_run(eta, ctx)


def cosine(ctx: StepContext, stats: GapStats, direction: Direction, *, eta: float | torch.Tensor,
           eta_min: float = 0.0) -> torch.Tensor:
    """Cosine decay from eta to eta_min over the run."""
    frac = 0.5 * (1 + math.cos(math.pi * ctx.k / max(ctx.steps, 1)))
    return _per_run(eta_min + (torch.as_tensor(eta, dtype=torch.float64) - eta_min) * frac, ctx)


def _fraction(fraction: float) -> None:
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        _checks.fail("fraction", fraction, "a number in (0, 1]")


def condition_13a(ctx: StepContext, stats: GapStats, direction: Direction, *, fraction: float = 1.0) -> torch.Tensor:
    """Theorem 1(b): a step inside (13a) and inside Lemma 1's premise eta <= 1/(2 sqrt(L_o))."""
    _fraction(fraction)
    c = ctx.constants
    eta = theory.step_condition_trajectory(stats.delta_mu.nan_to_num(0.0), c.L_o, c.G_o)
    cap = torch.as_tensor(theory.smoothness_step_cap(c.L_o), dtype=torch.float64)  # not the default float32
    return fraction * torch.minimum(eta, cap).to(ctx.theta.dtype)


T_PSI1_MODES = ("current", "uniform")


def current_psi1(ctx: StepContext) -> torch.Tensor:
    """psi_1 norm of the response length under pi_k, per run (the largest over prompts)."""
    return ctx.model.length_psi1(ctx.theta)


def condition_15a(ctx: StepContext, stats: GapStats, direction: Direction, *, fraction: float = 1.0,
                  T_psi1: str = "current") -> torch.Tensor:
    """Theorem 3: a step inside the token-level condition (15a)."""
    _fraction(fraction)
    _checks.choose("T_psi1", T_psi1, T_PSI1_MODES)
    c = ctx.constants
    tpsi = current_psi1(ctx) if T_psi1 == "current" else torch.tensor(c.T_inf / math.log(2), dtype=torch.float64)
    J = stats.J.clamp(0, 1)
    eta = theory.step_condition_token(stats.delta_mu.nan_to_num(0.0), J, c.L_p, c.G_p, c.T_inf, tpsi)
    return (fraction * eta).to(ctx.theta.dtype)


ESTIMATES = ("exact", "samples")
CAPS = ("18", "15a", "none")


def _estimates(ctx: StepContext, stats: GapStats, direction: Direction, estimate: str):
    """Along w: J, delta_mu, var_plus, var_minus, the curvature gap, and the mean squared token score
    g2 (the scale G_p² stands for in eq. 18, measured along the step): exact, or from the step's batch."""
    w = direction.w
    if estimate == "exact":
        full = ctx.model.along(ctx.theta, w, curvature=True)
        per = combine_prompts(full, ctx.weights)
        J = per.J
        # For logits linear in theta, -w'∇²log π(o) w = Σ_t Var_π(h_w) over o's tokens: per token, the
        # mean squared token score along w (its mean is 0).
        curv = J * per.curv_plus.nan_to_num(0.0) + (1 - J) * per.curv_minus.nan_to_num(0.0)
        g2 = -curv / ctx.model.mean_length(ctx.theta)
        return J, stats.delta_mu, stats.var_plus, stats.var_minus, per.curv_plus - per.curv_minus, g2
    if direction.samples is None:
        _checks.fail("estimate", "'samples'", "a sampled direction (reinforce, preset), or estimate='exact'")
    batch = direction.samples
    tokens = ctx.model.sample_token_proj(ctx.theta, w, batch)  # (R, C, G, T)
    keep = (ctx.weights > 0).unsqueeze(-1).expand(batch.reward.shape)  # the prompts this step trained on
    R = tokens.shape[0]
    mc = gap_stats_mc(batch.reward.reshape(R, -1), proj=tokens.sum(-1).reshape(R, -1), mask=keep.reshape(R, -1))
    m = (batch.mask & keep.unsqueeze(-1)).to(tokens.dtype)
    g2 = (tokens**2 * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp(min=1)
    return mc.J, mc.delta_mu, mc.var_plus, mc.var_minus, torch.zeros_like(mc.J), g2


def gap_adaptive(ctx: StepContext, stats: GapStats, direction: Direction, *, fraction: float = 0.5,
                 estimate: str = "exact", cap: str = "18", cap_scale: float = 1.0, eta_max: float | None = None,
                 eta_min: float = 0.0) -> torch.Tensor:
    """eta_k = fraction · eta_crit, the second-order critical step along w (App. F), capped by the theory.

    eta_crit = 2·Delta_mu / (Var- - Var+ - curvature gap), all along w (theory.eta_crit_second_order);
    fraction = 1/2 maximizes the second-order gain of one step. With estimate="samples" every
    quantity comes from the step's own batch (what a trainer without enumeration can know). The cap
    keeps the step along the unit direction u = w/‖w‖ inside the theory's length- and success-aware
    scale:
        "18"   eta·‖w‖ <= cap_scale · Delta_mu_u (1 - J) / (g2_u T_psi1)   eq. (18), with the G_p² that
               (18) absorbs into its constant measured along u: g2_u, the mean squared token score
        "15a"  eta·‖w‖ <= condition (15a) with the model's worst-case constants (very conservative)
        "none" only eta_max.
    Where Delta_mu <= 0 (or its estimate is undefined) the step is eta_min: do no harm.
    """
    _fraction(fraction)
    _checks.choose("estimate", estimate, ESTIMATES)
    _checks.choose("cap", cap, CAPS)
    if cap == "none" and eta_max is None:
        _checks.fail("eta_max", None, "a finite eta_max when cap='none' (eta_crit can be infinite)")
    J, dm, vp, vm, curv, g2 = _estimates(ctx, stats, direction, estimate)
    crit = torch.as_tensor(theory.eta_crit_second_order(dm.nan_to_num(0.0), vp.nan_to_num(0.0), vm.nan_to_num(0.0),
                                                        curv.nan_to_num(0.0)), dtype=ctx.theta.dtype)
    eta = fraction * crit
    w_norm = direction.w.norm(dim=-1).clamp(min=1e-300)
    dm_unit = dm / w_norm
    J = J.nan_to_num(0.0).clamp(0, 1)
    psi1 = ctx.model.length_psi1(ctx.theta)
    if cap == "18":
        g2_unit = g2 / w_norm**2
        bound = cap_scale * dm_unit * (1 - J) / (g2_unit.clamp(min=1e-300) * psi1)
        eta = torch.minimum(eta, bound / w_norm)
    elif cap == "15a":
        c = ctx.constants
        bound = theory.step_condition_token(dm_unit.nan_to_num(0.0), J, c.L_p, c.G_p, c.T_inf, psi1)
        eta = torch.minimum(eta, bound / w_norm)
    if eta_max is not None:
        eta = eta.clamp(max=eta_max)
    signal = torch.isfinite(dm) & (dm > 0) & (direction.w.norm(dim=-1) > 0)
    return torch.where(signal & torch.isfinite(eta), eta, torch.full_like(eta, eta_min)).clamp(min=eta_min).to(ctx.theta.dtype)


STEP_SIZES: dict[str, Callable[..., torch.Tensor]] = {
    "fixed": fixed,
    "cosine": cosine,
    "condition-13a": condition_13a,
    "condition-15a": condition_15a,
    "gap-adaptive": gap_adaptive,
}


def make_step_size(name: str, **options: Any) -> Callable[[StepContext, GapStats, Direction], torch.Tensor]:
    """The step-size rule ``name`` with its options bound, e.g. make_step_size("fixed", eta=0.1)."""
    for key in ("eta", "eta_min"):
        if key in options:
            _check_eta(options[key], key)
    return bind("step size", STEP_SIZES, name, options)
