"""The instance family of the step-size experiments: §6.1's contextual bandit, one token per step.

C prompts with contexts x_c ~ U[-1, 1]^d; V tokens; prompt c's right token is τ_c = argmax_v (βᵀx_c)_v
with β standard normal (d × V). A response is T tokens drawn independently from softmax(θᵀx_c),
θ of shape (d, V) shared by all prompts, and passes when at least m = ⌈ρT⌉ of its tokens are τ_c.
T = 1, m = 1 is the contextual bandit of §6.1 (without its curriculum), except that §6.1 draws
contexts from [0, 1]^d: with only V = 4 tokens that often gives most prompts the same right token
(no competition between prompts), which centred contexts avoid.

Why this family: with the tabular or single-prompt policies of rlvrlab.policies, exact policy
gradients never lower J, whatever the step (a correct token's logit always gains most), so no
step-size threshold exists to measure. Shared parameters across prompts make prompts compete
(Section 7: a step safe for one prompt overshoots another), and the shared per-token logits make
a response's score grow with T, the regime of the token-level theory (Section 4).

θ0 = κ·β with κ set by bisection so that the mean J over prompts is J0: every prompt leans towards
(κ > 0) or away from (κ < 0) its own right token, more or less depending on its context.
"""

from __future__ import annotations

import math

import torch

from rlvrlab.policies.independent import CountReward, IndependentSoftmax

__all__ = ["PROMPT_FLOOR", "initial_theta", "instance", "prompt_outcomes"]

PROMPT_FLOOR = 0.01  # a prompt whose success rate ends below this is lost


def instance(seed: int, length: int, *, prompts: int, dim: int, vocab: int, rho: float):
    """(policy, reward, beta) for one random instance; the same seed gives the same contexts and β
    for every length."""
    gen = torch.Generator().manual_seed(seed)
    X = 2 * torch.rand(prompts, dim, generator=gen, dtype=torch.float64) - 1
    beta = torch.randn(dim, vocab, generator=gen, dtype=torch.float64)
    target = (X @ beta).argmax(-1)  # (C,)
    # φ(c, t, v) = x_c ⊗ e_v at every position t: logits θᵀx_c, shared over positions.
    phi = torch.einsum("cd,vw->cvdw", X, torch.eye(vocab, dtype=torch.float64)).reshape(prompts, vocab, dim * vocab)
    policy = IndependentSoftmax(vocab, length, features=phi.unsqueeze(1).expand(prompts, length, vocab, dim * vocab))
    m = max(1, math.ceil(rho * length))
    reward = CountReward(target.unsqueeze(1).expand(prompts, length).contiguous(), m)
    return policy, reward, beta


def initial_theta(policy: IndependentSoftmax, reward: CountReward, beta: torch.Tensor, J0: float) -> torch.Tensor:
    """θ0 = κ·β (1, d·V) with the mean J over prompts equal to J0 (bisection on κ; mean J grows with κ)."""
    model = policy.bind(reward)

    def mean_J(kappa: float) -> float:
        log_J, _ = model.masses((kappa * beta).reshape(1, -1))
        return float(log_J.exp().mean())

    lo, hi = -1.0, 1.0  # κ < 0 leans away from the right tokens: J below the uniform policy's
    while mean_J(hi) < J0 and hi < 1e4:
        hi *= 2
    while mean_J(lo) > J0 and lo > -1e4:
        lo *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_J(mid) < J0 else (lo, mid)
    return ((lo + hi) / 2 * beta).reshape(1, -1)


def prompt_outcomes(traj) -> dict[str, list[int]]:
    """Per run, the prompts collapsed during training (J_c ends below PROMPT_FLOOR from above it) and
    those that never started (below it throughout)."""
    Jc, Jc0 = traj.prompt_metrics["J"][-1].numpy(), traj.prompt_metrics["J"][0].numpy()  # (R, C)
    lost = Jc < PROMPT_FLOOR
    return {"collapsed_prompts": (lost & (Jc0 >= PROMPT_FLOOR)).sum(1).tolist(),
            "never_started_prompts": (lost & (Jc0 < PROMPT_FLOOR)).sum(1).tolist()}
