"""rlvrlab.simulate.instances: §6.1's contextual bandit and its curriculum on worked examples; the
token bandit's construction, θ0 at the asked mean success rate (against the binomial closed form
of J), the prompt outcomes on a worked trajectory, and the second-order critical rates against a
plain loop over the tokens of a T = 1 instance; App. E's and App. F's instances as the paper
writes them (simulated under App. F's direction, J follows theory.collapse_J); the random instances
of the bounds experiment."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlvrlab import simulate as simulate_package
from rlvrlab import theory
from rlvrlab.policies import FeatureSoftmax, TabularSoftmax, TokenSoftmax
from rlvrlab.simulate import simulate
from rlvrlab.simulate.instances import (PROMPT_FLOOR, Curriculum, RandomInstance, collapse_direction, collapse_features,
                                        collapse_instance, collapse_theta0, contextual_bandit, initial_theta,
                                        predicted_critical_rates, prompt_outcomes, random_instances, token_bandit,
                                        two_response)
from rlvrlab.simulate.instances import __all__ as INSTANCES_API
from rlvrlab.updates import get_preset

SIZES = dict(prompts=6, dim=3, vocab=4)


def test_contextual_bandit_rewards_the_best_arm_of_each_context():
    policy, reward, theta0 = contextual_bandit(2, 7, dim=3, arms=5, init_scale=0.0, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(2, 7, 3, generator=gen, dtype=torch.float64)
    beta = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    assert reward.shape == (2, 7, 5) and torch.equal(reward.sum(-1), torch.ones(2, 7))
    for r in range(2):
        for c in range(7):
            scores = [float(X[r, c] @ beta[r, :, n]) for n in range(5)]
            assert reward[r, c, scores.index(max(scores))] == 1
    assert torch.equal(theta0, torch.zeros_like(theta0))  # scale 0: the uniform policy, J = 1/N
    assert torch.allclose(policy.logp(theta0).exp(), torch.full((2, 7, 5), 0.2, dtype=torch.float64))


def test_curriculum_draws_among_eligible_pool_contexts_and_counts_fallbacks():
    pick = Curriculum(pool=4, low=0.2, high=0.8)
    J = torch.tensor([[0.1, 0.5, 0.9, 0.3, 0.5],    # eligible: contexts 1 and 3 (4 is outside the pool)
                      [0.0, 0.9, 0.95, 0.1, 0.5]],  # none eligible: the whole pool
                     dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(2, 5)
    for k in range(4000):
        w = pick(k, J, gen)
        assert torch.equal(w.sum(1), torch.ones(2, dtype=torch.float64))  # one context per run
        counts += w
    assert pick.fallbacks == 4000  # run 1, every step
    assert counts[0, [0, 2, 4]].sum() == 0 and counts[1, 4] == 0
    assert torch.allclose(counts[0, [1, 3]] / 4000, torch.full((2,), 0.5), atol=0.03)  # uniform: ±4 SE
    assert torch.allclose(counts[1, :4] / 4000, torch.full((4,), 0.25), atol=0.03)


def _contexts(seed: int, prompts: int, dim: int, vocab: int):
    """The instance's draws, repeated: X ~ U[-1, 1]^(C × d), β ~ N(0, 1)^(d × V)."""
    gen = torch.Generator().manual_seed(seed)
    X = 2 * torch.rand(prompts, dim, generator=gen, dtype=torch.float64) - 1
    return X, torch.randn(dim, vocab, generator=gen, dtype=torch.float64)


def _J_binomial(theta: torch.Tensor, X: torch.Tensor, target: torch.Tensor, T: int, m: int) -> list[float]:
    """J_c = P(at least m of T independent tokens are τ_c), p_c = softmax(θᵀx_c)[τ_c]."""
    probs = torch.softmax(X @ theta.reshape(X.shape[1], -1), -1)
    out = []
    for c in range(X.shape[0]):
        p = float(probs[c, target[c]])
        out.append(sum(math.comb(T, k) * p**k * (1 - p) ** (T - k) for k in range(m, T + 1)))
    return out


