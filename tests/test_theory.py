"""rlvrlab.theory: each closed form against a value worked out by hand, and against the property
that defines it (a simulated trajectory, an exact one-step change, a bisection, a plain loop over
the responses of the paper's worked examples)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rlvrlab import theory
from rlvrlab.gap import gap_along, gap_stats, lemma3_log_odds_change
from rlvrlab.policies import FeatureSoftmax, TabularSoftmax, TokenSoftmax
from rlvrlab.simulate import simulate
from rlvrlab.updates import make_step_size

pytestmark = pytest.mark.usefixtures("float64")

SQRT2 = math.sqrt(2.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _log_odds(logp: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logp.masked_fill(~correct, -math.inf), -1) - torch.logsumexp(
        logp.masked_fill(correct, -math.inf), -1)


# --- logistic lower bound and stagnation ceiling -------------------------------------------------


def test_logistic_lower_bound_hand_value():
    # J0 = 0.2, M = 2: 0.2 / (0.2 + 0.8·e^{-1}) = 0.2 / 0.494304 = 1 / (1 + 4/e) = 0.4046097
    assert theory.logistic_lower_bound(0.2, 2.0) == pytest.approx(1 / (1 + 4 / math.e), rel=1e-14)
    assert theory.logistic_lower_bound(0.2, 2.0) == pytest.approx(0.40460967519168967, rel=1e-14)


@given(J0=st.floats(0.0, 1.0), M1=st.floats(0.0, 200.0), M2=st.floats(0.0, 200.0))
def test_logistic_lower_bound_properties(J0, M1, M2):
    lo, hi = sorted((M1, M2))
    assert theory.logistic_lower_bound(J0, lo) <= theory.logistic_lower_bound(J0, hi)  # monotone in M
    assert theory.logistic_lower_bound(J0, 0.0) == pytest.approx(J0, abs=1e-15)  # M = 0: J0 itself
    if 0 < J0 < 1:  # the printed form (13b)
        printed = J0 / (J0 + (1 - J0) * math.exp(-hi / 2))
        assert theory.logistic_lower_bound(J0, hi) == pytest.approx(printed, rel=1e-12)


def test_logistic_lower_bound_exact_at_endpoints():
    for M in (0.0, 1.0, 50.0, 1e4):
        assert theory.logistic_lower_bound(0.0, M) == 0.0
        assert theory.logistic_lower_bound(1.0, M) == 1.0
    # 1 - bound keeps relative precision far past float rounding of J (sigmoid form, not 1 - ...)
    assert theory.logistic_lower_bound(0.5, -100.0) == pytest.approx(math.exp(-50) / (1 + math.exp(-50)), rel=1e-12)


def test_stagnation_ceiling_hand_value():
    # J0 = 0.2, C0 = 1, C0' = 0.5: 0.2 / (0.2 + 0.8·e^{-1.5}) = 1 / (1 + 4·0.2231302) = 0.5283958
    assert theory.stagnation_ceiling(0.2, 1.0, 0.5) == pytest.approx(0.5283958222438627, rel=1e-14)


@given(J0=st.floats(0.0, 0.999), C0=st.floats(0.0, 15.0), C0p=st.floats(0.0, 15.0))  # 1 - ceiling >= 1e-14
def test_stagnation_ceiling_is_the_proofs_formula(J0, C0, C0p):
    ceiling = theory.stagnation_ceiling(J0, C0, C0p)
    # App. C.1.1: J(K) <= J0 / (J0 + (1 - J0) exp(-(C0 + C0')))
    proof = J0 / (J0 + (1 - J0) * math.exp(-(C0 + C0p)))
    assert ceiling == pytest.approx(proof, rel=1e-12, abs=1e-300)
    assert J0 <= ceiling + 1e-15
    assert ceiling < 1.0


def test_stagnation_ceiling_bounds_a_simulated_trajectory():
    # Theorem 1(a) with C0 = M(K) (>= Σ Delta_mu·eta) and C0' = (L_o + 8 G_o²)·Σ eta²:
    # every J(k) stays below the ceiling, and the printed sign exp(+C) is violated.
    policy = TabularSoftmax(3)
    reward = torch.tensor([[1.0, 0.0, 0.0]])
    theta0 = torch.tensor([[-1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    eta = 0.5  # <= 1 / (2 sqrt(L_o)) = 0.707 for L_o = 1/2
    traj = simulate(policy, reward, theta0, steps=20, step_size=eta, fast=False)
    c = traj.constants
    J0 = traj.metrics["J"][0]
    for i, k in enumerate(traj.step.tolist()):
        C0p = (c.L_o + 8 * c.G_o**2) * eta**2 * k
        ceiling = theory.stagnation_ceiling(J0, traj.metrics["M"][i], torch.tensor(C0p))
        assert bool((traj.metrics["J"][i] <= ceiling + 1e-15).all())
    printed = J0 / (J0 + (1 - J0) * torch.exp(traj.metrics["M"][-1] + C0p))
    assert bool((traj.metrics["J"][-1] > printed).all())


def test_logistic_lower_bound_holds_under_condition_13a():
    gen = _gen(1)
    policy = FeatureSoftmax(torch.randn(6, 3, generator=gen))
    reward = torch.tensor([[1.0, 0, 1, 0, 0, 0]])
    theta0 = torch.randn(4, 3, generator=gen)
    traj = simulate(policy, reward, theta0, steps=25, direction="normalized-gradient",
                    step_size=make_step_size("condition-13a"))
    bound = theory.logistic_lower_bound(traj.metrics["J"][0], traj.metrics["M"])
    assert bool((traj.metrics["M"][-1] > 0).all())
    assert bool((traj.metrics["J"] >= bound - 1e-14).all())


def test_logistic_lower_bound_holds_under_condition_15a():
    policy = TokenSoftmax(3, 3, eos=0)
    reward = torch.zeros(1, policy.n_responses)
    reward[0, [1, 4, 7]] = 1.0
    theta0 = policy.init(3, scale=1.0, generator=_gen(2))
    traj = simulate(policy, reward, theta0, steps=20, direction="normalized-gradient",
                    step_size=make_step_size("condition-15a"))
    bound = theory.logistic_lower_bound(traj.metrics["J"][0], traj.metrics["M"])
    assert bool((traj.metrics["M"][-1] > 0).all())
    assert bool((traj.metrics["J"] >= bound - 1e-14).all())


# --- step-size conditions and Corollary 3.1 ------------------------------------------------------


def test_smoothness_step_cap():
    assert theory.smoothness_step_cap(4.0) == pytest.approx(0.25)  # 1 / (2·sqrt 4)
    assert theory.smoothness_step_cap(0.0) == math.inf
    out = theory.smoothness_step_cap(torch.tensor([0.25, 0.0]))
    assert torch.equal(out, torch.tensor([1.0, math.inf]))


def test_step_condition_trajectory_hand_value():
    # Delta_mu = 0.9, L_o = 0.5, G_o = 1.5: 0.9 / (2 (0.5 + 8·2.25)) = 0.9 / 37 = 0.0243243
    assert theory.step_condition_trajectory(0.9, 0.5, 1.5) == pytest.approx(0.9 / 37, rel=1e-14)
    assert theory.step_condition_trajectory(-0.3, 0.5, 1.5) == 0.0  # [Delta_mu]_+


def test_linear_rate_step_hand_values():
    # (13a) binds: sqrt2 / (2 (1/2 + 16)) = sqrt2 / 33 = 0.0428550 < 1/(2 sqrt(1/2)) = 0.7071068
    assert theory.linear_rate_step(SQRT2, 0.5, SQRT2) == pytest.approx(SQRT2 / 33, rel=1e-14)
    # the smoothness cap binds: 100 / (2 (4 + 0.08)) = 12.25 > 1/(2·2) = 0.25
    assert theory.linear_rate_step(100.0, 4.0, 0.1) == pytest.approx(0.25, rel=1e-14)


def test_linear_rate_error_bound_hand_value():
    # J0 = 0.5, Delta_mu = 0.2, eta = 0.5, K = 10: 1 · exp(-0.2·0.5·10 / 2) = e^{-0.5}
    assert theory.linear_rate_error_bound(0.5, 0.2, 0.5, 10) == pytest.approx(math.exp(-0.5), rel=1e-14)


def test_corollary_3_1_on_two_arms():
    # Two arms, one correct: g+ - g- = e1 - e2 for every theta, so the normalized gradient has
    # Delta_mu = sqrt2 at every step (a uniform gap), and the log-odds rise by exactly sqrt2·eta:
    # 1 - J(K) = (1 - J0) / (1 - J0 + J0 exp(K·Delta_mu·eta)), below Corollary 3.1's bound.
    policy = TabularSoftmax(2)
    c = policy.constants()
    eta = theory.linear_rate_step(SQRT2, c.L_o, c.G_o)
    theta0 = torch.tensor([[-2.0, 0.0], [0.3, 0.0]])
    K = 40
    traj = simulate(policy, torch.tensor([[1.0, 0.0]]), theta0, steps=K, direction="normalized-gradient",
                    step_size=eta, fast=False)
    assert torch.allclose(traj.metrics["delta_mu"][:-1], torch.full((K, 2), SQRT2), rtol=1e-12)
    J0 = traj.metrics["J"][0]
    k = traj.step.unsqueeze(1).double()
    exact = (1 - J0) / (1 - J0 + J0 * torch.exp(k * SQRT2 * eta))
    assert torch.allclose(1 - traj.metrics["J"], exact, rtol=1e-10)
    bound = theory.linear_rate_error_bound(J0, SQRT2, eta, k)
    assert bool((1 - traj.metrics["J"] <= bound).all())


def test_linear_rate_steps_hand_value_and_inverse():
    # J0 = 0.5, target 0.99, Delta_mu·eta = 1: 2·log(0.5 / (0.5·0.01)) = 2·log 100 = 9.2103404
    assert theory.linear_rate_steps(0.5, 2.0, 0.5, 0.99) == pytest.approx(2 * math.log(100), rel=1e-14)
    # the bound of Corollary 3.1 after that many steps is exactly 1 - target
    J0, dm, eta, target = torch.tensor([0.01, 0.2, 0.7]), SQRT2, torch.tensor([0.01, 0.1, 1.0]), 0.999
    K = theory.linear_rate_steps(J0, dm, eta, target)
    assert torch.allclose(theory.linear_rate_error_bound(J0, dm, eta, K), torch.full((3,), 1 - target), rtol=1e-12)
    assert theory.linear_rate_steps(0.995, 1.0, 1.0, 0.99) < 0  # already there


def test_step_condition_token_hand_values():
    # Delta_mu = 1, L_p = 0.5, G_p² = 2, T_inf = 4, T_psi1 = 2.
    # J = 0.5: min{2 / 0.5, 8·16} = 4; first = 0.5 / (0.5·4 + 2·4) = 0.05;
    #          second = 0.5 / sqrt(0.5·4 + 2·2) = 0.5 / sqrt6 = 0.204; the first binds.
    args = (0.5, SQRT2, 4.0, 2.0)
    assert theory.step_condition_token(1.0, 0.5, *args) == pytest.approx(0.05, rel=1e-14)
    # J = 0.99: 2 / 0.01 = 200 > 128, so 8 T² = 128 is used: 0.5 / (2 + 2·128) = 0.5 / 258
    assert theory.step_condition_token(1.0, 0.99, *args) == pytest.approx(0.5 / 258, rel=1e-14)
    # J = 1: 1/(1 - J) = inf; the min still picks 8 T², finite
    assert theory.step_condition_token(1.0, 1.0, *args) == pytest.approx(0.5 / 258, rel=1e-14)
    # Delta_mu = 100: first = 50 / 10 = 5 > second = 0.5 / sqrt6
    assert theory.step_condition_token(100.0, 0.5, *args) == pytest.approx(0.5 / math.sqrt(6), rel=1e-14)
    assert theory.step_condition_token(-1.0, 0.5, *args) == 0.0
    batched = theory.step_condition_token(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.5, 0.99, 1.0]), *args)
    assert torch.allclose(batched, torch.tensor([0.05, 0.5 / 258, 0.5 / 258]), rtol=1e-14)


@given(dm=st.floats(0.0, 0.01), J=st.floats(0.0, 0.9), Tpsi=st.floats(1.0, 5.0))
def test_theory_step_cap_is_15a_without_L_p(dm, J, Tpsi):
    # (18) is (15a) with L_p = 0 on the T_psi1/(1 - J) branch: dm (1 - J) / (2 G_p² T_psi1).
    token = theory.step_condition_token(dm, J, 0.0, 1.0, 100.0, Tpsi)  # T_inf large: that branch
    assert 2 * token == pytest.approx(theory.theory_step_cap(dm, J, Tpsi), rel=1e-12, abs=1e-300)


# --- Lemma 1, Lemma 2 ------------------------------------------------------------------------------


def test_lemma1_band_hand_value():
    # eta = 0.1, L_o = 0.5, G_o = 1: (0.5 + 8)·0.01 = 0.085
    assert theory.lemma1_band(0.1, 0.5, 1.0) == pytest.approx(0.085, rel=1e-14)


@given(seed=st.integers(0, 2**31 - 1), frac=st.floats(0.01, 1.0))
def test_lemma1_band_holds_on_linear_softmax(seed, frac):
    gen = _gen(seed)
    policy = FeatureSoftmax(torch.randn(6, 3, generator=gen))
    c = policy.constants()
    theta = 2 * torch.randn(1, 3, generator=gen)
    w = torch.randn(1, 3, generator=gen)
    w /= w.norm()
    reward = torch.tensor([1.0, 1, 0, 0, 0, 0])
    eta = frac * theory.smoothness_step_cap(c.L_o)
    logp, proj = policy.logp_and_jvp(theta, w)
    dm = gap_along(logp, proj, reward).delta_mu
    change = _log_odds(policy.logp(theta + eta * w), reward.bool()) - _log_odds(logp, reward.bool())
    assert bool(((change - dm * eta).abs() <= theory.lemma1_band(eta, c.L_o, c.G_o)).all())


def test_lemma2_hand_values():
    # eta = 0.1, J = 0.5, L_p = 0.5, G_p² = 2, T_inf = 4, T_psi1 = 2: (0.5·4 + 2·2/0.5)·0.01 = 0.1
    assert theory.lemma2_penalty(0.1, 0.5, 0.5, SQRT2, 4.0, 2.0) == pytest.approx(0.1, rel=1e-14)
    # 1 / sqrt(2·2·2) = 1 / sqrt8
    assert theory.lemma2_step_cap(SQRT2, 2.0) == pytest.approx(1 / math.sqrt(8), rel=1e-14)


@given(seed=st.integers(0, 2**31 - 1), frac=st.floats(0.01, 1.0))
def test_lemma2_inequality_holds_on_token_policy(seed, frac):
    gen = _gen(seed)
    policy = TokenSoftmax(3, 3, eos=2)
    c = policy.constants()
    T_psi1 = c.T_inf / math.log(2)  # valid for every policy (Assumption 3)
    theta = policy.init(1, scale=1.5, generator=gen)
    w = torch.randn(1, policy.n_params, generator=gen)
    w /= w.norm()
    reward = (torch.rand(policy.n_responses, generator=gen) < 0.4).double()
    reward[0], reward[-1] = 1.0, 0.0
    eta = frac * theory.lemma2_step_cap(c.G_p, T_psi1)
    logp, proj = policy.logp_and_jvp(theta, w)
    stats = gap_along(logp, proj, reward)
    change = lemma3_log_odds_change(logp, policy.logp(theta + eta * w), reward)
    penalty = theory.lemma2_penalty(eta, stats.J, c.L_p, c.G_p, c.T_inf, T_psi1)
    assert bool((change >= stats.delta_mu * eta - penalty).all())


# --- collapse windows ----------------------------------------------------------------------------


def test_collapse_window_trajectory_hand_values():
    # Delta_mu = 0.01, L_o = 1, G_o = 2: s = 5; low = 60·0.01/5 = 0.12, high = 1/(2 sqrt5) = 0.2236;
    # premise: 0.01 <= sqrt5/120 = 0.01863 and G_o² = 4 >= L_o = 1
    win = theory.collapse_window_trajectory(0.01, 1.0, 2.0)
    assert win.low == pytest.approx(0.12, rel=1e-14)
    assert win.high == pytest.approx(1 / (2 * math.sqrt(5)), rel=1e-14)
    assert win.valid is True
    assert theory.collapse_window_trajectory(0.02, 1.0, 2.0).valid is False  # 0.02 > 0.01863
    assert theory.collapse_window_trajectory(0.001, 1.0, 0.5).valid is False  # G_o² < L_o
    assert theory.collapse_window_trajectory(0.0, 1.0, 2.0).valid is False  # Delta_mu must be > 0


def test_collapse_window_token_hand_values():
    # Delta_mu = 0.005, L_p = 1, G_p = 2, T = 4: s = 1·2 + 4·4 = 18; low = 120·0.005/18 = 1/30,
    # high = 1/(2 sqrt18) = 0.11785; premise 0.005 <= sqrt18/240 = 0.01768 and G_p² >= L_p
    win = theory.collapse_window_token(0.005, 1.0, 2.0, 4)
    assert win.low == pytest.approx(1 / 30, rel=1e-14)
    assert win.high == pytest.approx(1 / (2 * math.sqrt(18)), rel=1e-14)
    assert win.valid is True
    assert theory.collapse_window_token(0.02, 1.0, 2.0, 4).valid is False
    assert theory.collapse_window_token(0.005, 4.0, 1.0, 4).valid is False


@given(dm=st.floats(1e-6, 1.0), L=st.floats(0.0, 10.0), G=st.floats(0.01, 10.0), T=st.integers(1, 64))
def test_valid_collapse_windows_are_nonempty(dm, L, G, T):
    # Under the premise Delta_mu <= sqrt(s)/120 (resp. /240), low <= high holds with equality at the edge.
    for win in (theory.collapse_window_trajectory(dm, L, G), theory.collapse_window_token(dm, L, G, T)):
        if win.valid:
            assert win.low <= win.high * (1 + 1e-12)


# --- the App. F instances (Theorems 2 and 4) -------------------------------------------------------

_PHI = ((0.0, 0.5), (0.5, 0.0), (-0.5, 0.0))  # App. F's features for G = 1: o1, o-1, o-2


def _collapse_path(eta: float, delta: float, G: float, K: int) -> list[list[float]]:
    """π_k(o1), π_k(o-1), π_k(o-2) for k = 0..K, by stepping θ from (eta/3)(-1, 0) (51) along
    w_k = (1/3)((-1)^k·2, -delta) (53), logits φ·θ, a plain loop."""
    theta, out = [-eta / 3, 0.0], []
    for k in range(K + 1):
        logits = [G * (a * theta[0] + b * theta[1]) for a, b in _PHI]
        z = sum(math.exp(v) for v in logits)
        out.append([math.exp(v) / z for v in logits])
        theta = [theta[0] + eta * 2 * (-1) ** k / 3, theta[1] - eta * delta / 3]
    return out


@pytest.mark.parametrize("T", [None, 1, 3])
@pytest.mark.parametrize("eta, G", [(0.1, 1.0), (0.4, 1.0), (0.2, 2.5)])
def test_collapse_J_against_stepping_the_instance(T, eta, G):
    delta = theory.collapse_delta(eta, G, T)
    path = _collapse_path(eta, delta, G, 60)
    k = torch.arange(61, dtype=torch.float64)
    expected = torch.tensor([p[0] ** (1 if T is None else T) for p in path])  # independent tokens at F.2
    assert torch.allclose(theory.collapse_J(eta, delta, G, k, T), expected, rtol=1e-12, atol=0)
    assert theory.collapse_J(eta, delta, G, 0.0, T) == pytest.approx((1 / (1 + 2 * math.cosh(eta * G / 6))) ** (T or 1), rel=1e-14)


def test_collapse_delta_and_alignment_bound_hand_values():
    assert theory.collapse_delta(0.3, 2.0) == pytest.approx(0.04, rel=1e-14)  # eta G / 15 (53)
    assert theory.collapse_delta(0.3, 2.0, 4) == pytest.approx(0.06, rel=1e-14)  # eta G / 10 (58)
    assert theory.collapse_alignment_bound(0.3, 2.0) == pytest.approx(0.04, rel=1e-14)  # 0.3·4/30
    assert theory.collapse_alignment_bound(0.3, 2.0, 4) == pytest.approx(0.08, rel=1e-14)  # 4·0.3·4/60


def _collapse_alignment(eta: float, G: float, T: int | None, K: int) -> list[float]:
    """Delta_mu(k) = w_k·(g+ - g-) on the instance, by enumerating responses: the score of a response
    is Σ_t φ(o_t) minus a term common to all, which cancels in g+ - g- (App. F.1, F.2)."""
    import itertools

    delta = theory.collapse_delta(eta, G, T)
    out = []
    for k, probs in enumerate(_collapse_path(eta, delta, G, K)):
        w = (2 * (-1) ** k / 3, -delta / 3)
        length = 1 if T is None else T
        plus, minus, mass = [0.0, 0.0], [0.0, 0.0], 0.0
        for seq in itertools.product(range(3), repeat=length):
            p = math.prod(probs[t] for t in seq)
            phi = [G * sum(_PHI[t][i] for t in seq) for i in range(2)]
            if all(t == 0 for t in seq):
                plus = phi
            else:
                minus = [m + p * f for m, f in zip(minus, phi)]
                mass += p
        gap = [a - b / mass for a, b in zip(plus, minus)]
        out.append(w[0] * gap[0] + w[1] * gap[1])
    return out


@pytest.mark.parametrize("T", [None, 1, 2, 3])
@pytest.mark.parametrize("fraction", [0.25, 1.0])
def test_collapse_alignment_bound_holds_along_the_instance(T, fraction):
    # eta inside the window (52)/(16) with the instance's own L = G²/4 (rlvrlab.policies.softmax)
    G = 1.0
    s = G**2 / 4 + G**2 if T is None else G**2 / 4 * math.sqrt(T) + G**2 * T
    eta = fraction / (2 * math.sqrt(s))
    dm = _collapse_alignment(eta, G, T, 40)
    assert min(dm) >= theory.collapse_alignment_bound(eta, G, T) * (1 - 1e-12)


# --- GRPO and Dr. GRPO -----------------------------------------------------------------------------


def test_effective_steps_and_cap_hand_values():
    # alpha = 0.1, Delta_mu = 2, J = 0.2, T_psi1 = 4
    assert theory.effective_step_grpo(0.1, 2.0, 0.2, 4.0) == pytest.approx(0.02, rel=1e-14)  # 0.1·2·0.4/4
    assert theory.effective_step_drgrpo(0.1, 2.0, 0.2) == pytest.approx(0.032, rel=1e-14)  # 0.1·2·0.16
    assert theory.theory_step_cap(2.0, 0.2, 4.0) == pytest.approx(0.4, rel=1e-14)  # 2·0.8/4


@given(alpha=st.floats(1e-3, 1e3), c=st.floats(1e-3, 1e3), dm=st.floats(1e-3, 10.0), T=st.floats(1.0, 100.0))
def test_grpo_plateau_is_where_grpo_s_step_reaches_c_times_the_cap(alpha, c, dm, T):
    J = theory.grpo_plateau(alpha, c)
    if 0 < J < 1:
        assert theory.effective_step_grpo(alpha, dm, J, T) == pytest.approx(c * theory.theory_step_cap(dm, J, T), rel=1e-9)


def test_grpo_plateau_hand_values():
    assert theory.grpo_plateau(1.0, 1.0) == 0.5
    assert theory.grpo_plateau(3.0, 1.0) == pytest.approx(0.1, rel=1e-14)  # 1/(1 + 9)
    assert theory.grpo_plateau(0.0, 1.0) == 1.0


# --- psi_1 norm ------------------------------------------------------------------------------------


def _psi1_bisect(values: list[float], probs: list[float]) -> float:
    """Plain bisection for E exp(|X|/a) = 2 (the reference)."""
    lo, hi = 1e-9, 1e9
    for _ in range(300):
        mid = math.sqrt(lo * hi) if hi / lo > 4 else (lo + hi) / 2
        if sum(p * math.exp(abs(x) / mid) for x, p in zip(values, probs) if p > 0) > 2:
            lo = mid
        else:
            hi = mid
    return hi


def test_psi1_constant_sample():
    # X = a surely: exp(a/t) = 2 at t = a / log 2
    for a in (1.0, 3.0, 17.0):
        assert float(theory.psi1_norm([a] * 5)) == pytest.approx(a / math.log(2), rel=1e-13)
    assert float(theory.psi1_norm([0.0, 0.0])) == 0.0


def test_psi1_two_point_distribution():
    # X in {1, 3} with probability 1/2 each: with u = e^{1/a}, (u + u³)/2 = 2, i.e. u³ + u - 4 = 0.
    # Cardano: u = cbrt(2 + sqrt(4 + 1/27)) + cbrt(2 - sqrt(4 + 1/27)) = 1.3787967, a = 1/log u = 3.1132168.
    s = math.sqrt(4 + 1 / 27)
    u = math.copysign(abs(2 + s) ** (1 / 3), 2 + s) + math.copysign(abs(2 - s) ** (1 / 3), 2 - s)
    a = 1 / math.log(u)
    assert a == pytest.approx(3.1132168403917606, rel=1e-12)
    assert float(theory.psi1_norm([1.0, 3.0])) == pytest.approx(a, rel=1e-12)
    assert float(theory.psi1_norm([1.0, 3.0], torch.tensor([0.5, 0.5]))) == pytest.approx(a, rel=1e-12)
    assert a == pytest.approx(_psi1_bisect([1.0, 3.0], [0.5, 0.5]), rel=1e-12)


def test_psi1_weights_equal_repeated_samples_and_batches_equal_rows():
    sample = theory.psi1_norm([1.0, 2.0, 2.0, 3.0, -5.0])  # |X| is used
    weighted = theory.psi1_norm(torch.tensor([1.0, 2.0, 3.0, 5.0]), torch.tensor([0.2, 0.4, 0.2, 0.2]))
    assert float(sample) == pytest.approx(float(weighted), rel=1e-13)
    gen = _gen(3)
    x = torch.randint(1, 20, (3, 4, 7), generator=gen).double()
    w = torch.softmax(torch.randn(3, 4, 7, generator=gen), -1)
    batched = theory.psi1_norm(x, w)
    assert batched.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert float(batched[i, j]) == pytest.approx(float(theory.psi1_norm(x[i, j], w[i, j])), rel=1e-13)
            assert float(batched[i, j]) == pytest.approx(_psi1_bisect(x[i, j].tolist(), w[i, j].tolist()), rel=1e-10)


@given(values=st.lists(st.just(0.0) | st.floats(1e-3, 200.0), min_size=1, max_size=12), seed=st.integers(0, 2**31 - 1))
def test_psi1_defining_equation_and_jensen(values, seed):
    x = torch.tensor(values)
    p = torch.softmax(torch.randn(len(values), generator=_gen(seed)), -1)
    a = float(theory.psi1_norm(x, p))
    mean, top = float((p * x).sum()), max(values)
    if top == 0:
        assert a == 0.0
        return
    assert float((p * torch.exp(x / a)).sum()) == pytest.approx(2.0, abs=1e-9)
    assert mean / math.log(2) * (1 - 1e-12) <= a <= top / math.log(2) * (1 + 1e-12)


def test_psi1_bad_input():
    with pytest.raises(ValueError, match="lengths"):
        theory.psi1_norm([])
    with pytest.raises(ValueError, match="weights"):
        theory.psi1_norm([1.0, 2.0], torch.tensor([0.7, 0.7]))
    with pytest.raises(ValueError, match="weights"):
        theory.psi1_norm([1.0, 2.0], torch.tensor([1.0, 0.0, 0.0]))


# --- second order (App. F) -------------------------------------------------------------------------


def test_second_order_hand_values():
    # eta = 0.1, Delta_mu = 1, Var+ = 0.5, Var- = 2.5: 0.1 + ½(0.5 - 2.5)·0.01 = 0.09
    assert theory.log_odds_change_second_order(0.1, 1.0, 0.5, 2.5) == pytest.approx(0.09, rel=1e-14)
    # with E+[h] - E-[h] = 0.5 - 0 : 0.1 + ½(-2 + 0.5)·0.01 = 0.0925
    assert theory.log_odds_change_second_order(0.1, 1.0, 0.5, 2.5, 0.5, 0.0) == pytest.approx(0.0925, rel=1e-14)
    # eta_crit = 2·1 / (2.5 - 0.5) = 1;  with curvature gap 0.5: 2 / 1.5
    assert theory.eta_crit_second_order(1.0, 0.5, 2.5) == pytest.approx(1.0, rel=1e-14)
    assert theory.eta_crit_second_order(1.0, 0.5, 2.5, 0.5) == pytest.approx(4 / 3, rel=1e-14)


def test_eta_crit_branches():
    assert theory.eta_crit_second_order(0.0, 0.5, 2.5) == 0.0  # Delta_mu <= 0: no safe step
    assert theory.eta_crit_second_order(-1.0, 0.5, 2.5) == 0.0
    assert theory.eta_crit_second_order(1.0, 2.5, 0.5) == math.inf  # Var- <= Var+: no threshold
    assert theory.eta_crit_second_order(1.0, 1.0, 1.0) == math.inf
    out = theory.eta_crit_second_order(torch.tensor([1.0, -1.0, 1.0]), torch.tensor([0.5, 0.5, 3.0]), 2.5)
    assert torch.equal(out, torch.tensor([1.0, 0.0, math.inf]))


def _linear_instance(seed: int, *, delta_mu: float | None = None):
    """Random FeatureSoftmax, one run; w a unit vector (optionally projected so that w·gap = delta_mu)."""
    gen = _gen(seed)
    policy = FeatureSoftmax(torch.randn(7, 4, generator=gen))
    theta = torch.randn(1, 4, generator=gen)
    reward = torch.tensor([1.0, 0, 0, 0, 0, 0, 0] if delta_mu is not None else [1.0, 1, 0, 1, 0, 0, 0])
    w = torch.randn(1, 4, generator=gen)
    w /= w.norm()
    if delta_mu is not None:
        g = gap_stats(policy.logp(theta)[0], policy.scores(theta)[0], reward, w)
        gap = g.gap
        w = w - ((w * gap).sum() - delta_mu) / (gap * gap).sum() * gap  # w·gap = delta_mu exactly
    return policy, theta, w, reward


def _exact_change(policy, theta, w, reward, eta):
    return lemma3_log_odds_change(policy.logp(theta), policy.logp(theta + eta * w), reward)


def test_second_order_expansion_residual_is_third_order():
    policy, theta, w, reward = _linear_instance(5)
    s = gap_stats(policy.logp(theta), policy.scores(theta), reward.expand(1, 1, 7), w)
    etas = [0.1 / 2**i for i in range(6)]
    res = []
    paper = []
    for eta in etas:
        exact = float(_exact_change(policy, theta, w, reward, eta))
        ours = theory.log_odds_change_second_order(eta, float(s.delta_mu), float(s.var_plus), float(s.var_minus))
        res.append(exact - ours)
        # App. F as printed, (Var+ - Var-)·eta² without the ½
        paper.append(exact - (float(s.delta_mu) * eta + float(s.var_plus - s.var_minus) * eta**2))
    scaled = [r / e**3 for r, e in zip(res, etas)]
    assert max(abs(x) for x in scaled) < 10 * abs(scaled[-1]) + 1e-6  # residual / eta³ stays bounded
    # halving eta divides the residual by ~8 (third order)
    for a, b in zip(res[2:], res[3:]):
        assert 6.0 < a / b < 10.0
    # the printed coefficient leaves a second-order residual: paper/eta² tends to ½(Var- - Var+)
    half_gap = float(s.var_minus - s.var_plus) / 2
    assert abs(half_gap) > 1e-3
    assert paper[-1] / etas[-1] ** 2 == pytest.approx(half_gap, rel=1e-2)


def test_second_order_curvature_term_vanishes_for_linear_logits():
    policy, theta, w, reward = _linear_instance(6)
    logp, proj = policy.logp_and_jvp(theta, w)
    s = gap_along(logp, proj, reward.expand(1, 1, 7), policy.curvature(theta, w))
    assert float((s.curv_plus - s.curv_minus).abs()) < 1e-14
    assert float(s.curv_plus) < 0  # -Var_pi(w·phi)


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_eta_crit_matches_root_of_exact_change(seed):
    policy, theta, w, reward = _linear_instance(seed, delta_mu=0.0)
    s0 = gap_stats(policy.logp(theta), policy.scores(theta), reward.expand(1, 1, 7), w)
    dm = 0.02 * float(s0.var_minus)  # small relative to the variance gap (Var+ = 0: one correct response)
    policy, theta, w, reward = _linear_instance(seed, delta_mu=dm)
    s = gap_stats(policy.logp(theta), policy.scores(theta), reward.expand(1, 1, 7), w)
    assert float(s.delta_mu) == pytest.approx(dm, rel=1e-10)
    assert float(s.var_plus) == pytest.approx(0.0, abs=1e-14)
    crit = theory.eta_crit_second_order(float(s.delta_mu), float(s.var_plus), float(s.var_minus))
    assert 0 < crit < math.inf
    # the exact change is positive just above 0 and negative at 2·eta_crit; bisect for its root
    lo, hi = 1e-3 * crit, 2 * crit
    assert float(_exact_change(policy, theta, w, reward, lo)) > 0
    assert float(_exact_change(policy, theta, w, reward, hi)) < 0
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(_exact_change(policy, theta, w, reward, mid)) > 0:
            lo = mid
        else:
            hi = mid
    assert crit == pytest.approx(lo, rel=0.1)


# --- App. I.1: exact REINFORCE on a bandit ----------------------------------------------------------


def _bandit_alignment_loop(pi: list[float], best: int) -> float:
    """w·(g+ - g-) with w = ∇J, g+ = ∇log π(a*) and g- the π-weighted mean of ∇log π(a) over a ≠ a*,
    ∇_θ log π(a) = e_a - π (eq. 7, 9), a loop over coordinates."""
    K = len(pi)
    score = [[float(a == i) - pi[i] for i in range(K)] for a in range(K)]
    w = [pi[best] * score[best][i] for i in range(K)]  # ∇J = π* ∇log π(a*)
    g_minus = [sum(pi[a] * score[a][i] for a in range(K) if a != best) / (1 - pi[best]) for i in range(K)]
    return sum(w[i] * (score[best][i] - g_minus[i]) for i in range(K))


@pytest.mark.parametrize("K", [2, 5, 40])
@pytest.mark.parametrize("seed", range(3))
def test_bandit_delta_mu_against_a_loop(K, seed):
    pi = torch.softmax(2 * torch.randn(4, K, generator=_gen(seed), dtype=torch.float64), -1)  # (R, K)
    for best in sorted({0, K // 2, K - 1}):
        got = theory.bandit_delta_mu(pi, best)
        assert got.shape == (4,)
        for r in range(4):
            assert float(got[r]) == pytest.approx(_bandit_alignment_loop(pi[r].tolist(), best), rel=1e-12)
            # App. I.1's first line: <∇J, ∇J> / (J(1 - J))
            grad = pi[r, best] * (torch.eye(K, dtype=torch.float64)[best] - pi[r])
            assert float(got[r]) == pytest.approx(float(grad @ grad / (pi[r, best] * (1 - pi[r, best]))), rel=1e-12)


def test_bandit_delta_mu_symmetric_is_the_general_form_with_equal_arms():
    K = 100
    J = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)
    pi = torch.cat([((1 - J) / (K - 1)).unsqueeze(1).expand(25, K - 1), J.unsqueeze(1)], 1)  # the rewarded arm last
    assert torch.allclose(theory.bandit_delta_mu_symmetric(J, K), theory.bandit_delta_mu(pi, K - 1), rtol=1e-12)
    assert theory.bandit_delta_mu_symmetric(0.5, K) == pytest.approx(K / (4 * (K - 1)), rel=1e-15)  # its maximum
    assert theory.bandit_delta_mu_symmetric(0.5, 2) == 0.5  # two arms: J(1 - J)·2


# --- types and input checks --------------------------------------------------------------------------


def test_floats_in_floats_out_tensors_in_tensors_out():
    assert type(theory.logistic_lower_bound(0.2, 2)) is float
    assert type(theory.log_odds(0.2)) is float
    assert theory.log_odds(0.2) == pytest.approx(math.log(0.25), rel=1e-14)  # log(0.2/0.8)
    assert type(theory.step_condition_token(1.0, 0.5, 0.5, 1.0, 4, 2.0)) is float
    assert type(theory.eta_crit_second_order(1.0, 0.5, 2.5)) is float
    assert type(theory.collapse_J(0.1, 0.01, 1.0, 5, 2)) is float and type(theory.grpo_plateau(1, 2)) is float
    assert type(theory.linear_rate_steps(0.5, 1.0, 0.1, 0.9)) is float
    t = theory.logistic_lower_bound(torch.tensor([0.2, 0.5]), 2.0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.shape == (2,)
    t = theory.stagnation_ceiling(0.2, torch.tensor(1.0), 0.5)
    assert isinstance(t, torch.Tensor) and float(t) == pytest.approx(0.5283958222438627, rel=1e-14)
    t = theory.effective_step_grpo(0.1, torch.tensor([2.0, 4.0]), 0.2, 4.0)
    assert torch.allclose(t, torch.tensor([0.02, 0.04]), rtol=1e-14)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: theory.logistic_lower_bound(1.5, 1.0), "J0"),
        (lambda: theory.logistic_lower_bound(torch.tensor([0.5, -0.1]), 1.0), "J0"),
        (lambda: theory.stagnation_ceiling(math.nan, 1.0, 1.0), "J0"),
        (lambda: theory.log_odds(2.0), "J"),
        (lambda: theory.step_condition_token(1.0, 1.2, 0.5, 1.0, 4, 2.0), "J"),
        (lambda: theory.step_condition_token(1.0, 0.5, 0.5, 1.0, 4, math.nan), "T_psi1"),
        (lambda: theory.step_condition_token(1.0, 0.5, -0.5, 1.0, 4, 2.0), "L_p"),
        (lambda: theory.smoothness_step_cap(-1.0), "L_o"),
        (lambda: theory.step_condition_trajectory(1.0, -1.0, 1.0), "L_o"),
        (lambda: theory.step_condition_trajectory(1.0, 1.0, math.inf), "G_o"),
        (lambda: theory.lemma1_band(-0.1, 1.0, 1.0), "eta"),
        (lambda: theory.lemma2_penalty(0.1, -0.5, 1.0, 1.0, 4, 2.0), "J"),
        (lambda: theory.effective_step_drgrpo(0.1, 1.0, 1.1), "J"),
        (lambda: theory.theory_step_cap(1.0, -0.1, 2.0), "J"),
        (lambda: theory.linear_rate_steps(1.5, 1.0, 1.0, 0.9), "J0"),
        (lambda: theory.linear_rate_steps(0.5, 1.0, 1.0, 1.9), "target"),
        (lambda: theory.collapse_J(-0.1, 0.1, 1.0, 3.0), "eta"),
        (lambda: theory.collapse_delta(math.nan, 1.0), "eta"),
        (lambda: theory.collapse_alignment_bound(-1.0, 1.0, 2), "eta"),
        (lambda: theory.grpo_plateau(-1.0, 1.0), "alpha"),
        (lambda: theory.bandit_delta_mu(torch.full((3,), 1 / 3), 3), "best"),
        (lambda: theory.bandit_delta_mu_symmetric(0.5, 1), "K"),
        (lambda: theory.bandit_delta_mu_symmetric(1.5, 4), "J"),
    ],
)
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ValueError, match=rf"^{field}: got"):
        call()
