"""rlvrlab.policies.independent: the closed-form CountModel (a dynamic program over match counts)
against enumeration of all V^T responses for small T, for the tabular and the feature
parametrizations and every threshold: masses, GapStats along a direction (curvature included),
∇J, the Gradient Gap, every preset's expected update, sampled batches (tokens, rewards, per-token
log π, projected scores) and the psi_1 norm of the length; sampling frequencies against π;
precision as J -> 1 against closed forms; initial_logit_for; input checks; a short simulation.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.func import jvp

from rlvrlab.gap import gap_along
from rlvrlab.policies import FeatureSoftmax, TokenSoftmax
from rlvrlab.policies.independent import CountModel, CountReward, IndependentSoftmax
from rlvrlab.policies.model import Enumerated
from rlvrlab.simulate import simulate
from rlvrlab.updates import PRESETS, get_preset, make_direction

F64 = torch.float64
V, T = 3, 4
TARGETS = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]])
GAP_FIELDS = ("log_J", "log_1mJ", "mean_plus", "mean_minus", "var_plus", "var_minus", "curv_plus", "curv_minus")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _all_tokens(vocab: int, length: int) -> torch.Tensor:
    """(V^T, T) every response, in base-V order (the first token most significant)."""
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)))


def _index(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """Base-V index of each response (..., T) -> (...)."""
    powers = vocab ** torch.arange(tokens.shape[-1] - 1, -1, -1)
    return (tokens * powers).sum(-1)


def _count_reward(tokens: torch.Tensor, targets: torch.Tensor, m: int) -> torch.Tensor:
    """(C, N) 1{#matches with the prompt's target >= m}, by a plain comparison."""
    return ((tokens.unsqueeze(0) == targets.unsqueeze(1)).sum(-1) >= m).to(F64)


class _Case:
    """A CountModel and its enumerated reference: log π of every response computed here from the
    model's logits, position by position."""

    def __init__(self, kind: str, m: int, R: int = 2, seed: int = 0):
        gen = _gen(seed)
        self.kind, self.m = kind, m
        if kind == "tabular":
            self.policy = IndependentSoftmax(V, T)
        else:  # features per prompt (C, T, V, d), or one set shared by both prompts (1, T, V, d)
            C = 2 if kind == "features" else 1
            self.policy = IndependentSoftmax(V, T, features=torch.randn(C, T, V, 5, generator=gen, dtype=F64))
        self.model = CountModel(self.policy, CountReward(TARGETS, m))
        self.theta = self.policy.init(R, scale=1.0, generator=gen)
        self.w = torch.randn(R, self.policy.n_params, generator=gen, dtype=F64)
        self.weights = torch.tensor([[0.3, 0.7]], dtype=F64).expand(R, 2).clone()
        self.tokens = _all_tokens(V, T)  # (N, T)
        self.reward = _count_reward(self.tokens, TARGETS, m)  # (C, N)

    def logp(self, theta: torch.Tensor) -> torch.Tensor:
        """(R, C, N): Σ_t log softmax(h_t)[o_t]."""
        logpi = torch.log_softmax(self.policy.logits(theta), -1)  # (R, C', T, V)
        out = sum(logpi[:, :, t, self.tokens[:, t]] for t in range(T))
        return out.expand(theta.shape[0], 2, self.tokens.shape[0])

    def enumerated(self) -> Enumerated:
        """The same policy as a library EnumerablePolicy: TokenSoftmax "position" for the tabular
        parametrization (the same θ layout (T, V)); FeatureSoftmax with φ(c, o) = Σ_t φ[c, t, o_t]
        for features (softmax over o of Σ_t h_t(o_t) factorizes into the T softmaxes)."""
        if self.kind == "tabular":
            policy = TokenSoftmax(V, T, eos=None, parametrization="position")
            assert torch.equal(policy.tokens, self.tokens)
            return Enumerated(policy, self.reward)
        phi = self.policy.features  # (C', T, V, d)
        summed = sum(phi[:, t, self.tokens[:, t]] for t in range(T))  # (C', N, d)
        return Enumerated(FeatureSoftmax(summed.expand(2, -1, -1).contiguous()), self.reward)


CASES = [(kind, m) for kind in ("tabular", "features", "features-shared") for m in (1, 2, T)]


@pytest.mark.parametrize("kind, m", CASES)
def test_count_model_equals_enumeration(kind, m):
    case = _Case(kind, m)
    model, theta, w, weights = case.model, case.theta, case.w, case.weights
    logp = case.logp(theta)
    torch.testing.assert_close(torch.logsumexp(logp, -1), torch.zeros(2, 2, dtype=F64), rtol=0, atol=1e-14)
    correct = case.reward.to(torch.bool)
    # masses
    log_J, log_1mJ = model.masses(theta)
    torch.testing.assert_close(log_J, torch.logsumexp(logp.masked_fill(~correct, -math.inf), -1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(log_1mJ, torch.logsumexp(logp.masked_fill(correct, -math.inf), -1), rtol=1e-12, atol=1e-14)
    J = log_J.exp()
    assert bool(((J > 1e-7) & (J < 1 - 1e-7)).all())  # both sides have mass: every statistic is defined
    # GapStats along w, with the curvature wᵀ∇²log π w (the same for every response here)
    proj = jvp(case.logp, (theta,), (w,))[1]
    curv = jvp(lambda t: jvp(case.logp, (t,), (w,))[1], (theta,), (w,))[1]
    ref = gap_along(logp, proj, case.reward.expand_as(logp), curv)
    got = model.along(theta, w, curvature=True)
    for name in GAP_FIELDS:
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-11, atol=1e-12, msg=name)
    assert model.along(theta, w).curv_plus is None
    # ∇ Σ_c w_c J_c and the batch Gradient Gap ∇J_b / (J_b (1 - J_b)) (Lemma 8)
    t = theta.clone().requires_grad_(True)
    J_b = (weights * (case.logp(t).exp() * case.reward).sum(-1)).sum(-1)
    grad = torch.autograd.grad(J_b.sum(), t)[0]
    torch.testing.assert_close(model.grad_J(theta, weights), grad, rtol=1e-11, atol=1e-13)
    Jb = J_b.detach().unsqueeze(-1)
    torch.testing.assert_close(model.gap_vector(theta, weights), grad / (Jb * (1 - Jb)), rtol=1e-10, atol=1e-12)
    # every preset's expected update: Σ_c w_c E[a·n·∇log π], a = (r - J)/σ or r - J, n = 1 or 1/T
    # (every response has T tokens; Dr. GRPO's norm defaults to T, DAPO's token mean is / E|o| = T)
    for name, preset in PRESETS.items():
        a = case.reward - J.unsqueeze(-1)
        if preset.advantage == "mean-std":
            a = a / (J * (1 - J)).sqrt().unsqueeze(-1)
        n = 1.0 if preset.aggregation == "seq-mean-token-sum" else 1.0 / T
        t = theta.clone().requires_grad_(True)
        lp = case.logp(t)
        surrogate = (weights.unsqueeze(-1) * lp.exp().detach() * a * n * lp).sum()
        expected = torch.autograd.grad(surrogate, t)[0]
        torch.testing.assert_close(model.expected_update(theta, weights, preset), expected, rtol=1e-10, atol=1e-12, msg=name)
    # length: every response has T tokens
    torch.testing.assert_close(model.length_psi1(theta), torch.full((2,), T / math.log(2), dtype=F64), rtol=1e-15, atol=0)


@pytest.mark.parametrize("kind, m", CASES)
def test_count_model_equals_the_library_enumerated_model(kind, m):
    case = _Case(kind, m, seed=1)
    model, enum, theta, w, weights = case.model, case.enumerated(), case.theta, case.w, case.weights
    for a, b in zip(model.masses(theta), enum.masses(theta)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    got, ref = model.along(theta, w, curvature=True), enum.along(theta, w, curvature=True)
    for name in GAP_FIELDS:
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-11, atol=1e-12, msg=name)
    torch.testing.assert_close(model.grad_J(theta, weights), enum.grad_J(theta, weights), rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(model.gap_vector(theta, weights), enum.gap_vector(theta, weights), rtol=1e-10, atol=1e-12)
    if kind == "tabular":  # TokenSoftmax knows the response lengths: the expected updates agree preset by preset
        for name in PRESETS:
            for preset in (get_preset(name), get_preset(name, norm=2.5)):
                torch.testing.assert_close(model.expected_update(theta, weights, preset), enum.expected_update(theta, weights, preset),
                                           rtol=1e-10, atol=1e-12, msg=name)
        torch.testing.assert_close(model.length_psi1(theta), enum.length_psi1(theta), rtol=1e-12, atol=0)
        assert model.constants() == enum.constants()


@pytest.mark.parametrize("kind", ["tabular", "features", "features-shared"])
def test_sampled_batches_agree_with_enumeration(kind):
    case = _Case(kind, 2, R=3, seed=2)
    model, theta, w = case.model, case.theta, case.w
    G = 7
    batch = model.sample(theta, G, _gen(3))
    assert batch.tokens.shape == batch.mask.shape == (3, 2, G, T) and batch.reward.shape == (3, 2, G)
    assert bool(batch.mask.all()) and batch.index is None
    assert batch.lengths.tolist() == [[[T] * G] * 2] * 3
    index = _index(batch.tokens, V)  # (R, C, G)
    assert torch.equal(case.tokens[index], batch.tokens)
    # rewards: the count of matches with the prompt's target, >= m
    reward = torch.stack([case.reward[c][index[:, c]] for c in range(2)], 1)
    assert torch.equal(batch.reward, reward)
    # per-token log π: each token's log softmax at its position; summed, the enumerated log π
    logpi = torch.log_softmax(case.policy.logits(theta), -1).expand(3, 2, T, V)
    tok_ref = torch.stack([logpi[:, :, t].gather(-1, batch.tokens[..., t]) for t in range(T)], -1)
    torch.testing.assert_close(model.token_logp(theta, batch), tok_ref, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(model.token_logp(theta, batch).sum(-1), case.logp(theta).gather(-1, index), rtol=1e-13, atol=1e-14)
    # projected scores of the samples
    proj = jvp(case.logp, (theta,), (w,))[1]
    torch.testing.assert_close(model.sample_proj(theta, w, batch), proj.gather(-1, index), rtol=1e-12, atol=1e-13)
    if kind == "tabular":  # the enumerated TokenSoftmax's per-token log π of the same responses
        torch.testing.assert_close(model.token_logp(theta, batch), case.enumerated().policy.token_logp(theta, index),
                                   rtol=1e-14, atol=1e-15)


def test_sampling_frequencies_match_pi():
    case = _Case("tabular", T, R=1, seed=4)
    G = 40_000
    batch = case.model.sample(case.theta, G, _gen(5))
    p = case.logp(case.theta)[0, 0]  # both prompts share the tabular policy
    for c in range(2):
        counts = torch.bincount(_index(batch.tokens[0, c], V), minlength=V**T).to(F64)
        expected = G * p
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        df = V**T - 1
        assert chi2 < df + 5 * math.sqrt(2 * df)  # 80 + 63
    # the two prompts draw independent responses
    assert not torch.equal(batch.tokens[0, 0], batch.tokens[0, 1])


# --- precision as J -> 1 -------------------------------------------------------------------------------------


def _peaked(a: float, targets: torch.Tensor) -> torch.Tensor:
    """Tabular theta (1, T·V): logit a on each position's target token, 0 elsewhere."""
    theta = torch.zeros(T, V, dtype=F64)
    theta[torch.arange(T), targets[0]] = a
    return theta.view(1, -1)


def test_masses_and_gap_stay_exact_as_J_goes_to_1():
    a = 50.0
    targets = TARGETS[:1]
    theta = _peaked(a, targets)
    log_q = -math.log1p((V - 1) * math.exp(-a))  # log π(target token), the same at every position
    log_1mq = math.log(V - 1) - a + log_q  # log(1 - q) = log((V - 1) e^{-a} q)
    # m = T: 1 - J = 1 - q^T = -expm1(T log q) ≈ 1.6e-21
    model = CountModel(IndependentSoftmax(V, T), CountReward(targets, T))
    log_J, log_1mJ = model.masses(theta)
    one_minus_J = -math.expm1(T * log_q)
    assert 0 < one_minus_J < 1e-20
    assert float(log_1mJ) == pytest.approx(math.log(one_minus_J), rel=1e-13)
    assert abs(float(log_J) - T * log_q) < 1e-15  # log J ≈ -1.5e-21: absolute precision is what matters there
    # the Gradient Gap (δ_{v,y_t} - π_t(v)) / (1 - J): (V-1)e^{-a}q/(1-J) on targets, -e^{-a}q/(1-J) elsewhere
    q = math.exp(log_q)
    gap = torch.full((T, V), -math.exp(-a) * q / one_minus_J, dtype=F64)
    gap[torch.arange(T), targets[0]] = (V - 1) * math.exp(-a) * q / one_minus_J
    weights = torch.ones(1, 1, dtype=F64)
    torch.testing.assert_close(model.gap_vector(theta, weights), gap.view(1, -1), rtol=1e-12, atol=0)
    # ∇J = J(1 - J)·gap keeps its relative precision although 1 - J rounds to 0 against 1
    torch.testing.assert_close(model.grad_J(theta, weights), math.exp(T * log_q) * one_minus_J * gap.view(1, -1), rtol=1e-12, atol=0)
    # the enumerated reference agrees (it is exact there too)
    enum = _Case("tabular", T).enumerated()
    enum = Enumerated(enum.policy, enum.reward[:1])
    torch.testing.assert_close(enum.gap_vector(theta, weights), gap.view(1, -1), rtol=1e-11, atol=0)
    # m = 1: 1 - J = Π_t (1 - q_t), log(1 - J) = T log(1 - q) far below the float range of 1 - J itself
    model1 = CountModel(IndependentSoftmax(V, T), CountReward(targets, 1))
    assert float(model1.masses(theta)[1]) == pytest.approx(T * log_1mq, rel=1e-13)
    # and with J -> 0 (logit -a): log J = T·log(target prob) for m = T
    low = _peaked(-a, targets)
    log_p = -a - math.log(V - 1) - math.log1p(math.exp(-a) / (V - 1))  # log(e^{-a} / (e^{-a} + V - 1))
    assert float(model.masses(low)[0]) == pytest.approx(T * log_p, rel=1e-13)
    # every preset's expected update stays finite and parallel to the gap
    for name, preset in PRESETS.items():
        u = model.expected_update(theta, weights, preset)
        assert bool(torch.isfinite(u).all()), name
        cos = (u * gap.view(1, -1)).sum() / (u.norm() * gap.norm())
        assert float(cos) == pytest.approx(1.0, abs=1e-12), name


@pytest.mark.parametrize("m", [1, 2, T])
@pytest.mark.parametrize("J0", [1e-3, 0.2, 0.5, 0.9, 0.999])
def test_initial_logit_for_gives_J0(m, J0):
    model = CountModel(IndependentSoftmax(V, T), CountReward(TARGETS[:1], m))
    a = model.initial_logit_for(J0)
    J = float(model.masses(_peaked(a, TARGETS[:1]))[0].exp())
    assert abs(J - J0) < 1e-9
    # by hand for m = T: q^T = J0 with q = e^a / (e^a + V - 1)
    if m == T:
        q = J0 ** (1 / T)
        assert a == pytest.approx(math.log((V - 1) * q / (1 - q)), rel=1e-9, abs=1e-9)


def test_bad_input_names_the_field():
    policy = IndependentSoftmax(V, T)
    for targets in (torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, -1, 2, 0]]),
                    torch.zeros(2, 2, T, dtype=torch.long)):
        with pytest.raises(ValueError, match="^targets: "):
            CountModel(policy, CountReward(targets, 1))
    feats = IndependentSoftmax(V, T, features=torch.zeros(2, T, V, 3, dtype=F64))
    with pytest.raises(ValueError, match="^targets: got '3 prompts'"):
        CountModel(feats, CountReward(torch.zeros(3, T, dtype=torch.long), 1))
    for m in (0, T + 1, 2.0, -1):
        with pytest.raises(ValueError, match="^threshold: "):
            CountModel(policy, CountReward(TARGETS, m))
    with pytest.raises(ValueError, match="^vocab: got 1"):
        IndependentSoftmax(1, T)
    with pytest.raises(ValueError, match="^length: got 0"):
        IndependentSoftmax(V, 0)
    with pytest.raises(ValueError, match="^features: "):
        IndependentSoftmax(V, T, features=torch.zeros(2, T + 1, V, 3))
    # a one-dimensional target is one prompt
    assert CountModel(policy, CountReward(torch.tensor([0, 1, 2, 0]), 2)).n_prompts == 1


# --- a short simulation ------------------------------------------------------------------------------------------


def test_simulation_records_and_exact_state_agree_with_both_models():
    V6, T6 = 3, 6
    policy = IndependentSoftmax(V6, T6)
    reward = CountReward(torch.tensor([[0, 1, 2, 0, 1, 2]]), 4)
    model = policy.bind(reward)
    theta0 = policy.init(3, scale=0.5, generator=_gen(6))
    steps, G = 5, 4
    traj = simulate(policy, reward, theta0, steps=steps, direction=make_direction("preset", preset="grpo", G=G),
                    step_size=0.5, generator=_gen(7))
    rows = slice(0, steps)  # step rows; the final row is the state only
    clip, flat = traj.metrics["loss_clipfrac"][rows], traj.metrics["loss_zero_variance_groups"][rows]
    J_mc, dm_mc = traj.metrics["J_mc"][rows], traj.metrics["delta_mu_mc"][rows]
    assert torch.equal(clip, torch.zeros_like(clip))  # one epoch: every ratio is 1
    assert bool(((J_mc * G) == (J_mc * G).round()).all())  # n+/G
    all_equal = (J_mc == 0) | (J_mc == 1)
    assert torch.equal(flat == 1, all_equal) and bool(((flat == 0) | (flat == 1)).all())
    assert torch.equal(dm_mc.isnan(), all_equal)  # delta_mu_mc needs both sides
    assert bool(torch.isnan(traj.metrics["J_mc"][-1]).all())
    # the recorded exact J is the model's at the final theta; the runs moved
    torch.testing.assert_close(traj.final("J"), model.masses(traj.theta)[0].exp()[:, 0], rtol=1e-14, atol=0)
    assert float((traj.theta - theta0).norm()) > 0.1
    # the same run through the enumerated TokenSoftmax (729 responses): its own records are consistent
    # with its own final theta, and the closed-form model agrees with it there
    token = TokenSoftmax(V6, T6, eos=None, parametrization="position")
    table = _count_reward(token.tokens, reward.targets, 4)
    enum_traj = simulate(token, table, theta0, steps=steps, direction=make_direction("preset", preset="grpo", G=G),
                         step_size=0.5, generator=_gen(7))
    enum = Enumerated(token, table)
    torch.testing.assert_close(enum_traj.final("J"), enum.masses(enum_traj.theta)[0].exp()[:, 0], rtol=1e-14, atol=0)
    torch.testing.assert_close(model.masses(enum_traj.theta)[0], enum.masses(enum_traj.theta)[0], rtol=1e-12, atol=1e-14)
    # an exact direction is deterministic: both models give the same trajectory
    rule = make_direction("expected", preset="grpo")
    a = simulate(policy, reward, theta0, steps=steps, direction=rule, step_size=2.0, curvature=True)
    b = simulate(token, table, theta0, steps=steps, direction=rule, step_size=2.0, curvature=True)
    torch.testing.assert_close(a.theta, b.theta, rtol=1e-10, atol=1e-12)
    for name in ("J", "log_odds", "delta_mu", "var_plus", "var_minus", "curv_plus", "curv_minus", "log_odds_change", "M"):
        torch.testing.assert_close(a.metrics[name], b.metrics[name], rtol=1e-9, atol=1e-11, equal_nan=True, msg=name)


def _dp_plain(p_hit, p_miss, moments, T):
    """_dp's recursion as first written: zero-padded shifts, M0, M1, M2 one at a time."""
    pad = torch.nn.functional.pad
    M0 = torch.zeros((*p_hit.shape[:-1], T + 1), dtype=p_hit.dtype)
    M0[..., 0] = 1.0
    M1, M2 = torch.zeros_like(M0), torch.zeros_like(M0)
    for t in range(T):
        p1, p0 = p_hit[..., t : t + 1], p_miss[..., t : t + 1]
        hit0 = p1 * M0
        if moments is None:
            M0 = p0 * M0 + pad(hit0[..., :-1], (1, 0))
            continue
        a1, a0, b1, b0 = (m[..., t : t + 1] for m in moments)
        hit1 = p1 * M1 + a1 * M0
        hit2 = p1 * M2 + 2 * a1 * M1 + b1 * M0
        M2 = p0 * M2 + 2 * a0 * M1 + b0 * M0 + pad(hit2[..., :-1], (1, 0))
        M1 = p0 * M1 + a0 * M0 + pad(hit1[..., :-1], (1, 0))
        M0 = p0 * M0 + pad(hit0[..., :-1], (1, 0))
    return [M0] if moments is None else [M0, M1, M2]


@pytest.mark.parametrize("T", [1, 3, 8, 33])
def test_dp_is_the_plain_recursion_bit_for_bit(T):
    from rlvrlab.policies.independent import _dp

    g = _gen(T)
    p = torch.softmax(torch.randn(5, 7, T, 4, generator=g, dtype=torch.float64) * 3, -1)
    hit, miss = p[..., 0], p[..., 1:].sum(-1)
    moments = tuple(torch.randn(5, 7, T, generator=g, dtype=torch.float64) for _ in range(4))
    for got, want in zip(_dp(hit, miss, moments, T) + _dp(hit, miss, None, T), _dp_plain(hit, miss, moments, T) + _dp_plain(hit, miss, None, T)):
        assert torch.equal(got, want)
    states = _dp(hit, miss, None, T, history=True)
    assert len(states) == T + 1 and torch.equal(states[-1], want)


@pytest.mark.parametrize("T", [1, 2, 8, 32])
@pytest.mark.parametrize("R", [1, 3, 6, 26])
def test_written_out_gradient_is_autograds_bit_for_bit(T, R):
    from rlvrlab.simulate.instances import token_bandit

    policy, reward, _ = token_bandit(T + R, T, prompts=40, dim=5, vocab=4, rho=0.5)
    g = _gen(10 * T + R)
    for model in (policy.bind(reward), IndependentSoftmax(4, T).bind(reward)):
        theta = torch.randn(R, model.n_params, generator=g, dtype=torch.float64) * 3
        coef = torch.randn(R, 40, generator=g, dtype=torch.float64)
        got = model._weighted_J_gradient(theta, coef)
        want = model._weighted_J_gradient_autograd(theta, coef)
        assert torch.equal(got, want)
        assert got.abs().max() > 0


def test_probabilities_are_computed_once_per_theta_and_never_stale():
    from rlvrlab.simulate.instances import token_bandit

    policy, reward, _ = token_bandit(0, 4, prompts=6, dim=3, vocab=4, rho=0.5)
    model = policy.bind(reward)
    theta = torch.randn(2, model.n_params, generator=_gen(1), dtype=torch.float64)
    first = model._state(theta)
    assert model._state(theta) is first  # the objective, the update and along share one forward pass
    assert torch.equal(first.p, torch.softmax(policy.logits(theta), -1))
    assert torch.equal(model.masses(theta)[0], IndependentSoftmax(4, 4, features=policy.features).bind(reward).masses(theta.clone())[0])
    theta.mul_(2.0)  # changed in place: recomputed
    again = model._state(theta)
    assert again is not first and torch.equal(again.p, torch.softmax(policy.logits(theta), -1))
    leaf = theta.clone().requires_grad_(True)  # autograd through masses still works, and is not cached
    model.masses(leaf)[0].sum().backward()
    assert leaf.grad is not None and model._state(theta) is again


@pytest.mark.parametrize("R", [1, 2, 3])
def test_lead_rows_compute_a_run_as_after_other_runs(R):
    """A policy with lead = L gives each run the bits it gets after L other runs in one product
    (phase's bisection runs rely on it), and its gradient is that run's rows of the longer batch's."""
    from rlvrlab.simulate.instances import token_bandit

    policy, reward, _ = token_bandit(3, 8, prompts=40, dim=5, vocab=4, rho=0.5)
    placed = IndependentSoftmax(4, 8, features=policy.features, lead=4)
    g = _gen(R)
    theta = torch.randn(4 + R, 20, generator=g, dtype=torch.float64) * 3
    coef = torch.randn(4 + R, 40, generator=g, dtype=torch.float64)
    assert torch.equal(placed.logits(theta[4:]), policy.logits(theta)[4:])
    got = placed.bind(reward)._weighted_J_gradient(theta[4:], coef[4:])
    assert torch.equal(got, policy.bind(reward)._weighted_J_gradient(theta, coef)[4:])