@pytest.mark.parametrize("T, rho", [(1, 0.5), (4, 0.5), (5, 0.3)])
def test_token_bandit_targets_threshold_and_shared_draws(T, rho):
    policy, reward, beta = token_bandit(3, T, rho=rho, **SIZES)
    X, beta_ref = _contexts(3, **SIZES)
    assert torch.equal(beta, beta_ref)  # the same seed: the same contexts and β for every length
    assert reward.threshold == max(1, math.ceil(rho * T))
    assert reward.targets.shape == (6, T) and torch.equal(reward.targets[:, 0], (X @ beta).argmax(-1))
    assert (policy.vocab, policy.length, policy.n_params) == (4, T, 3 * 4)


@pytest.mark.parametrize("J0", [0.05, 0.3, 0.8])
@pytest.mark.parametrize("T", [1, 4])
def test_initial_theta_has_the_mean_success_rate_asked(J0, T):
    policy, reward, beta = token_bandit(0, T, rho=0.5, **SIZES)
    theta = initial_theta(policy, reward, beta, J0)
    assert theta.shape == (1, 12)
    kappa = (theta.reshape(3, 4) / beta).flatten()
    assert torch.allclose(kappa, kappa[0].expand_as(kappa))  # θ0 = κ·β
    X, _ = _contexts(0, **SIZES)
    J = _J_binomial(theta, X, reward.targets[:, 0], T, reward.threshold)
    assert np.mean(J) == pytest.approx(J0, abs=1e-9)


def test_prompt_outcomes_worked_example():
    # 2 runs × 3 prompts; J_c at the first and the last recorded step
    first = torch.tensor([[0.5, 0.005, 0.2], [0.001, 0.3, 0.9]])
    last = torch.tensor([[0.002, 0.001, 0.99], [0.0, 0.009, 0.95]])
    traj = SimpleNamespace(prompt_metrics={"J": torch.stack([first, (first + last) / 2, last])})
    assert PROMPT_FLOOR == 0.01
    assert prompt_outcomes(traj) == {"collapsed_prompts": [1, 1], "never_started_prompts": [1, 1]}


