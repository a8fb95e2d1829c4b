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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from rlvrlab import _checks, theory
from rlvrlab.gap import GapStats
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


STEP_SIZES: dict[str, Callable[..., torch.Tensor]] = {
    "fixed": fixed,
    "cosine": cosine,
    "condition-13a": condition_13a,
    "condition-15a": condition_15a,
}


def make_step_size(name: str, **options: Any) -> Callable[[StepContext, GapStats, Direction], torch.Tensor]:
    """The step-size rule ``name`` with its options bound, e.g. make_step_size("fixed", eta=0.1)."""
    for key in ("eta", "eta_min"):
        if key in options:
            _check_eta(options[key], key)
    return bind("step size", STEP_SIZES, name, options)
