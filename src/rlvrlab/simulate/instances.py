"""Instances the experiments simulate: §6.1's linear contextual bandit with its curriculum, and the
token bandit (the step-size experiments' family) with the second-order prediction of where a step
overshoots on it.

§6.1 (Figure 1, App. I.2): contexts x ∈ [0, 1]^d, N arms scored s(x) = βᵀx (β standard normal),
reward 1 on the best arm, logits θᵀx with θ0 ~ N(0, scale²) (``contextual_bandit``). Each step
trains on one context per run drawn from a pool among those whose J lies in [low, high]
(``Curriculum``); the paper does not say what to do when there is none (at the start every J is
about 1/N), so the draw is then uniform over the pool, and counted.

The token bandit (``token_bandit``): C prompts with contexts x_c ~ U[-1, 1]^d; V tokens; prompt c's right token is τ_c = argmax_v (βᵀx_c)_v
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

The second-order prediction (App. F): along a preset's expected update w at θ, the log-odds change
Δμ·η + ½(Var+ − Var−)η² turns negative at η_crit = 2Δμ / (Var− − Var+) (theory.eta_crit_second_order),
for the objective (the prompts' statistics combined, gap.combine_prompts) and for each prompt.
"""

from __future__ import annotations

import math

import torch

from rlvrlab import theory
from rlvrlab.gap import combine_prompts
from rlvrlab.policies import LinearContextualSoftmax
from rlvrlab.policies.independent import CountReward, IndependentSoftmax
from rlvrlab.updates import get_preset

__all__ = ["PROMPT_FLOOR", "Curriculum", "contextual_bandit", "initial_theta", "predicted_critical_rates", "prompt_outcomes",
           "token_bandit"]


def contextual_bandit(runs: int, contexts: int, *, dim: int, arms: int, init_scale: float, generator: torch.Generator):
    """(policy, reward (R, C, N), θ0) of §6.1 for R = ``runs`` independent instances of C contexts
    in d = ``dim`` dimensions and N = ``arms`` arms."""
    X = torch.rand(runs, contexts, dim, generator=generator, dtype=torch.float64)  # (R, C, d)
    beta = torch.randn(runs, dim, arms, generator=generator, dtype=torch.float64)  # (R, d, N)
    best = (X @ beta).argmax(-1, keepdim=True)
    reward = torch.zeros(runs, contexts, arms, dtype=torch.float64).scatter_(-1, best, 1.0)
    policy = LinearContextualSoftmax(X, arms)
    theta0 = policy.init(runs, scale=init_scale, generator=generator)
    return policy, reward, theta0


class Curriculum:
    """simulate's train_prompts: one training context per run, uniform among the first ``pool``
    contexts with J in [low, high], or over the whole pool when none is (counted in ``fallbacks``)."""

    def __init__(self, pool: int, low: float, high: float):
        self.pool, self.low, self.high = pool, low, high
        self.fallbacks = 0

    def __call__(self, k: int, J: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        R, C = J.shape
        eligible = (J[:, : self.pool] >= self.low) & (J[:, : self.pool] <= self.high)
        none = ~eligible.any(1)
        self.fallbacks += int(none.sum())
        eligible[none] = True
        choice = torch.multinomial(eligible.to(J.dtype), 1, generator=generator)  # (R, 1) uniform over eligible
        return torch.zeros(R, C, dtype=J.dtype).scatter_(1, choice, 1.0)  # (R, C) weights on one context

PROMPT_FLOOR = 0.01  # a prompt whose success rate ends below this is lost


def token_bandit(seed: int, length: int, *, prompts: int, dim: int, vocab: int, rho: float):
    """(policy, reward, beta) for one random instance with C = ``prompts``, T = ``length``,
    d = ``dim``, V = ``vocab``; the same seed gives the same contexts and β for every length."""
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


def predicted_critical_rates(model, theta: torch.Tensor, preset: str = "grpo") -> tuple[float, float]:
    """Second-order critical step sizes of ``preset``'s expected update at θ (1, d), prompts weighted
    equally: (objective, prompt level). The objective's uses the prompts' statistics combined; the
    prompt level is the smallest over the prompts whose alignment Δμ_c is positive (a prompt the
    step does not help has no step to overshoot). inf where the second order predicts no threshold
    (Var− <= Var+)."""
    weights = torch.full((1, model.n_prompts), 1.0 / model.n_prompts, dtype=torch.float64)
    w = model.expected_update(theta, weights, get_preset(preset))
    per = model.along(theta, w)  # per prompt, batch shape (1, C)
    obj = combine_prompts(per, weights)
    crit_obj = float(theory.eta_crit_second_order(obj.delta_mu, obj.var_plus, obj.var_minus))
    crit_p = torch.as_tensor(theory.eta_crit_second_order(per.delta_mu.nan_to_num(0.0), per.var_plus.nan_to_num(0.0),
                                                          per.var_minus.nan_to_num(0.0)))
    crit_p = torch.where(per.delta_mu > 0, crit_p, torch.full_like(crit_p, math.inf))
    return crit_obj, float(crit_p.min())
