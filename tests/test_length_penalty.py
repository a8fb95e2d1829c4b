"""Lemma 2's length dependence: CountedTokenSoftmax against the enumerated token policy, the log-odds
Hessian and its worst penalty against autograd and finite steps, the Fisher identity behind the
derived bound, Wald's identity for the score covariance, the multi-regressor log-log fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import hessian

from rlvrlab import gap, theory
from rlvrlab.analysis.stats import loglog_exponents, loglog_slope
from rlvrlab.policies import CountedTokenSoftmax, EnumerablePolicy, TokenSoftmax
from rlvrlab.policies.model import Enumerated

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(V: int, T: int, d: int, seed: int) -> tuple[CountedTokenSoftmax, TokenSoftmax, torch.Tensor]:
    """The counted policy, the enumerated "linear" token policy with the same features, and each
    enumerated response's class index."""
    Phi = torch.randn(V, d, generator=_gen(seed), dtype=F64)
    counted = CountedTokenSoftmax(V, T, features=Phi)
    token = TokenSoftmax(V, T, eos=V - 1, parametrization="linear", features=Phi)
    counts = torch.stack([((token.tokens == v) & token.alive).sum(1) for v in range(V)], 1)
    key = {tuple(r.tolist()): i for i, r in enumerate(counted.counts)}
    return counted, token, torch.tensor([key[tuple(r.tolist())] for r in counts])


def _class_reward(counted: CountedTokenSoftmax) -> torch.Tensor:
    return (counted.counts[:, 0] > counted.counts[:, 1]).to(F64)  # more of token 0 than of token 1


