"""Instances the experiments simulate: §6.1's linear contextual bandit with its curriculum, the
token bandit (the step-size experiments' family) with the second-order prediction of where a step
overshoots on it, the paper's worked examples (App. E's two responses, App. F's collapse
instances) and the random instances the inequalities are counted on.

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

App. E (``two_response``): a softmax over one correct and one incorrect response, θ0 = (l/2, −l/2)
with l = logit J0. App. F (``collapse_instance``, ``collapse_theta0``, ``collapse_direction``):
three responses (F.1) or tokens (F.2, the all-o1 sequence of length T_inf correct) with features
(G/2)·(0,1), (G/2)·(1,0), (G/2)·(−1,0), θ0 = (η/3)(−1, 0) and w_k = (1/3)((−1)^k·2, −δ), exactly as
in the proofs of Theorems 2 and 4 (J(k) in closed form: theory.collapse_J).

``random_instances``: tabular bandits, trajectory-level feature softmax, a multi-prompt contextual
bandit and token-level policies (tabular per position with EOS, tabular per prefix, shared linear
features), with random parameters and random pass/fail sets, every one with both outcomes present.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from rlvrlab import theory
from rlvrlab.gap import combine_prompts
from rlvrlab.policies import EnumerablePolicy, FeatureSoftmax, LinearContextualSoftmax, TabularSoftmax, TokenSoftmax
from rlvrlab.policies.independent import CountReward, IndependentSoftmax
from rlvrlab.updates import Preset, get_preset, make_direction

__all__ = ["PROMPT_FLOOR", "Curriculum", "RandomInstance", "collapse_direction", "collapse_features", "collapse_instance",
           "collapse_theta0", "contextual_bandit", "initial_theta", "predicted_critical_rates", "prompt_outcomes",
           "random_instances", "token_bandit", "two_response"]


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


def predicted_critical_rates(model, theta: torch.Tensor, preset: str | Preset = "grpo") -> tuple[float, float]:
    """Second-order critical step sizes of ``preset``'s expected update at θ (1, d) (a preset name, or
    a Preset with its settings, e.g. Dr. GRPO's normalizer), prompts weighted equally: (objective,
    prompt level). The objective's uses the prompts' statistics combined; the
    prompt level is the smallest over the prompts whose alignment Δμ_c is positive (a prompt the
    step does not help has no step to overshoot). inf where the second order predicts no threshold
    (Var− <= Var+)."""
    weights = torch.full((1, model.n_prompts), 1.0 / model.n_prompts, dtype=torch.float64)
    w = model.expected_update(theta, weights, get_preset(preset) if isinstance(preset, str) else preset)
    per = model.along(theta, w)  # per prompt, batch shape (1, C)
    obj = combine_prompts(per, weights)
    crit_obj = float(theory.eta_crit_second_order(obj.delta_mu, obj.var_plus, obj.var_minus))
    crit_p = torch.as_tensor(theory.eta_crit_second_order(per.delta_mu.nan_to_num(0.0), per.var_plus.nan_to_num(0.0),
                                                          per.var_minus.nan_to_num(0.0)))
    crit_p = torch.where(per.delta_mu > 0, crit_p, torch.full_like(crit_p, math.inf))
    return crit_obj, float(crit_p.min())


def two_response(J0: torch.Tensor) -> tuple[TabularSoftmax, torch.Tensor, torch.Tensor]:
    """(policy, reward (1, 2), θ0 (R, 2)) of App. E for R = len(J0) runs: a softmax over the correct
    response (reward 1) and the incorrect one, θ0 = (l/2, −l/2) with l = logit J0, so that J(0) = J0."""
    logit = theory.log_odds(J0)
    theta0 = torch.stack([logit / 2, -logit / 2], dim=1)
    return TabularSoftmax(2), torch.tensor([[1.0, 0.0]], dtype=torch.float64), theta0


def collapse_features(G: float) -> torch.Tensor:
    """φ(o1), φ(o-1), φ(o-2) of App. F (3, 2): (G/2)·(0,1), (G/2)·(1,0), (G/2)·(-1,0)."""
    return G / 2 * torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)


def collapse_instance(G: float, T_inf: int | None = None) -> tuple[EnumerablePolicy, torch.Tensor]:
    """(policy, reward (1, N)) of App. F: F.1 (three responses, o1 correct) when T_inf is None, else
    F.2 (three tokens, no EOS, T_inf positions; only the all-o1 response correct)."""
    phi = collapse_features(G)
    if T_inf is None:
        return FeatureSoftmax(phi), torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    policy = TokenSoftmax(3, T_inf, eos=None, parametrization="linear", features=phi)
    reward = (policy.tokens == 0).all(1).to(torch.float64).unsqueeze(0)  # the all-o1 response
    return policy, reward


def collapse_theta0(eta: torch.Tensor) -> torch.Tensor:
    """θ0 = (η/3)(−1, 0) (eq. 51, 56), one row per run: eta (R,) -> (R, 2)."""
    return torch.stack([-eta / 3, torch.zeros_like(eta)], dim=1)


def collapse_direction(delta: torch.Tensor) -> Callable:
    """simulate's direction w_k = (1/3)((−1)^k·2, −δ) (eq. 53, 58), one δ per run (R,)."""

    def fn(k: int, theta: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.full_like(delta, 2.0 * (-1) ** k), -delta], dim=1) / 3

    return make_direction("prescribed", fn=fn)


class RandomInstance(NamedTuple):
    """One random instance: its name, the policy, the reward (C, N) and whether it is token-level."""

    name: str
    policy: EnumerablePolicy
    reward: torch.Tensor
    token_level: bool


def random_instances(generator: torch.Generator) -> list[RandomInstance]:
    """Seven instances with random features and pass/fail sets (each about 40% correct, at least one
    correct and one incorrect response per prompt), drawn from ``generator``: bandits with K = 3
    and 10 arms, a feature softmax (N = 6, d = 3), a contextual softmax (C = 4, N = 5), and token
    policies: V = 3, T = 3 per position with EOS; V = 2, T = 4 per prefix; V = 3, T = 3 linear."""
    gen = generator

    def split(n: int, c: int = 1) -> torch.Tensor:
        r = (torch.rand(c, n, generator=gen) < 0.4).to(torch.float64)
        r[:, 0], r[:, 1] = 1.0, 0.0  # both sides present
        return r[:, torch.randperm(n, generator=gen)]

    out = [
        RandomInstance("bandit K=3", TabularSoftmax(3), split(3), False),
        RandomInstance("bandit K=10", TabularSoftmax(10), split(10), False),
        RandomInstance("features N=6 d=3", FeatureSoftmax(torch.randn(6, 3, generator=gen, dtype=torch.float64)), split(6), False),
        RandomInstance("contextual C=4 N=5", LinearContextualSoftmax(torch.rand(4, 3, generator=gen, dtype=torch.float64), 5),
                       split(5, 4), False),
    ]
    for name, pol in (
        ("token V=3 T=3 EOS position", TokenSoftmax(3, 3, eos=0, parametrization="position")),
        ("token V=2 T=4 prefix", TokenSoftmax(2, 4, parametrization="prefix")),
        ("token V=3 T=3 linear", TokenSoftmax(3, 3, parametrization="linear", features=torch.randn(3, 2, generator=gen, dtype=torch.float64))),
    ):
        out.append(RandomInstance(name, pol, split(pol.n_responses), True))
    return out