def _grpo_reference(theta: torch.Tensor, X: torch.Tensor, target: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """T = 1: GRPO's expected update w = (1/C) Σ_c E[(r - J_c)/σ_c ∇log π(v|c)] and the second-order
    critical steps along it, by loops over prompts and tokens."""
    C, d = X.shape
    V = theta.numel() // d
    probs = torch.softmax(X @ theta.reshape(d, V), -1)
    w = torch.zeros(d, V, dtype=torch.float64)
    for c in range(C):
        J = float(probs[c, target[c]])
        sigma = math.sqrt(J * (1 - J))
        for v in range(V):
            grad = torch.outer(X[c], torch.eye(V, dtype=torch.float64)[v] - probs[c])  # ∇_θ log π(v|c)
            w += float(probs[c, v]) * (float(v == int(target[c])) - J) / sigma * grad / C
    per, plus, minus = [], [], []  # plus/minus: (P(c) P(side|c), mean, variance) per prompt
    for c in range(C):
        h = X[c] @ w  # (V,) the logits' change along w
        s = h - (probs[c] * h).sum()  # s(v) = w·∇log π(v|c)
        tau, J = int(target[c]), float(probs[c, target[c]])
        others = [v for v in range(V) if v != tau]
        m_minus = sum(float(probs[c, v] * s[v]) for v in others) / (1 - J)
        v_minus = sum(float(probs[c, v]) * (float(s[v]) - m_minus) ** 2 for v in others) / (1 - J)
        dm = float(s[tau]) - m_minus  # Var+ = 0: one correct response
        per.append(2 * dm / v_minus if dm > 0 else math.inf)
        plus.append((J / C, float(s[tau]), 0.0))
        minus.append(((1 - J) / C, m_minus, v_minus))

    def pooled(parts):  # the law of total variance over prompts
        total = sum(p for p, _, _ in parts)
        mean = sum(p * m for p, m, _ in parts) / total
        return mean, sum(p * (v + (m - mean) ** 2) for p, m, v in parts) / total

    (mp, vp), (mm, vm) = pooled(plus), pooled(minus)
    return 2 * (mp - mm) / (vm - vp), min(per), w.reshape(1, -1)


def test_predicted_critical_rates_against_a_loop_over_tokens():
    policy, reward, beta = token_bandit(1, 1, rho=1.0, **SIZES)
    theta = initial_theta(policy, reward, beta, 0.4)
    model = policy.bind(reward)
    weights = torch.full((1, 6), 1 / 6, dtype=torch.float64)
    X, _ = _contexts(1, **SIZES)
    crit_obj, crit_prompt, w = _grpo_reference(theta, X, reward.targets[:, 0])
    assert torch.allclose(model.expected_update(theta, weights, get_preset("grpo")), w, atol=1e-12)
    obj, prompt = predicted_critical_rates(model, theta, "grpo")
    assert obj == pytest.approx(crit_obj, rel=1e-9)
    assert prompt == pytest.approx(crit_prompt, rel=1e-9)
    assert 0 < prompt < math.inf


def test_the_simulate_package_re_exports_the_instances():
    assert set(INSTANCES_API) <= set(simulate_package.__all__)
    assert all(getattr(simulate_package, name) is getattr(simulate_package.instances, name) for name in INSTANCES_API)


def test_two_response_starts_at_J0():
    J0 = torch.tensor([0.01, 0.2, 0.5, 0.9], dtype=torch.float64)
    policy, reward, theta0 = two_response(J0)
    assert isinstance(policy, TabularSoftmax) and policy.n_responses == 2
    assert torch.equal(reward, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert theta0.shape == (4, 2) and torch.allclose(theta0.sum(1), torch.zeros(4, dtype=torch.float64))  # (l/2, -l/2)
    assert torch.allclose(policy.logp(theta0).exp()[:, 0, 0], J0, rtol=1e-12)


def test_collapse_instance_is_app_f_s():
    phi = collapse_features(2.0)
    assert torch.equal(phi, torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64))  # (G/2)·...
    policy, reward = collapse_instance(2.0)
    assert isinstance(policy, FeatureSoftmax) and torch.equal(reward, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    policy, reward = collapse_instance(2.0, 3)
    assert isinstance(policy, TokenSoftmax) and policy.n_responses == 27 and reward.shape == (1, 27)
    assert reward.sum() == 1 and bool((policy.tokens[reward[0] == 1] == 0).all())  # only o1 o1 o1 is correct
    assert torch.allclose(collapse_theta0(torch.tensor([0.3, 0.6], dtype=torch.float64)),
                          torch.tensor([[-0.1, 0.0], [-0.2, 0.0]], dtype=torch.float64), rtol=1e-15)  # (eta/3)(-1, 0)


@pytest.mark.parametrize("T", [None, 1, 3])
def test_collapse_direction_drives_J_along_the_closed_form(T):
    # the direction alternates (±2/3, -delta/3) (53, 58); the simulated J matches the proofs' J(k)
    G, eta = 1.0, torch.tensor([0.1, 0.3], dtype=torch.float64)
    delta = theory.collapse_delta(eta, G, T)
    policy, reward = collapse_instance(G, T)
    traj = simulate(policy, reward, collapse_theta0(eta), steps=30, direction=collapse_direction(delta), step_size=eta)
    k = traj.step.to(torch.float64).unsqueeze(1)
    assert torch.allclose(traj.metrics["J"], theory.collapse_J(eta, delta, G, k, T), rtol=1e-10, atol=0)
    assert torch.allclose(traj.metrics["w_norm"][:-1], torch.sqrt(4 + delta**2).expand(30, 2) / 3, rtol=1e-12)
    assert bool((traj.metrics["delta_mu"][:-1] >= theory.collapse_alignment_bound(eta, G, T)).all())


def test_random_instances_have_both_outcomes_and_repeat_with_the_seed():
    first = random_instances(torch.Generator().manual_seed(4))
    again = random_instances(torch.Generator().manual_seed(4))
    assert [i.name for i in first] == ["bandit K=3", "bandit K=10", "features N=6 d=3", "contextual C=4 N=5",
                                       "token V=3 T=3 EOS position", "token V=2 T=4 prefix", "token V=3 T=3 linear"]
    assert [i.token_level for i in first] == [False] * 4 + [True] * 3
    for inst, same in zip(first, again):
        assert isinstance(inst, RandomInstance) and torch.equal(inst.reward, same.reward)
        C = 4 if inst.name.startswith("contextual") else 1
        assert inst.reward.shape == (C, inst.policy.n_responses)
        assert bool((inst.reward.max(1).values == 1).all() and (inst.reward.min(1).values == 0).all())  # both outcomes
        theta = inst.policy.init(1, scale=1.0, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(inst.policy.logp(theta).exp().sum(-1), torch.ones(1, C, dtype=torch.float64))