@pytest.mark.parametrize("V,T,d", [(3, 5, 2), (3, 6, 3), (4, 4, 2), (2, 5, 2)])
def test_counted_policy_is_the_token_policy_grouped_by_counts(V, T, d):
    counted, token, cls = _pair(V, T, d, seed=V * 10 + T)
    theta = torch.randn(3, d, generator=_gen(1), dtype=F64)
    w = torch.randn(3, d, generator=_gen(2), dtype=F64)
    lc, lt = counted.logp(theta)[:, 0], token.logp(theta)[:, 0]
    mass = torch.zeros_like(lc).index_add_(1, cls, lt.exp())
    torch.testing.assert_close(mass, lc.exp(), rtol=1e-12, atol=1e-15)
    _, pc = counted.logp_and_jvp(theta, w)
    _, pt = token.logp_and_jvp(theta, w)
    torch.testing.assert_close(pc[:, 0][:, cls], pt[:, 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(counted.curvature(theta, w)[:, 0][:, cls], token.curvature(theta, w)[:, 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(counted.lengths()[cls], token.lengths())
    if V >= 3:
        rc = _class_reward(counted)
        mc, mt = Enumerated(counted, rc.unsqueeze(0)), Enumerated(token, rc[cls].unsqueeze(0))
        for a, b in zip(mc.masses(theta), mt.masses(theta)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(mc.length_psi1(theta), mt.length_psi1(theta), rtol=1e-10, atol=0)
        torch.testing.assert_close(mc.grad_J(theta, torch.ones(3, 1, dtype=F64)), mt.grad_J(theta, torch.ones(3, 1, dtype=F64)),
                                   rtol=1e-10, atol=1e-13)
    assert counted.constants() == token.constants()


def test_counted_closed_forms_match_the_autograd_defaults():
    counted = CountedTokenSoftmax(3, 7, features=torch.randn(3, 4, generator=_gen(3), dtype=F64))
    theta = torch.randn(2, 4, generator=_gen(4), dtype=F64)
    v = torch.rand(2, 1, counted.n_responses, generator=_gen(5), dtype=F64)
    torch.testing.assert_close(counted.vjp(theta, v), EnumerablePolicy.vjp(counted, theta, v), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(counted.expected_hessian(theta, v), EnumerablePolicy.expected_hessian(counted, theta, v),
                               rtol=1e-10, atol=1e-11)


def test_counted_representatives_have_the_class_counts_and_token_logp_sums_to_the_member_logp():
    counted = CountedTokenSoftmax(3, 5)
    idx = torch.arange(counted.n_responses).view(1, 1, -1)
    tokens, mask = counted.response_tokens(idx)
    got = torch.stack([((tokens == v) & mask).sum(-1) for v in range(3)], -1)[0, 0]
    torch.testing.assert_close(got, counted.counts)
    theta = torch.randn(1, 3, generator=_gen(6), dtype=F64)
    member = counted.token_logp(theta, idx).sum(-1)[0, 0]
    torch.testing.assert_close(member + counted.log_mult, counted.logp(theta)[0, 0])


def test_long_counted_policy_stays_normalized_and_small():
    counted = CountedTokenSoftmax(3, 64)
    assert counted.n_responses == 2145  # Σ_{k<64} (k+1) + 65 classes for 3^... responses
    theta = torch.tensor([[0.3, -0.2, -3.0]], dtype=F64)
    assert abs(float(torch.logsumexp(counted.logp(theta), -1))) < 1e-12


def _log_odds_fn(policy: EnumerablePolicy, reward: torch.Tensor):
    def fn(t: torch.Tensor) -> torch.Tensor:
        lp = policy.logp(t.unsqueeze(0))[0, 0]
        return (torch.logsumexp(lp.masked_fill(reward == 0, -math.inf), -1)
                - torch.logsumexp(lp.masked_fill(reward == 1, -math.inf), -1))
    return fn


def _hessian_and_parts(policy: EnumerablePolicy, reward: torch.Tensor, theta: torch.Tensor):
    lp, S = policy.logp(theta)[:, 0], policy.scores(theta)[:, 0]
    r = reward.expand_as(lp)
    plus, minus = gap.conditional_distributions(lp, r)
    Hp = policy.expected_hessian(theta, plus.unsqueeze(1))
    Q = gap.log_odds_hessian(lp, S, r, Hp, policy.expected_hessian(theta, minus.unsqueeze(1)))
    return Q, lp, S, plus, minus, Hp


@pytest.mark.parametrize("case", ["counted", "position", "prefix"])
def test_log_odds_hessian_is_the_autograd_hessian_of_the_log_odds(case):
    if case == "counted":
        policy = CountedTokenSoftmax(3, 6, features=torch.randn(3, 3, generator=_gen(7), dtype=F64))
        reward = _class_reward(policy)
    else:
        policy = TokenSoftmax(3, 3, eos=2, parametrization=case)
        reward = (torch.arange(policy.n_responses) % 3 == 0).to(F64)
    theta = policy.init(2, scale=1.0, generator=_gen(8))
    Q = _hessian_and_parts(policy, reward, theta)[0]
    ref = torch.stack([hessian(_log_odds_fn(policy, reward))(theta[i]) for i in range(2)])
    torch.testing.assert_close(Q, ref, rtol=1e-9, atol=1e-11)


def test_log_odds_hessian_identity_and_the_derived_bound():
    """∇² log-odds = ∇² log J/(1 - J) + J Δ Δᵀ with -∇² log J = E+[-H] - Cov+ (Fisher identity), so the
    worst penalty is at most ½ L_p E+|o| / (1 - J)."""
    policy = CountedTokenSoftmax(3, 10, features=torch.randn(3, 3, generator=_gen(9), dtype=F64))
    theta = policy.init(4, scale=1.5, generator=_gen(10))
    for reward in (_class_reward(policy), (policy.lengths() <= 3).to(F64), (policy.counts[:, 0] >= 1).to(F64)):
        Q, lp, S, plus, minus, Hp = _hessian_and_parts(policy, reward, theta)
        J = (lp.exp() * reward).sum(-1)
        delta = ((plus - minus).unsqueeze(-1) * S).sum(-2)
        cov_plus = gap.score_covariance((plus.clamp(min=1e-300)).log(), S)
        hess_log_J = cov_plus + Hp
        torch.testing.assert_close(Q, hess_log_J / (1 - J)[:, None, None] + J[:, None, None] * delta.unsqueeze(-1) * delta.unsqueeze(-2),
                                   rtol=1e-9, atol=1e-10)
        pen, _ = gap.worst_second_order_penalty(Q)
        Eplus = (plus * policy.lengths().to(F64)).sum(-1)
        assert bool((pen <= theory.second_order_penalty_bound(policy.constants().L_p, Eplus, J) * (1 + 1e-10)).all())


def test_worst_penalty_is_the_small_step_limit_along_its_direction_and_beats_random_directions():
    policy = CountedTokenSoftmax(3, 8)
    reward = _class_reward(policy)
    theta = torch.tensor([[0.2, -0.1, -1.5]], dtype=F64)
    Q, lp, S, plus, minus, _ = _hessian_and_parts(policy, reward, theta)
    pen, w = gap.worst_second_order_penalty(Q)
    assert float(pen) > 0
    model = Enumerated(policy, reward.unsqueeze(0))
    delta = ((plus - minus).unsqueeze(-1) * S).sum(-2)

    def penalty(direction: torch.Tensor, eta: float) -> float:
        lo = lambda t: float((lambda m: m[0] - m[1])(model.masses(t)))  # noqa: E731
        return float(((delta * direction).sum() * eta - (lo(theta + eta * direction) - lo(theta))) / eta**2)

    # symmetric second-order term: the ±w average removes the O(η) remainder
    avg = (penalty(w, 1e-3) + penalty(-w, 1e-3)) / 2
    assert avg == pytest.approx(float(pen), rel=1e-5)
    for seed in range(20):
        u = torch.randn(1, 3, generator=_gen(seed), dtype=F64)
        u = u / u.norm()
        assert float(-0.5 * (u @ Q[0] @ u.T)) <= float(pen) + 1e-12


def test_score_covariance_obeys_walds_identity_for_the_shared_softmax():
    """Cov_π(∇log π) = E|o|·Cov_p(φ): a stopped sum of i.i.d. mean-zero token scores."""
    Phi = torch.randn(3, 2, generator=_gen(11), dtype=F64)
    policy = CountedTokenSoftmax(3, 20, features=Phi)
    theta = torch.randn(2, 2, generator=_gen(12), dtype=F64)
    lp = policy.logp(theta)[:, 0]
    p = torch.softmax(policy.logits(theta), -1)
    cov_phi = torch.einsum("vi,rv,vj->rij", Phi, p, Phi) - torch.einsum("rv,vi,rw,wj->rij", p, Phi, p, Phi)
    mean_len = (lp.exp() * policy.lengths().to(F64)).sum(-1)
    torch.testing.assert_close(gap.score_covariance(lp, policy.scores(theta)[:, 0]), mean_len[:, None, None] * cov_phi,
                               rtol=1e-10, atol=1e-12)


def test_score_covariance_and_log_odds_hessian_against_plain_loops():
    gen = _gen(13)
    N, d = 7, 3
    lp = torch.log_softmax(torch.randn(N, generator=gen, dtype=F64), 0)
    S = torch.randn(N, d, generator=gen, dtype=F64)
    p = lp.exp()
    mean = sum(p[i] * S[i] for i in range(N))
    ref = sum(p[i] * torch.outer(S[i] - mean, S[i] - mean) for i in range(N))
    torch.testing.assert_close(gap.score_covariance(lp, S), ref)
    reward = torch.tensor([1, 0, 0, 1, 0, 1, 0], dtype=F64)
    Hp, Hm = torch.eye(d, dtype=F64), 2 * torch.eye(d, dtype=F64)
    expect = torch.zeros(d, d, dtype=F64)
    for side, sign in ((1, 1.0), (0, -1.0)):
        idx = [i for i in range(N) if reward[i] == side]
        q = p[idx] / p[idx].sum()
        m = sum(q[j] * S[i] for j, i in enumerate(idx))
        expect += sign * sum(q[j] * torch.outer(S[i] - m, S[i] - m) for j, i in enumerate(idx))
    torch.testing.assert_close(gap.log_odds_hessian(lp, S, reward, Hp, Hm), expect + Hp - Hm)


def test_worst_second_order_penalty_by_hand():
    Q = torch.diag(torch.tensor([1.0, -3.0], dtype=F64))
    pen, w = gap.worst_second_order_penalty(Q)
    assert float(pen) == pytest.approx(1.5)
    assert abs(float(w[1])) == pytest.approx(1.0)
    pen, _ = gap.worst_second_order_penalty(torch.eye(2, dtype=F64))  # log-odds convex: no penalty
    assert float(pen) == 0.0


def test_loglog_exponents_recovers_known_exponents_and_matches_the_one_regressor_slope():
    gen = np.random.default_rng(0)
    a, b = gen.uniform(1, 50, 40), gen.uniform(1, 50, 40)
    y = 3 * a**1.0 * b**0.0 * np.exp(gen.normal(0, 0.01, 40))
    fit = loglog_exponents(y, T_psi1=a, T_inf=b)
    assert fit["T_psi1"].slope == pytest.approx(1.0, abs=0.02) and fit["T_psi1"].low < 1 < fit["T_psi1"].high
    assert fit["T_inf"].slope == pytest.approx(0.0, abs=0.02) and fit["T_inf"].low < 0 < fit["T_inf"].high
    one, ref = loglog_exponents(y, x=a)["x"], loglog_slope(a, y)
    assert (one.slope, one.low, one.high) == pytest.approx((ref.slope, ref.low, ref.high), rel=1e-10)


def test_bad_input_names_the_setting():
    with pytest.raises(ValueError, match="vocab"):
        CountedTokenSoftmax(1, 4)
    with pytest.raises(ValueError, match="max_len"):
        CountedTokenSoftmax(3, 0)
    with pytest.raises(ValueError, match="features"):
        CountedTokenSoftmax(3, 4, features=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="vocab/max_len"):
        CountedTokenSoftmax(12, 64)
    with pytest.raises(ValueError, match="T_psi1"):
        loglog_exponents([1.0, 2.0, 3.0], T_psi1=[1.0, -1.0, 2.0])
    with pytest.raises(ValueError, match="hess_plus"):
        gap.log_odds_hessian(torch.log(torch.full((3,), 1 / 3, dtype=F64)), torch.zeros(3, 2, dtype=F64),
                             torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.zeros(3, 3, dtype=F64), torch.zeros(2, 2, dtype=F64))
    from rlvrlab.experiments.length_penalty import LengthPenaltyConfig
    with pytest.raises(ValueError, match="T_infs"):
        LengthPenaltyConfig(T_infs=(1,))
    with pytest.raises(ValueError, match="eos_min/eos_max"):
        LengthPenaltyConfig(eos_min=0.6, eos_max=0.5)
    with pytest.raises(ValueError, match="feature_kinds"):
        LengthPenaltyConfig(feature_kinds=("dense",))
