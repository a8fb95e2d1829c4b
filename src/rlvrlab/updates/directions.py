"""Update directions w_k (eq. 3: theta <- theta + eta·w).

Every rule has the signature ``rule(ctx: StepContext, **options) -> Direction`` and trains on the
step's prompt distribution ctx.weights (the batch objective J = Σ_c weights_c J_c of Section 5).

    "gradient"             w = ∇J, exact and not normalized: the update of App. I.1 with fixed eta
    "normalized-gradient"  w = ∇J / ‖∇J‖ (w = 0 where ∇J = 0)
    "gap"                  w = (g+ - g-) / ‖g+ - g-‖, the Gradient Gap direction; by (9) and
                           Lemma 8 it is the normalized exact gradient
    "reinforce"            w = Σ_c weights_c (1/G) Σ_i A_i ∇log π(o_i | c) from G samples per
                           prompt, baseline "exact" (J_c), "mean" (group mean) or "loo" (RLOO);
                           optionally normalized
    "preset"               a preset of rlvrlab.updates.presets (GRPO, Dr. GRPO, DAPO, GSPO, ...) on
                           G samples per prompt: w = -∇loss at theta; with epochs > 1 the preset
                           takes that many steps of size lr on the batch (θ_old fixed) and
                           w = (θ_μ - θ)/lr, so that eta = lr reproduces them (its diagnostics
                           are those of the last inner step's loss, at θ_{μ-1})
    "expected"             a preset's update in expectation (G -> ∞) at θ = θ_old, exactly: e.g.
                           eq. (5) for GRPO, ∇J for REINFORCE (rlvrlab.policies.model.Model.expected_update);
                           presets with a token weighting (dapo-lowprob, ...) are refused: the
                           models do not compute it, so sample them with "preset"
    "prompt-adaptive"      §7: each prompt's contribution to a preset's expected update scaled
                           so that no prompt steps past its own critical step (apply with eta = lr)
    "prescribed"           w = fn(k, theta), a given sequence (the App. F constructions)
Both normalized directions are computed from the Gradient Gap (``Model.gap_vector``), which stays
exact when J(1-J) underflows (J within 1e-300 of 1), where ∇J itself rounds to 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rlvrlab import _checks
from rlvrlab.updates.context import Direction, StepContext, bind
from rlvrlab.updates.presets import Preset, get_preset, policy_loss

__all__ = ["DIRECTIONS", "make_direction", "unit_rows"]


def unit_rows(g: torch.Tensor) -> torch.Tensor:
    """Each row of g (..., d) scaled to norm 1; a zero row stays 0."""
    norm = g.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, g / norm.clamp(min=torch.finfo(g.dtype).tiny), torch.zeros_like(g))


def gradient(ctx: StepContext) -> Direction:
    """Exact policy gradient ∇J (eq. 4 with the exact baseline; App. I.1)."""
    return Direction(ctx.model.grad_J(ctx.theta, ctx.weights))


def normalized_gradient(ctx: StepContext) -> Direction:
    """∇J / ‖∇J‖: the paper's generic form w_k = ∇J/‖∇J‖ with eta_k = alpha‖∇J‖ (Section 2)."""
    return gap(ctx)


def gap(ctx: StepContext) -> Direction:
    """The normalized Gradient Gap g+ - g- (eq. 8): parallel to ∇J by (9) / Lemma 8."""
    return Direction(unit_rows(ctx.model.gap_vector(ctx.theta, ctx.weights)))


def _sampled_update(ctx: StepContext, preset: Preset, G: int, lr: float | None) -> Direction:
    """Sample G responses per prompt and apply ``preset``; see "preset" in the module docstring."""
    if not (isinstance(G, int) and G >= 2):
        _checks.fail("G", G, "an integer >= 2 (responses per prompt)")
    if preset.epochs > 1 and not (isinstance(lr, (int, float)) and lr > 0):
        _checks.fail("lr", lr, "the step size (> 0) of the preset's inner steps when epochs > 1")
    model, theta0 = ctx.model, ctx.theta.detach()
    batch = model.sample(theta0, G, ctx.generator)
    J = model.masses(theta0)[0].exp() if preset.advantage == "exact" else None
    theta, metrics, logp_old = theta0, {}, None
    for _ in range(preset.epochs):
        t = theta.detach().requires_grad_(True)
        logp = model.token_logp(t, batch)
        if logp_old is None:  # the first pass is at θ_old
            logp_old = logp.detach()
        loss, metrics = policy_loss(preset, logp, logp_old, batch.reward, batch.mask, weights=ctx.weights, J=J)
        grad = torch.autograd.grad(loss.sum(), t)[0]  # runs are independent: row r is run r's gradient
        if preset.epochs == 1:
            return Direction(-grad, batch, metrics)
        theta = theta - lr * grad
    return Direction((theta - theta0) / lr, batch, metrics)


