"""Update directions w_k for enumerable policies (eq. 3: theta <- theta + eta·w).

Every rule has the signature ``rule(ctx: StepContext, **options) -> Direction`` and trains on the
step's prompt distribution ctx.weights (the batch objective J = Σ_c weights_c J_c of Section 5).

    "gradient"             w = ∇J, exact and not normalized: the update of App. I.1 with fixed eta
    "normalized-gradient"  w = ∇J / ‖∇J‖ (w = 0 where ∇J = 0)
    "gap"                  w = (g+ - g-) / ‖g+ - g-‖, the Gradient Gap direction; by (9) and
                           Lemma 8 it is the normalized exact gradient
Both normalized directions are computed from the Gradient Gap (``EnumerablePolicy.gap_vector``),
which stays exact when J(1-J) underflows (J within 1e-300 of 1), where ∇J itself rounds to 0.
    "reinforce"            w = Σ_c weights_c (1/G) Σ_i A_i ∇log π(o_i | c) from G samples per
                           prompt, baseline "exact" (J_c), "mean" (group mean) or "loo"
                           (leave-one-out mean, RLOO); optionally normalized
    "prescribed"           w = fn(k, theta), a given sequence (the App. F constructions)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rlvrlab import _checks
from rlvrlab.updates.context import Direction, Samples, StepContext, bind

__all__ = ["DIRECTIONS", "make_direction"]


def _normalize(g: torch.Tensor) -> torch.Tensor:
    norm = g.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, g / norm.clamp(min=torch.finfo(g.dtype).tiny), torch.zeros_like(g))


def gradient(ctx: StepContext) -> Direction:
    """Exact policy gradient ∇J (eq. 4 with the exact baseline; App. I.1)."""
    return Direction(ctx.policy.grad_J(ctx.theta, ctx.reward, ctx.weights))


def normalized_gradient(ctx: StepContext) -> Direction:
    """∇J / ‖∇J‖: the paper's generic form w_k = ∇J/‖∇J‖ with eta_k = alpha‖∇J‖ (Section 2)."""
    return gap(ctx)


def gap(ctx: StepContext) -> Direction:
    """The normalized Gradient Gap g+ - g- (eq. 8): parallel to ∇J by (9) / Lemma 8."""
    return Direction(_normalize(ctx.policy.gap_vector(ctx.theta, ctx.reward, ctx.weights)))


BASELINES = ("exact", "mean", "loo")


def reinforce(ctx: StepContext, *, G: int, baseline: str = "loo", normalize: bool = True) -> Direction:
    """Sampled REINFORCE with G responses per prompt and a baseline (eq. 4)."""
    if not (isinstance(G, int) and G >= 2):
        _checks.fail("G", G, "an integer >= 2 (responses per prompt)")
    _checks.choose("baseline", baseline, BASELINES)
    R, C, N = ctx.logp.shape[0], ctx.weights.shape[-1], ctx.logp.shape[-1]
    # A policy shared by all prompts (n_prompts = 1) draws G independent responses for each prompt.
    idx = ctx.policy.sample(ctx.theta, G * (C // ctx.policy.n_prompts), ctx.generator).view(R, C, G)
    reward = ctx.reward.expand(R, C, N).gather(-1, idx)  # (R, C, G)
    if baseline == "exact":
        b = (ctx.logp.exp() * ctx.reward).sum(-1, keepdim=True).expand(R, C, 1)
    elif baseline == "mean":
        b = reward.mean(-1, keepdim=True)
    else:
        b = (reward.sum(-1, keepdim=True) - reward) / (G - 1)
    adv = (reward - b) * ctx.weights.unsqueeze(-1) / G  # (R, C, G)
    v = torch.zeros(R, C, N, dtype=ctx.theta.dtype).scatter_add_(-1, idx, adv.to(ctx.theta.dtype))
    if ctx.policy.n_prompts == 1 and C > 1:
        v = v.sum(1, keepdim=True)
    w = ctx.policy.vjp(ctx.theta, v)
    return Direction(_normalize(w) if normalize else w, Samples(idx, reward))


def prescribed(ctx: StepContext, *, fn: Callable[[int, torch.Tensor], torch.Tensor]) -> Direction:
    """A given direction sequence: w_k = fn(k, theta_k), shape (R, d)."""
    return Direction(fn(ctx.k, ctx.theta))


DIRECTIONS: dict[str, Callable[..., Direction]] = {
    "gradient": gradient,
    "normalized-gradient": normalized_gradient,
    "gap": gap,
    "reinforce": reinforce,
    "prescribed": prescribed,
}


def make_direction(name: str, **options: Any) -> Callable[[StepContext], Direction]:
    """The direction rule ``name`` with its options bound, e.g. make_direction("reinforce", G=8)."""
    return bind("direction", DIRECTIONS, name, options)
