"""rlvrlab.gap: the exact quantities against plain loops over responses, the paper's identities
(9), Lemma 3 and Lemma 8 exactly, and the Monte Carlo estimators against the exact values within
their own standard errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rlvrlab.gap import combine_prompts, gap_along, gap_stats, gap_stats_mc, lemma3_log_odds_change, log_odds_change_mc
from rlvrlab.policies import FeatureSoftmax, LinearContextualSoftmax, TabularSoftmax, TokenSoftmax

pytestmark = pytest.mark.usefixtures("float64")

NAN = math.nan


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_instance(seed: int, batch: tuple[int, ...], N: int, d: int):
    """logp (..., N) normalized, scores (..., N, d), 0/1 rewards with all-0 and all-1 rows, w (..., d)."""
    gen = _gen(seed)
    logp = torch.log_softmax(2 * torch.randn(*batch, N, generator=gen), -1)
    scores = torch.randn(*batch, N, d, generator=gen)
    reward = (torch.rand(*batch, N, generator=gen) < 0.5).double()
    flat = reward.view(-1, N)
    if flat.shape[0] >= 3:
        flat[0] = 0.0
        flat[1] = 1.0
        flat[2, 0], flat[2, 1] = 1.0, 0.0  # at least one defined row
    w = torch.randn(*batch, d, generator=gen)
    return logp, scores, reward, w


def _loop_stats(logp, scores, reward, w):
    """Plain loop over the batch and the responses: dict of name -> nested lists."""
    N, d = scores.shape[-2], scores.shape[-1]
    out = {k: [] for k in ("J", "log_odds", "delta_mu", "var_plus", "var_minus", "g_plus", "g_minus")}
    for lp, sc, r, wv in zip(logp.reshape(-1, N), scores.reshape(-1, N, d), reward.reshape(-1, N), w.reshape(-1, d)):
        p = [math.exp(x) for x in lp.tolist()]
        rr = r.tolist()
        J = sum(pi * ri for pi, ri in zip(p, rr))
        Jm = sum(pi * (1 - ri) for pi, ri in zip(p, rr))
        proj = [float(sc[n] @ wv) for n in range(N)]
        row = {"J": J, "log_odds": (math.log(J) if J > 0 else -math.inf) - (math.log(Jm) if Jm > 0 else -math.inf)}
        for side, mass, sel in (("plus", J, 1.0), ("minus", Jm, 0.0)):
            if mass == 0:
                row[f"g_{side}"] = [NAN] * d
                row[f"mean_{side}"] = row[f"var_{side}"] = NAN
                continue
            q = [pi / mass if ri == sel else 0.0 for pi, ri in zip(p, rr)]
            row[f"g_{side}"] = [sum(q[n] * float(sc[n, j]) for n in range(N)) for j in range(d)]
            m = sum(q[n] * proj[n] for n in range(N))
            row[f"mean_{side}"] = m
            row[f"var_{side}"] = sum(q[n] * (proj[n] - m) ** 2 for n in range(N))
        row["delta_mu"] = row["mean_plus"] - row["mean_minus"]
        for k in out:
            out[k].append(row[k])
    shape = tuple(logp.shape[:-1])
    return {k: torch.tensor(v).reshape(*shape, -1) if k.startswith("g_") else torch.tensor(v).reshape(shape)
            for k, v in out.items()}


def _close(a, b, tol=1e-12):
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=tol, atol=tol, equal_nan=True)


@given(seed=st.integers(0, 2**31 - 1), N=st.integers(2, 6), d=st.integers(1, 4),
       batch=st.sampled_from([(), (1,), (4,), (3, 2)]))
def test_gap_stats_equals_plain_loop(seed, N, d, batch):
    logp, scores, reward, w = _random_instance(seed, batch, N, d)
    s = gap_stats(logp, scores, reward, w)
    ref = _loop_stats(logp, scores, reward, w)
    for name in ("J", "log_odds", "delta_mu", "var_plus", "var_minus"):
        _close(getattr(s, name), ref[name])
    _close(s.g_plus, ref["g_plus"])
    _close(s.g_minus, ref["g_minus"])
    _close(s.gap, ref["g_plus"] - ref["g_minus"])
    J = ref["J"]
    Jm = (logp.exp() * (1 - reward)).sum(-1)
    assert torch.equal(s.has_plus, J > 0)
    assert torch.equal(s.has_minus, Jm > 0)
    assert torch.equal(s.defined, (J > 0) & (Jm > 0))
    # gap_along (projected scores) gives the same directional statistics
    a = gap_along(logp, (scores * w.unsqueeze(-2)).sum(-1), reward)
    for name in ("J", "log_odds", "delta_mu", "var_plus", "var_minus"):
        _close(getattr(a, name), ref[name])


@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(3, 8))
def test_summary_averages_where_defined(seed, rows):
    logp, scores, reward, w = _random_instance(seed, (rows,), 4, 2)
    s = gap_stats(logp, scores, reward, w)
    out = s.summary()
    ok = s.defined
    assert out["n"] == rows and out["n_defined"] == float(ok.sum()) >= 1
    assert out["J"] == pytest.approx(float(s.J.mean()), rel=1e-12)
    assert "note" not in out
    for name in ("delta_mu", "var_plus", "var_minus", "log_odds"):
        assert not math.isnan(out[name])
        values = [float(v) for v, good in zip(getattr(s, name), ok) if good]
        assert out[name] == pytest.approx(sum(values) / len(values), rel=1e-12, abs=1e-14)


def test_summary_when_nothing_is_defined():
    logp = torch.log_softmax(torch.randn(3, 4, generator=_gen(0)), -1)
    reward = torch.tensor([[0.0] * 4, [1.0] * 4, [0.0] * 4])
    s = gap_stats(logp, torch.randn(3, 4, 2, generator=_gen(1)), reward, torch.ones(3, 2))
    out = s.summary()
    assert out["n_defined"] == 0.0
    assert "undefined" in out["note"]
    assert out["J"] == pytest.approx(1 / 3, rel=1e-12)  # J = (0 + 1 + 0) / 3
    assert torch.isnan(s.delta_mu).all() and torch.isnan(s.g_plus[0]).all() and torch.isnan(s.g_minus[1]).all()


# --- identity (9) on every policy ---------------------------------------------------------------------


def _policies():
    gen = _gen(11)
    feats = torch.randn(5, 3, generator=gen)
    return {
        "tabular": TabularSoftmax(4),
        "feature": FeatureSoftmax(feats),
        "feature-C": FeatureSoftmax(torch.randn(2, 5, 3, generator=gen)),
        "contextual": LinearContextualSoftmax(torch.randn(3, 2, generator=gen), arms=4),
        "token-eos": TokenSoftmax(3, 3, eos=0),
        "token-prefix": TokenSoftmax(3, 2, eos=2, parametrization="prefix"),
        "token-noeos": TokenSoftmax(2, 3),
        "token-linear": TokenSoftmax(3, 3, eos=1, parametrization="linear", features=torch.randn(3, 2, generator=gen)),
    }


POLICIES = _policies()


def _reward_for(policy, seed):
    gen = _gen(seed)
    r = (torch.rand(policy.n_prompts, policy.n_responses, generator=gen) < 0.4).double()
    r[:, 0], r[:, 1] = 1.0, 0.0  # 0 < J < 1 on every prompt
    return r


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_identity_9_gradient_is_J_1mJ_times_gap(name):
    policy = POLICIES[name]
    gen = _gen(12)
    theta = policy.init(1, scale=1.0, generator=gen)[0]
    reward = _reward_for(policy, 13)
    C, d = policy.n_prompts, policy.n_params

    def J_of(t):  # (C,) success rate of each prompt
        return (policy.logp(t.unsqueeze(0))[0].exp() * reward).sum(-1)

    jac = torch.autograd.functional.jacobian(J_of, theta)  # (C, d)
    w = torch.randn(d, generator=gen)
    s = gap_stats(policy.logp(theta.unsqueeze(0))[0], policy.scores(theta.unsqueeze(0))[0], reward, w.expand(C, d))
    J = s.J.unsqueeze(-1)
    torch.testing.assert_close(jac, J * (1 - J) * s.gap, rtol=1e-12, atol=1e-12)
    # both against central finite differences
    h = 1e-5
    fd = torch.stack([(J_of(theta + h * e) - J_of(theta - h * e)) / (2 * h) for e in torch.eye(d)], -1)
    torch.testing.assert_close(fd, jac, rtol=0, atol=1e-8)
    torch.testing.assert_close(fd, J * (1 - J) * s.gap, rtol=0, atol=1e-8)
    # delta_mu is w·(g+ - g-)
    torch.testing.assert_close(s.delta_mu, s.gap @ w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_lemma3_is_the_realized_log_odds_change(name):
    policy = POLICIES[name]
    gen = _gen(14)
    theta_old = policy.init(3, scale=1.0, generator=gen)
    theta_new = theta_old + 0.7 * torch.randn(theta_old.shape, generator=gen)
    reward = _reward_for(policy, 15)
    lp_old, lp_new = policy.logp(theta_old), policy.logp(theta_new)
    got = lemma3_log_odds_change(lp_old, lp_new, reward)

    def lo(lp):
        J = (lp.exp() * reward).sum(-1)
        return torch.log(J) - torch.log((lp.exp() * (1 - reward)).sum(-1))

    torch.testing.assert_close(got, lo(lp_new) - lo(lp_old), rtol=1e-12, atol=1e-12)
    assert bool((got.abs() > 1e-3).all())  # a real change, not a trivial zero


# --- combine_prompts and Lemma 8 ------------------------------------------------------------------------


@given(seed=st.integers(0, 2**31 - 1), C=st.integers(1, 4), N=st.integers(2, 5), R=st.integers(1, 3))
def test_combine_prompts_equals_pooled_distribution(seed, C, N, R):
    gen = _gen(seed)
    logp = torch.log_softmax(2 * torch.randn(R, C, N, generator=gen), -1)
    proj = torch.randn(R, C, N, generator=gen)
    reward = (torch.rand(R, C, N, generator=gen) < 0.5).double()
    reward[:, 0, 0], reward[:, 0, 1] = 1.0, 0.0  # the pool has both sides
    if C >= 3:
        reward[:, 1] = 0.0  # a prompt without a correct response
        reward[:, 2] = 1.0  # and one without an incorrect one
    weights = torch.softmax(torch.randn(R, C, generator=gen), -1)
    got = combine_prompts(gap_along(logp, proj, reward), weights)
    # the pooled distribution P(q, o) = P_Q(q) π(o|q), a plain loop
    for r in range(R):
        P, x, rr = [], [], []
        for c in range(C):
            for n in range(N):
                P.append(float(weights[r, c]) * math.exp(float(logp[r, c, n])))
                x.append(float(proj[r, c, n]))
                rr.append(float(reward[r, c, n]))
        J = sum(p * y for p, y in zip(P, rr))
        ref = {"J": J, "log_odds": math.log(J / (1 - J))}
        for side, mass, sel in (("plus", J, 1.0), ("minus", 1 - J, 0.0)):
            m = sum(p * v for p, v, y in zip(P, x, rr) if y == sel) / mass
            ref[f"mean_{side}"] = m
            ref[f"var_{side}"] = sum(p * (v - m) ** 2 for p, v, y in zip(P, x, rr) if y == sel) / mass
        ref["delta_mu"] = ref["mean_plus"] - ref["mean_minus"]
        for name, value in ref.items():
            assert float(getattr(got, name)[r]) == pytest.approx(value, rel=1e-10, abs=1e-12), name


def test_lemma8_batch_gradient_is_pooled_gap():
    gen = _gen(21)
    policy = LinearContextualSoftmax(torch.randn(3, 2, generator=gen), arms=4)
    theta = policy.init(1, scale=1.0, generator=gen)[0]
    reward = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
    PQ = torch.tensor([0.5, 0.2, 0.3])

    def J_batch(t):
        return (PQ * (policy.logp(t.unsqueeze(0))[0].exp() * reward).sum(-1)).sum()

    grad = torch.autograd.functional.jacobian(J_batch, theta)
    logp = policy.logp(theta.unsqueeze(0))[0]  # (C, N)
    scores = policy.scores(theta.unsqueeze(0))[0]  # (C, N, d)
    pooled_logp = (PQ.log().unsqueeze(-1) + logp).reshape(-1)
    w = torch.randn(policy.n_params, generator=gen)
    pooled = gap_stats(pooled_logp, scores.reshape(-1, policy.n_params), reward.reshape(-1), w)
    J = pooled.J
    torch.testing.assert_close(grad, J * (1 - J) * pooled.gap, rtol=1e-12, atol=1e-12)
    # combine_prompts' batch delta_mu is w·∇J / (J (1 - J))
    per = gap_stats(logp, scores, reward, w.expand(3, -1))
    batch = combine_prompts(per, PQ)
    torch.testing.assert_close(batch.delta_mu, (w @ grad) / (J * (1 - J)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batch.J, J_batch(theta), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_gap_vector_is_the_gradient_gap(name):
    policy = POLICIES[name]
    gen = _gen(22)
    theta = policy.init(2, scale=1.0, generator=gen)
    reward = _reward_for(policy, 23)
    C = policy.n_prompts
    weights = torch.softmax(torch.randn(2, C, generator=gen), -1)
    got = policy.gap_vector(theta, reward, weights)  # (R, d)
    # Lemma 8: the batch gap is ∇J_batch / (J (1 - J)), J_batch = Σ_c weights_c J_c.
    for r in range(2):
        def J_batch(t, r=r):
            return (weights[r] * (policy.logp(t.unsqueeze(0))[0].exp() * reward).sum(-1)).sum()

        J = J_batch(theta[r])
        grad = torch.autograd.functional.jacobian(J_batch, theta[r])
        torch.testing.assert_close(got[r], grad / (J * (1 - J)), rtol=1e-10, atol=1e-12)
    if C == 1:  # and the single-prompt gap of gap_stats
        s = gap_stats(policy.logp(theta), policy.scores(theta), reward.expand(2, 1, -1), torch.zeros(2, 1, policy.n_params))
        torch.testing.assert_close(got, s.gap[:, 0], rtol=1e-12, atol=1e-12)


def test_gap_vector_stays_exact_when_J_1mJ_underflows():
    # Two responses, log-odds 2000: 1 - J = e^-2000 is 0 in float64, so ∇J = J(1-J)·gap rounds to 0,
    # but the Gradient Gap is the constant (1, -1) of App. E.
    policy = TabularSoftmax(2)
    theta = torch.tensor([[1000.0, -1000.0]])
    reward = torch.tensor([[1.0, 0.0]])
    ones = torch.ones(1, 1)
    assert bool((policy.grad_J(theta, reward, ones) == 0).all())
    torch.testing.assert_close(policy.gap_vector(theta, reward, ones), torch.tensor([[1.0, -1.0]]), rtol=0, atol=1e-15)
    # no mass on one side: no gap (zero), not NaN
    assert bool((policy.gap_vector(theta, torch.tensor([[1.0, 1.0]]), ones) == 0).all())


# --- Monte Carlo -------------------------------------------------------------------------------------


def _loop_side(values):
    n = len(values)
    if n == 0:
        return n, NAN, NAN, NAN, NAN
    mean = sum(values) / n
    if n < 2:
        return n, mean, NAN, NAN, NAN
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    m4 = sum((v - mean) ** 4 for v in values) / n
    se_var = math.sqrt(max((m4 - var**2 * (n - 3) / (n - 1)) / n, 0.0))
    return n, mean, var, math.sqrt(var / n), se_var


@given(seed=st.integers(0, 2**31 - 1), G=st.integers(1, 9), batch=st.sampled_from([(), (5,), (2, 3)]))
def test_gap_stats_mc_equals_plain_loop(seed, G, batch):
    gen = _gen(seed)
    reward = (torch.rand(*batch, G, generator=gen) < 0.5).double()
    proj = torch.randn(*batch, G, generator=gen)
    mc = gap_stats_mc(reward, proj=proj)
    for idx in [()] if batch == () else list(torch.cartesian_prod(*[torch.arange(b) for b in batch]).reshape(-1, len(batch)).tolist()):
        idx = tuple(idx)
        r, x = reward[idx].tolist(), proj[idx].tolist()
        plus = _loop_side([v for v, y in zip(x, r) if y == 1])
        minus = _loop_side([v for v, y in zip(x, r) if y == 0])
        J = plus[0] / G
        both = plus[0] >= 1 and minus[0] >= 1
        ref = {
            "n_plus": plus[0], "n_minus": minus[0], "J": J, "se_J": math.sqrt(J * (1 - J) / G),
            "log_odds": math.log(plus[0] / minus[0]) if both else NAN,
            "se_log_odds": math.sqrt(1 / plus[0] + 1 / minus[0]) if both else NAN,
            "delta_mu": plus[1] - minus[1] if both else NAN,
            "se_delta_mu": math.sqrt(plus[3] ** 2 + minus[3] ** 2),
            "var_plus": plus[2], "se_var_plus": plus[4], "var_minus": minus[2], "se_var_minus": minus[4],
        }
        for name, value in ref.items():
            got = float(getattr(mc, name)[idx])
            if math.isnan(value):
                assert math.isnan(got), name
            else:
                assert got == pytest.approx(value, rel=1e-10, abs=1e-12), name
        assert bool(mc.defined[idx]) == both


def test_gap_stats_mc_full_scores_equal_plain_loop():
    gen = _gen(31)
    reward = torch.tensor([[1.0, 0, 1, 1, 0], [0, 0, 1, 0, 0]])
    scores = torch.randn(2, 5, 3, generator=gen)
    w = torch.randn(2, 3, generator=gen)
    mc = gap_stats_mc(reward, scores=scores, direction=w)
    by_proj = gap_stats_mc(reward, proj=(scores * w.unsqueeze(-2)).sum(-1))
    torch.testing.assert_close(mc.delta_mu, by_proj.delta_mu, rtol=1e-14, atol=1e-14)
    for b in range(2):
        for j in range(3):
            for side, sel in (("plus", 1.0), ("minus", 0.0)):
                n, mean, _, se, _ = _loop_side([float(scores[b, g, j]) for g in range(5) if reward[b, g] == sel])
                got, got_se = getattr(mc, f"g_{side}")[b, j], getattr(mc, f"se_g_{side}")[b, j]
                assert float(got) == pytest.approx(mean, rel=1e-12, nan_ok=True)
                assert (math.isnan(se) and bool(got_se.isnan())) or float(got_se) == pytest.approx(se, rel=1e-12)
    # one correct sample in row 1: its mean exists, its variance and standard error do not
    assert mc.n_plus[1] == 1 and not math.isnan(float(mc.g_plus[1, 0])) and math.isnan(float(mc.se_g_plus[1, 0]))


def test_gap_stats_mc_masks():
    reward = torch.tensor([[0.0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]])
    mc = gap_stats_mc(reward, proj=torch.arange(16.0).view(4, 4))
    assert mc.n_plus.tolist() == [0, 4, 1, 2] and mc.n_minus.tolist() == [4, 0, 3, 2]
    assert mc.defined.tolist() == [False, False, True, True]
    assert mc.J.tolist() == [0.0, 1.0, 0.25, 0.5]
    assert torch.isnan(mc.delta_mu[:2]).all() and torch.isnan(mc.log_odds[:2]).all()
    assert float(mc.delta_mu[2]) == pytest.approx(8 - 10)  # 8 - mean(9, 10, 11)
    assert math.isnan(float(mc.se_delta_mu[2]))  # one correct sample: no spread to measure
    assert float(mc.delta_mu[3]) == pytest.approx(12.5 - 14.5)
    assert float(mc.se_delta_mu[3]) == pytest.approx(math.sqrt(0.5 / 2 + 0.5 / 2))  # s² = 0.5 each side
    assert math.isnan(float(mc.var_plus[0])) and float(mc.var_minus[0]) == pytest.approx(5 / 3)
    summ = mc.summary()
    assert summ["n_defined"] == 2.0
    assert summ["delta_mu"] == pytest.approx((-2 - 2) / 2)
    assert summ["se_delta_mu"] == pytest.approx(math.sqrt(0.5))  # only the finite, defined entry


@given(seed=st.integers(0, 2**31 - 1), G=st.integers(1, 9))
def test_gap_stats_mc_mask_equals_the_kept_samples_alone(seed, G):
    gen = _gen(seed)
    B, d = 6, 3
    reward = (torch.rand(B, G, generator=gen) < 0.5).double()
    scores = torch.randn(B, G, d, generator=gen)
    w = torch.randn(B, d, generator=gen)
    proj = (scores * w.unsqueeze(-2)).sum(-1)
    mask = torch.rand(B, G, generator=gen) < 0.6
    mask[0], mask[1] = False, True  # nothing kept; everything kept
    # left-out samples carry values that would poison any sum they reached
    junk = torch.tensor([NAN, math.inf, -math.inf, 1e300])[torch.randint(0, 4, (B, G), generator=gen)]
    mc = gap_stats_mc(reward, proj=torch.where(mask, proj, junk), mask=mask)
    mc_scores = gap_stats_mc(reward, scores=torch.where(mask.unsqueeze(-1), scores, junk.unsqueeze(-1)), direction=w, mask=mask)
    names = ("n_plus", "n_minus", "J", "se_J", "log_odds", "se_log_odds", "delta_mu", "se_delta_mu",
             "var_plus", "se_var_plus", "var_minus", "se_var_minus")
    for b in range(B):
        keep = mask[b]
        if not bool(keep.any()):
            assert float(mc.n_plus[b]) == float(mc.n_minus[b]) == 0.0
            assert math.isnan(float(mc.delta_mu[b])) and not bool(mc.defined[b])
            continue
        alone = gap_stats_mc(reward[b][keep], proj=proj[b][keep])
        alone_scores = gap_stats_mc(reward[b][keep], scores=scores[b][keep], direction=w[b])
        for name in names:
            for got in (getattr(mc, name)[b], getattr(mc_scores, name)[b]):
                torch.testing.assert_close(got, getattr(alone, name), rtol=1e-12, atol=1e-14, equal_nan=True, msg=name)
        for name in ("g_plus", "se_g_plus", "g_minus", "se_g_minus"):
            torch.testing.assert_close(getattr(mc_scores, name)[b], getattr(alone_scores, name), rtol=1e-12, atol=1e-14,
                                       equal_nan=True, msg=name)
    # everything kept is the same as no mask
    full = gap_stats_mc(reward[1:2], proj=proj[1:2])
    torch.testing.assert_close(mc.delta_mu[1:2], full.delta_mu, rtol=0, atol=0, equal_nan=True)


def test_gap_stats_mc_standard_errors_are_calibrated():
    gen = _gen(41)
    policy = FeatureSoftmax(torch.randn(8, 3, generator=gen))
    theta = 0.3 * torch.randn(1, 3, generator=gen)  # a policy far from deterministic: z close to normal
    reward = torch.tensor([1.0, 0, 1, 0, 0, 1, 0, 0])
    w = torch.randn(1, 3, generator=gen)
    logp, proj = policy.logp_and_jvp(theta, w)
    exact = gap_along(logp, proj, reward)
    reps, G = 400, 64
    idx = torch.multinomial(logp.exp().reshape(1, -1).expand(reps, -1), G, replacement=True, generator=gen)
    mc = gap_stats_mc(reward[idx], proj=proj.reshape(-1)[idx])
    assert bool(mc.defined.all())
    for est, se, truth in ((mc.delta_mu, mc.se_delta_mu, exact.delta_mu), (mc.J, mc.se_J, exact.J)):
        z = (est - truth.reshape(())) / se
        assert abs(float(z.mean())) < 0.2  # 4 standard errors of a mean of 400 unit-variance z's
        assert 0.85 < float(z.std()) < 1.15


def _enumerable_step(seed):
    gen = _gen(seed)
    policy = FeatureSoftmax(torch.randn(6, 2, generator=gen))
    theta_old = 0.3 * torch.randn(1, 2, generator=gen)
    theta_new = theta_old + 0.5 * torch.randn(1, 2, generator=gen)
    reward = torch.tensor([1.0, 1, 0, 1, 0, 0])
    return policy, policy.logp(theta_old)[0, 0], policy.logp(theta_new)[0, 0], reward, gen


def test_log_odds_change_mc_is_unbiased_within_its_standard_errors():
    policy, lp_old, lp_new, reward, gen = _enumerable_step(51)
    dL = lp_new - lp_old
    exact_realized = lemma3_log_odds_change(lp_old, lp_new, reward)
    p = lp_old.exp()
    Jp = (p * reward).sum()
    exact_first = (p * reward * dL).sum() / Jp - (p * (1 - reward) * dL).sum() / (1 - Jp)
    reps, G = 200, 256
    idx = torch.multinomial(p.expand(reps, -1), G, replacement=True, generator=gen)
    est = log_odds_change_mc(dL[idx], reward[idx])
    assert float(exact_realized - exact_first) != pytest.approx(0.0, abs=1e-3)  # they differ: both are tested
    for value, se, truth in ((est.realized, est.se_realized, exact_realized), (est.first_order, est.se_first_order, exact_first)):
        z = (value - truth) / se
        assert abs(float(z.mean())) < 0.35
        assert 0.8 < float(z.std()) < 1.2
        assert float(z.abs().max()) < 5
    assert torch.equal(est.n_plus + est.n_minus, torch.full((reps,), float(G)))


def test_log_odds_change_mc_plain_values_and_stability():
    dL = torch.tensor([[0.1, 0.3, -0.2, 0.0, 0.4]])
    reward = torch.tensor([[1.0, 1, 0, 0, 0]])
    est = log_odds_change_mc(dL, reward)
    # first order: mean(0.1, 0.3) - mean(-0.2, 0, 0.4) = 0.2 - 0.0667
    assert float(est.first_order) == pytest.approx(0.2 - 0.2 / 3, rel=1e-12)
    realized = math.log((math.exp(0.1) + math.exp(0.3)) / 2) - math.log((math.exp(-0.2) + 1 + math.exp(0.4)) / 3)
    assert float(est.realized) == pytest.approx(realized, rel=1e-12)
    shifted = log_odds_change_mc(dL + 1000.0, reward)  # exp(1000) overflows without the shift
    for name in ("first_order", "se_first_order", "realized", "se_realized"):
        assert float(getattr(shifted, name)) == pytest.approx(float(getattr(est, name)), rel=1e-9), name
    wide = log_odds_change_mc(torch.tensor([[-800.0, 800.0, 0.0, 3.0]]), torch.tensor([[1.0, 1, 0, 0]]))
    # log mean(e^-800, e^800) = 800 - log 2; log mean(1, e^3) = log((1 + e³)/2)
    assert float(wide.realized) == pytest.approx(800 - math.log(2) - math.log((1 + math.exp(3)) / 2), rel=1e-12)


# --- input checks --------------------------------------------------------------------------------------


def test_bad_input_names_the_field():
    logp = torch.log_softmax(torch.randn(2, 4, generator=_gen(0)), -1)
    scores = torch.randn(2, 4, 3)
    reward = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    w = torch.randn(2, 3)
    with pytest.raises(ValueError, match="^reward: .*0 or 1"):
        gap_stats(logp, scores, reward * 0.5, w)
    with pytest.raises(ValueError, match="^reward: "):
        gap_stats(logp, scores, torch.ones(3, 4), w)
    with pytest.raises(ValueError, match="^scores: "):
        gap_stats(logp, torch.randn(2, 5, 3), reward, w)
    with pytest.raises(ValueError, match="^direction: "):
        gap_stats(logp, scores, reward, torch.randn(2, 2))
    with pytest.raises(ValueError, match="^logp: .*total mass"):
        gap_stats(logp + 0.1, scores, reward, w)
    with pytest.raises(ValueError, match="^logp: "):
        gap_stats(torch.zeros(2, 4, dtype=torch.long), scores, reward, w)
    with pytest.raises(ValueError, match="^proj: "):
        gap_along(logp, torch.randn(2, 3), reward)
    with pytest.raises(ValueError, match="^logp_new: "):
        lemma3_log_odds_change(logp, torch.randn(2, 3), reward)
    with pytest.raises(ValueError, match="^reward: "):
        gap_stats_mc(torch.tensor([2.0, 0.0]), proj=torch.zeros(2))
    with pytest.raises(ValueError, match="^proj/scores: "):
        gap_stats_mc(reward, proj=torch.zeros(2, 4), scores=scores)
    with pytest.raises(ValueError, match="^proj: "):
        gap_stats_mc(reward, proj=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="^direction: "):
        gap_stats_mc(reward, scores=scores)
    with pytest.raises(ValueError, match="^delta_logp: "):
        log_odds_change_mc(torch.zeros(2, 3), reward)
    with pytest.raises(ValueError, match="^reward: "):
        log_odds_change_mc(torch.zeros(2, 4), reward - 2)