BASELINES = ("exact", "mean", "loo")


def reinforce(ctx: StepContext, *, G: int, baseline: str = "loo", normalize: bool = True) -> Direction:
    """Sampled REINFORCE with G responses per prompt and a baseline (eq. 4)."""
    _checks.choose("baseline", baseline, BASELINES)
    d = _sampled_update(ctx, Preset(baseline, "pg", "seq-mean-token-sum"), G, None)
    return Direction(unit_rows(d.w) if normalize else d.w, d.samples, d.metrics)


def preset_update(ctx: StepContext, *, preset: str, G: int, lr: float | None = None, **overrides: Any) -> Direction:
    """A preset's sampled update (GRPO, Dr. GRPO, DAPO, GSPO, RLOO, REINFORCE)."""
    return _sampled_update(ctx, get_preset(preset, **overrides), G, lr)


def _exact_preset(preset: str, overrides: dict[str, Any]) -> Preset:
    """A preset the models' exact expected_update knows: it has no token weighting, whose
    expectation needs π_old of every token of every response, not just of every response."""
    spec = get_preset(preset, **overrides)
    if spec.weighting != "none":
        _checks.fail(f"preset '{preset}' weighting", spec.weighting,
                     "'none' for an exact expected update (the models do not compute token weightings); "
                     "use direction 'preset' to sample it")
    return spec


def expected(ctx: StepContext, *, preset: str, **overrides: Any) -> Direction:
    """A preset's expected update at θ = θ_old, computed exactly by the model (no token weighting)."""
    return Direction(ctx.model.expected_update(ctx.theta, ctx.weights, _exact_preset(preset, overrides)))


def prompt_adaptive(ctx: StepContext, *, preset: str, lr: float, fraction: float = 0.5, **overrides: Any) -> Direction:
    """§7's prompt-adaptive update: each prompt's contribution is scaled so that, at step size lr,
    it moves no further along its own direction than ``fraction`` of its own critical step.

    With w_c the preset's expected update restricted to prompt c (weights_c e_c) and
    a_c = eta_crit_second_order along w_c for prompt c (App. F, in units of w_c), the update is
    w = Σ_c min(1, fraction·a_c / lr)·w_c, to be applied with the fixed step lr. Exact (it uses the
    model's expected updates and statistics); the cross-effect of one prompt's contribution on
    another is not controlled.
    """
    from rlvrlab import theory

    if not (isinstance(lr, (int, float)) and lr > 0):
        _checks.fail("lr", lr, "the fixed step size (> 0) this direction will be applied with")
    if not 0 < fraction <= 1:
        _checks.fail("fraction", fraction, "a number in (0, 1]")
    spec = _exact_preset(preset, overrides)
    R, C = ctx.weights.shape
    d = ctx.theta.shape[-1]
    theta = ctx.theta.repeat_interleave(C, 0)  # (R·C, d): one row per (run, prompt)
    weights = torch.diag_embed(ctx.weights).reshape(R * C, C)
    contrib = ctx.model.expected_update(theta, weights, spec)  # (R·C, d)
    own = ctx.model.along(theta, contrib)  # (R·C, C) stats of every prompt along each contribution
    pick = lambda t: t.reshape(R, C, C).diagonal(dim1=1, dim2=2)  # noqa: E731  prompt c along w_c
    crit = torch.as_tensor(theory.eta_crit_second_order(pick(own.delta_mu).nan_to_num(0.0), pick(own.var_plus).nan_to_num(0.0),
                                                        pick(own.var_minus).nan_to_num(0.0)), dtype=theta.dtype)
    scale = (fraction * crit / lr).clamp(max=1.0)
    scale = torch.where((ctx.weights > 0) & torch.isfinite(scale), scale, (ctx.weights > 0).to(theta.dtype))
    w = (scale.unsqueeze(-1) * contrib.view(R, C, d)).sum(1)
    return Direction(w, None, {"adapt/mean_prompt_scale": (scale * (ctx.weights > 0)).sum(-1) / (ctx.weights > 0).sum(-1)})


def prescribed(ctx: StepContext, *, fn: Callable[[int, torch.Tensor], torch.Tensor]) -> Direction:
    """A given direction sequence: w_k = fn(k, theta_k), shape (R, d)."""
    return Direction(fn(ctx.k, ctx.theta))


DIRECTIONS: dict[str, Callable[..., Direction]] = {
    "gradient": gradient,
    "normalized-gradient": normalized_gradient,
    "gap": gap,
    "reinforce": reinforce,
    "preset": preset_update,
    "expected": expected,
    "prompt-adaptive": prompt_adaptive,
    "prescribed": prescribed,
}


def make_direction(name: str, **options: Any) -> Callable[[StepContext], Direction]:
    """The direction rule ``name`` with its options bound, e.g. make_direction("preset", preset="grpo", G=8)."""
    return bind("direction", DIRECTIONS, name, options)
