"""rlvrlab.updates: rule lookup and option checks, the exact directions against autograd, REINFORCE's
expectation against the exact gradient within standard errors (and the mean baseline's known bias),
and the step-size rules against the closed forms of rlvrlab.theory.

The default dtype is left at float32 here, as users have it: every tensor is created as float64
explicitly, so a rule that builds a float32 constant shows up as a precision loss.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlvrlab import theory
from rlvrlab.gap import combine_prompts, gap_along, gap_stats_mc
from rlvrlab.policies import LinearContextualSoftmax, TabularSoftmax, TokenSoftmax
from rlvrlab.policies.model import Enumerated
from rlvrlab.updates import DIRECTIONS, STEP_SIZES, Direction, StepContext, make_direction, make_step_size

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ctx(policy, theta, reward, weights=None, *, k=0, steps=10, generator=None) -> StepContext:
    R, C = theta.shape[0], reward.shape[-2]
    if weights is None:
        weights = torch.full((R, C), 1.0 / C, dtype=F64)
    return StepContext(k, steps, theta, Enumerated(policy, reward), weights.expand(R, C), policy.constants(), generator)


def _logp(ctx: StepContext) -> torch.Tensor:
    R, C, N = ctx.theta.shape[0], ctx.model.n_prompts, ctx.model.reward.shape[-1]
    return ctx.model.policy.logp(ctx.theta).expand(R, C, N)


def _stats(ctx: StepContext, w: torch.Tensor):
    """Exact GapStats of the step's objective along w, batch shape (R,), from gap_along."""
    logp = _logp(ctx)
    R, C, N = logp.shape
    _, proj = ctx.model.policy.logp_and_jvp(ctx.theta, w)
    per = gap_along(logp, proj.expand(R, C, N), ctx.model.reward.expand(R, C, N))
    return per.map(lambda t: t[..., 0]) if C == 1 else combine_prompts(per, ctx.weights)


def _autograd_grad(ctx: StepContext) -> torch.Tensor:
    theta = ctx.theta.clone().requires_grad_(True)
    J = (ctx.weights * (ctx.model.policy.logp(theta).exp() * ctx.model.reward).sum(-1)).sum()
    return torch.autograd.grad(J, theta)[0]


def _contextual(R=3, seed=0):
    gen = _gen(seed)
    policy = LinearContextualSoftmax(torch.randn(2, 3, generator=gen, dtype=F64), arms=4)
    theta = policy.init(R, scale=1.0, generator=gen)
    reward = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]], dtype=F64)
    weights = torch.tensor([0.3, 0.7], dtype=F64)
    return policy, theta, reward, weights


# --- lookup and options ------------------------------------------------------------------------------


def test_unknown_names_and_options_list_the_valid_ones():
    with pytest.raises(ValueError, match="^direction: got 'sgd'; allowed: expected, gap, gradient, normalized-gradient, prescribed, preset, prompt-adaptive, reinforce$"):
        make_direction("sgd")
    with pytest.raises(ValueError, match="^step size: got 'adam'; allowed: condition-13a, condition-15a, cosine, fixed, gap-adaptive$"):
        make_step_size("adam")
    with pytest.raises(ValueError, match="^direction 'reinforce' option: got 'temperature'; allowed: G, baseline, normalize$"):
        make_direction("reinforce", G=4, temperature=1.0)
    with pytest.raises(ValueError, match="^direction 'gradient' option: got 'G'; allowed: no options$"):
        make_direction("gradient", G=4)
    with pytest.raises(ValueError, match="^step size 'cosine' option: got 'eta_max'; allowed: eta, eta_min$"):
        make_step_size("cosine", eta=0.1, eta_max=1.0)
    with pytest.raises(ValueError, match="^step size 'fixed': got 'no value for eta'"):
        make_step_size("fixed")
    with pytest.raises(ValueError, match="^direction 'reinforce': got 'no value for G'"):
        make_direction("reinforce")
    assert set(DIRECTIONS) == {"expected", "gap", "gradient", "normalized-gradient", "prescribed", "preset", "prompt-adaptive", "reinforce"}
    assert set(STEP_SIZES) == {"condition-13a", "condition-15a", "cosine", "fixed", "gap-adaptive"}


@pytest.mark.parametrize("eta", [-0.1, math.nan, math.inf, -math.inf])
def test_bad_eta_is_rejected_naming_eta(eta):
    with pytest.raises(ValueError, match="^eta: "):
        make_step_size("fixed", eta=eta)
    with pytest.raises(ValueError, match="^eta: "):
        make_step_size("cosine", eta=eta)
    with pytest.raises(ValueError, match="^eta: "):
        make_step_size("fixed", eta=torch.tensor([0.1, eta], dtype=F64))


def test_bad_options_are_rejected_when_the_rule_runs():
    policy, theta, reward, weights = _contextual()
    ctx = _ctx(policy, theta, reward, weights)
    w = torch.zeros_like(theta)
    stats = _stats(ctx, w)
    with pytest.raises(ValueError, match="^eta_min: "):
        make_step_size("cosine", eta=0.1, eta_min=-1.0)(ctx, stats, Direction(w))
    with pytest.raises(ValueError, match="^fraction: got 0"):
        make_step_size("condition-13a", fraction=0)(ctx, stats, Direction(w))
    with pytest.raises(ValueError, match="^fraction: got 1.5"):
        make_step_size("condition-15a", fraction=1.5)(ctx, stats, Direction(w))
    with pytest.raises(ValueError, match="^T_psi1: got 'max'; allowed: current, uniform$"):
        make_step_size("condition-15a", T_psi1="max")(ctx, stats, Direction(w))
    with pytest.raises(ValueError, match="^baseline: got 'median'; allowed: exact, loo, mean$"):
        make_direction("reinforce", G=4, baseline="median")(ctx)
    with pytest.raises(ValueError, match="^G: got 1"):
        make_direction("reinforce", G=1)(ctx)


# --- exact directions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("setup", ["contextual", "token", "tabular-shared"])
def test_exact_directions_against_autograd(setup):
    gen = _gen(1)
    if setup == "contextual":
        policy, theta, reward, weights = _contextual()
    elif setup == "token":
        policy = TokenSoftmax(3, 3, eos=0, parametrization="prefix")
        theta = policy.init(3, scale=1.0, generator=gen)
        reward = (torch.rand(1, policy.n_responses, generator=gen) < 0.3).to(F64)
        weights = None
    else:  # one policy shared by two prompts with different rewards
        policy = TabularSoftmax(5)
        theta = policy.init(3, scale=1.0, generator=gen)
        reward = torch.tensor([[1.0, 0, 0, 0, 1], [0, 0, 1, 0, 0]], dtype=F64)
        weights = torch.tensor([0.6, 0.4], dtype=F64)
    ctx = _ctx(policy, theta, reward, weights)
    grad = _autograd_grad(ctx)
    assert bool((grad.norm(dim=-1) > 1e-3).all())
    torch.testing.assert_close(make_direction("gradient")(ctx).w, grad, rtol=1e-12, atol=1e-13)
    for name in ("normalized-gradient", "gap"):
        d = make_direction(name)(ctx)
        assert d.samples is None
        torch.testing.assert_close(d.w.norm(dim=-1), torch.ones(3, dtype=F64), rtol=1e-14, atol=0)
        cos = (d.w * grad).sum(-1) / grad.norm(dim=-1)
        torch.testing.assert_close(cos, torch.ones(3, dtype=F64), rtol=1e-13, atol=0)


def test_normalized_direction_is_zero_where_the_gradient_vanishes():
    policy, theta, _, weights = _contextual()
    ctx = _ctx(policy, theta, torch.ones(2, 4, dtype=F64), weights)  # J = 1 everywhere: ∇J = 0
    assert torch.equal(make_direction("gap")(ctx).w, torch.zeros_like(theta))


def test_prescribed_direction():
    policy, theta, reward, weights = _contextual()
    ctx = _ctx(policy, theta, reward, weights, k=4)
    rule = make_direction("prescribed", fn=lambda k, th: k * th)
    torch.testing.assert_close(rule(ctx).w, 4 * theta)


# --- REINFORCE -------------------------------------------------------------------------------------------


def _reinforce_setup(setup: str, copies: int):
    gen = _gen(2)
    if setup == "contextual":
        policy, theta, reward, weights = _contextual(R=1)
    else:
        policy = TabularSoftmax(4)
        theta = policy.init(1, scale=1.0, generator=gen)
        reward = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]], dtype=F64)
        weights = torch.tensor([0.3, 0.7], dtype=F64)
    return policy, theta.expand(copies, -1).clone(), reward, weights


@pytest.mark.parametrize("setup", ["contextual", "tabular-shared"])
@pytest.mark.parametrize("baseline", ["exact", "loo", "mean"])
def test_reinforce_expectation(setup, baseline):
    copies, G = 6000, 2
    policy, theta, reward, weights = _reinforce_setup(setup, copies)
    ctx = _ctx(policy, theta, reward, weights, generator=_gen(3))
    d = make_direction("reinforce", G=G, baseline=baseline, normalize=False)(ctx)
    grad = _autograd_grad(ctx)[0]
    mean, se = d.w.mean(0), d.w.std(0) / math.sqrt(copies)
    # E[w] = ∇J for the exact and leave-one-out baselines; (G - 1)/G ∇J for the group mean
    factor = (G - 1) / G if baseline == "mean" else 1.0
    z = (mean - factor * grad) / se
    assert float(z.abs().max()) < 4.5
    if baseline == "mean":  # the bias is resolved: E[w] is not ∇J
        assert float(((mean - grad) / se).abs().max()) > 8


@pytest.mark.parametrize("setup", ["contextual", "tabular-shared"])
@pytest.mark.parametrize("baseline", ["exact", "loo", "mean"])
def test_reinforce_equals_plain_loop_over_its_samples(setup, baseline):
    G = 5
    policy, theta, reward, weights = _reinforce_setup(setup, 4)
    theta = theta + 0.5 * torch.randn(theta.shape, generator=_gen(4), dtype=F64)  # distinct runs
    ctx = _ctx(policy, theta, reward, weights, generator=_gen(5))
    d = make_direction("reinforce", G=G, baseline=baseline, normalize=False)(ctx)
    R, C = theta.shape[0], reward.shape[0]
    assert d.samples.index.shape == d.samples.reward.shape == (R, C, G)
    scores = policy.scores(theta).expand(R, C, -1, -1)  # (R, C, N, d)
    p = policy.logp(theta).exp().expand(R, C, -1)
    for r in range(R):
        w = torch.zeros(policy.n_params, dtype=F64)
        for c in range(C):
            idx = d.samples.index[r, c].tolist()
            rew = [float(reward[c, i]) for i in idx]
            assert rew == d.samples.reward[r, c].tolist()  # rewards consistent with indices
            for i, o in enumerate(idx):
                if baseline == "exact":
                    b = float((p[r, c] * reward[c]).sum())
                elif baseline == "mean":
                    b = sum(rew) / G
                else:
                    b = (sum(rew) - rew[i]) / (G - 1)
                w += float(weights[c]) / G * (rew[i] - b) * scores[r, c, o]
        torch.testing.assert_close(d.w[r], w, rtol=1e-12, atol=1e-13)
    # normalize=True (the default) returns the unit vector along the same draw
    dn = make_direction("reinforce", G=G, baseline=baseline)(_ctx(policy, theta, reward, weights, generator=_gen(5)))
    assert torch.equal(dn.samples.index, d.samples.index)
    nz = d.w.norm(dim=-1) > 0
    torch.testing.assert_close(dn.w[nz], d.w[nz] / d.w[nz].norm(dim=-1, keepdim=True), rtol=1e-13, atol=1e-14)


# --- step sizes --------------------------------------------------------------------------------------------


def test_fixed_and_cosine():
    policy, theta, reward, weights = _contextual()
    w = torch.zeros_like(theta)
    for k, expected in ((0, 0.4), (5, 0.25), (10, 0.1)):
        # eta_min + (eta - eta_min)(1 + cos(pi k/K))/2 with eta = 0.4, eta_min = 0.1, K = 10:
        # k = 0: 0.4; k = K/2: 0.1 + 0.3·½ = 0.25; k = K: 0.1
        ctx = _ctx(policy, theta, reward, weights, k=k, steps=10)
        eta = make_step_size("cosine", eta=0.4, eta_min=0.1)(ctx, _stats(ctx, w), Direction(w))
        assert eta.dtype == F64 and eta.shape == (3,)
        torch.testing.assert_close(eta, torch.full((3,), expected, dtype=F64), rtol=1e-14, atol=0)
    ctx = _ctx(policy, theta, reward, weights)
    per_run = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    assert torch.equal(make_step_size("fixed", eta=per_run)(ctx, _stats(ctx, w), Direction(w)), per_run)
    assert torch.equal(make_step_size("fixed", eta=0.5)(ctx, _stats(ctx, w), Direction(w)), torch.full((3,), 0.5, dtype=F64))


@pytest.mark.parametrize("fraction", [1.0, 0.3])
def test_condition_13a(fraction):
    policy, theta, reward, weights = _contextual()
    ctx = _ctx(policy, theta, reward, weights)
    grad = _autograd_grad(ctx)
    unit = grad / grad.norm(dim=-1, keepdim=True)
    # run 0: a unit direction, (13a) binds; run 1: a huge direction, the smoothness cap binds;
    # run 2: a harmful direction, Delta_mu < 0 and the step is 0
    w = torch.stack([unit[0], 1e4 * unit[1], -unit[2]])
    stats = _stats(ctx, w)
    c = policy.constants()
    eta = make_step_size("condition-13a", fraction=fraction)(ctx, stats, Direction(w))
    assert eta.dtype == F64
    for r in range(3):
        dm = float(stats.delta_mu[r])
        expected = fraction * min(theory.step_condition_trajectory(dm, c.L_o, c.G_o), 1 / (2 * math.sqrt(c.L_o)))
        assert float(eta[r]) == pytest.approx(expected, rel=1e-13, abs=0)
    assert float(eta[1]) == pytest.approx(fraction / (2 * math.sqrt(c.L_o)), rel=1e-13)
    assert float(eta[2]) == 0.0 and float(stats.delta_mu[2]) < 0


def _psi1_bisect(lengths: list[float], probs: list[float]) -> float:
    lo, hi = 1e-6, 1e6
    for _ in range(300):
        mid = (lo + hi) / 2
        if sum(p * math.exp(x / mid) for x, p in zip(lengths, probs)) > 2:
            lo = mid
        else:
            hi = mid
    return hi


@pytest.mark.parametrize("mode", ["current", "uniform"])
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_condition_15a(mode, fraction):
    policy = TokenSoftmax(3, 4, eos=0)
    gen = _gen(6)
    theta = policy.init(3, scale=1.5, generator=gen)
    reward = (torch.rand(1, policy.n_responses, generator=gen) < 0.3).to(F64)
    ctx = _ctx(policy, theta, reward)
    w = make_direction("normalized-gradient")(ctx).w
    w[2] = -w[2]
    stats = _stats(ctx, w)
    c = policy.constants()
    eta = make_step_size("condition-15a", fraction=fraction, T_psi1=mode)(ctx, stats, Direction(w))
    assert eta.dtype == F64
    lengths = policy.lengths().tolist()
    assert min(lengths) == 1 and max(lengths) == 4
    for r in range(3):
        if mode == "current":  # the psi_1 norm of the response length under pi_k
            tpsi = _psi1_bisect(lengths, policy.logp(theta)[r, 0].exp().tolist())
            assert c.T_inf / math.log(2) > tpsi * 1.05  # a different value from "uniform"
        else:
            tpsi = c.T_inf / math.log(2)
        J = float(stats.J[r])
        expected = fraction * theory.step_condition_token(float(stats.delta_mu[r]), J, c.L_p, c.G_p, c.T_inf, tpsi)
        assert float(eta[r]) == pytest.approx(expected, rel=1e-11, abs=0)
    assert float(eta[2]) == 0.0 and float(eta[0]) > 0


# --- gap-adaptive ------------------------------------------------------------------------------------------


def _adaptive_setup():
    """TokenSoftmax(3, 4, eos=0) (31 responses of lengths 1-4: the curvature term differs by response)
    shared by two prompts; runs 0 and 1 share theta and run 1's direction is 10x run 0's; run 2
    steps against the gradient."""
    gen = _gen(8)
    policy = TokenSoftmax(3, 4, eos=0)
    N = policy.n_responses
    reward = (torch.rand(2, N, generator=gen) < 0.35).to(F64)
    theta = policy.init(3, scale=1.0, generator=gen)
    theta[1] = theta[0]
    weights = torch.tensor([0.4, 0.6], dtype=F64)
    ctx = _ctx(policy, theta, reward, weights)
    u = make_direction("gap")(ctx).w
    w = torch.stack([u[0] + 0.3 * torch.randn(policy.n_params, generator=gen, dtype=F64), torch.zeros_like(u[0]), -u[2]])
    w[1] = 10 * w[0]
    return policy, reward, ctx, w


def _score_r(policy, theta_r, o):
    t = theta_r.detach().clone().requires_grad_(True)
    return torch.autograd.grad(policy.logp(t.unsqueeze(0))[0, 0, o], t)[0]


def _pooled_exact(policy, reward, ctx, w):
    """Per run, plain sums over prompts and responses of the pooled P(c, o) = weights_c π(o):
    J, delta_mu, var±, curv± along w, E[curvature] and E|o| under π."""
    from rlvrlab.policies.base import EnumerablePolicy

    curv_all = EnumerablePolicy.curvature(policy, ctx.theta, w)[:, 0]  # the autograd default, (R, N)
    lengths = policy.lengths().tolist()
    out = []
    for r in range(ctx.theta.shape[0]):
        p = policy.logp(ctx.theta[r:r + 1])[0, 0].exp().tolist()
        proj = [float(_score_r(policy, ctx.theta[r], o) @ w[r]) for o in range(len(p))]
        curv = curv_all[r].tolist()
        row = {}
        for side, sel in (("plus", 1.0), ("minus", 0.0)):
            terms = [(float(ctx.weights[r, c]) * p[o], proj[o], curv[o]) for c in range(2) for o in range(len(p))
                     if float(reward[c, o]) == sel]
            mass = sum(q for q, _, _ in terms)
            mean = sum(q * x for q, x, _ in terms) / mass
            row[side] = (mass, mean, sum(q * (x - mean) ** 2 for q, x, _ in terms) / mass, sum(q * k for q, _, k in terms) / mass)
        J = row["plus"][0]
        row.update(J=J, delta_mu=row["plus"][1] - row["minus"][1], var_plus=row["plus"][2], var_minus=row["minus"][2],
                   curv_gap=row["plus"][3] - row["minus"][3], mean_curv=sum(pi * k for pi, k in zip(p, curv)),
                   mean_len=sum(pi * L for pi, L in zip(p, lengths)),
                   psi1=_psi1_bisect(lengths, p), w_norm=float(w[r].norm()))
        out.append(row)
    return out


@pytest.mark.parametrize("fraction", [0.5, 0.1])  # (18) binds at 0.5, not at 0.1
def test_gap_adaptive_exact_equals_the_second_order_step_and_its_caps(fraction):
    policy, reward, ctx, w = _adaptive_setup()
    stats = combine_prompts(ctx.model.along(ctx.theta, w, curvature=True), ctx.weights)  # what simulate passes
    ref = _pooled_exact(policy, reward, ctx, w)
    c = policy.constants()
    assert ref[0]["delta_mu"] > 0 and ref[2]["delta_mu"] < 0 and abs(ref[0]["curv_gap"]) > 1e-3
    etas = {cap: make_step_size("gap-adaptive", fraction=fraction, cap=cap, eta_max=1e9)(ctx, stats, Direction(w))
            for cap in ("none", "18", "15a")}
    for r in (0, 1):
        x = ref[r]
        crit = theory.eta_crit_second_order(x["delta_mu"], x["var_plus"], x["var_minus"], x["curv_gap"])
        assert 0 < crit < math.inf
        base = fraction * crit
        dm_unit = x["delta_mu"] / x["w_norm"]
        # (18) with G_p² measured along the unit direction: the mean squared token score, -E[curv]/E|o| / ‖w‖²
        g2_unit = -x["mean_curv"] / x["mean_len"] / x["w_norm"] ** 2
        cap18 = dm_unit * (1 - x["J"]) / (g2_unit * x["psi1"]) / x["w_norm"]
        cap15 = theory.step_condition_token(dm_unit, x["J"], c.L_p, c.G_p, c.T_inf, x["psi1"]) / x["w_norm"]
        assert float(etas["none"][r]) == pytest.approx(base, rel=1e-10)
        assert float(etas["18"][r]) == pytest.approx(min(base, cap18), rel=1e-10)
        assert float(etas["15a"][r]) == pytest.approx(min(base, cap15), rel=1e-10)
    assert float(etas["15a"][0]) < float(etas["none"][0])  # the worst-case cap binds here
    assert (float(etas["18"][0]) < float(etas["none"][0])) == (fraction == 0.5)
    for cap in etas:  # the step eta·w does not depend on the scale of w; against the gradient: eta_min = 0
        assert float(etas[cap][1]) == pytest.approx(float(etas[cap][0]) / 10, rel=1e-10)
        assert float(etas[cap][2]) == 0.0
        # eta_min is the step where Delta_mu <= 0, and a floor elsewhere
        floor = float(etas["15a"][0]) * 2
        low = make_step_size("gap-adaptive", fraction=fraction, cap=cap, eta_max=1e9, eta_min=floor)(ctx, stats, Direction(w))
        assert low.tolist() == [max(float(etas[cap][0]), floor), max(float(etas[cap][1]), floor), floor]
    # cap_scale scales the (18) bound; eta_max clips
    big = make_step_size("gap-adaptive", fraction=fraction, cap="18", cap_scale=1e6)(ctx, stats, Direction(w))
    torch.testing.assert_close(big[:2], etas["none"][:2], rtol=1e-12, atol=0)
    capped = make_step_size("gap-adaptive", fraction=fraction, cap="none", eta_max=1e-3)(ctx, stats, Direction(w))
    assert capped.tolist() == [1e-3, 1e-3, 0.0]


def test_gap_adaptive_from_the_batch_samples():
    policy, reward, ctx, _ = _adaptive_setup()
    weights = torch.tensor([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]], dtype=F64)  # the prompts each run trains on
    ctx = StepContext(0, 10, ctx.theta, ctx.model, weights, policy.constants(), _gen(0))
    d = make_direction("preset", preset="grpo", G=16)(ctx)
    stats = combine_prompts(ctx.model.along(ctx.theta, d.w), weights)
    eta = make_step_size("gap-adaptive", estimate="samples", cap="none", eta_max=1e9)(ctx, stats, d)
    eta18 = make_step_size("gap-adaptive", estimate="samples", cap="18", fraction=0.3)(ctx, stats, d)
    T = d.samples.mask.shape[-1]
    for r in range(3):
        # pool the samples of the prompts run r trains on; plain autograd scores of each response
        # (per token: w·(e_{o_t} - π_t) at position t, for TokenSoftmax "position")
        rew, proj, tok2 = [], [], []
        probs = torch.softmax(ctx.theta[r].view(T, 3), -1)
        wr = d.w[r].view(T, 3)
        for c in range(2):
            if float(weights[r, c]) == 0:
                continue
            for o in d.samples.index[r, c].tolist():
                rew.append(float(reward[c, o]))
                proj.append(float(_score_r(policy, ctx.theta[r], o) @ d.w[r]))
                for t, v in enumerate(policy.decode(o)):
                    tok2.append(float(wr[t, v] - (probs[t] * wr[t]).sum()) ** 2)
        mc = gap_stats_mc(torch.tensor(rew, dtype=F64), proj=torch.tensor(proj, dtype=F64))
        crit = theory.eta_crit_second_order(float(mc.delta_mu), float(mc.var_plus), float(mc.var_minus))
        assert float(mc.delta_mu) > 0 and 0 < crit < math.inf  # Var- > Var+ in this draw: a finite critical step
        assert float(eta[r]) == pytest.approx(0.5 * crit, rel=1e-10)
        # (18) from the batch: J = n+/n, the mean squared token score of the kept tokens
        wn = float(d.w[r].norm())
        g2_unit = sum(tok2) / len(tok2) / wn**2
        cap18 = (float(mc.delta_mu) / wn) * (1 - float(mc.J)) / (g2_unit * ctx.model.length_psi1(ctx.theta)[r]) / wn
        assert float(eta18[r]) == pytest.approx(min(0.3 * crit, float(cap18)), rel=1e-10)
    # the pooled samples are not those of the prompts left out: run 1 and run 2 differ from run 0's pool
    assert len({round(float(x), 12) for x in eta}) == 3


def test_gap_adaptive_checks_its_options():
    policy, reward, ctx, w = _adaptive_setup()
    stats = combine_prompts(ctx.model.along(ctx.theta, w, curvature=True), ctx.weights)
    with pytest.raises(ValueError, match="^estimate: got \"'samples'\""):
        make_step_size("gap-adaptive", estimate="samples")(ctx, stats, Direction(w))  # an exact direction has no batch
    with pytest.raises(ValueError, match="^eta_max: got None"):
        make_step_size("gap-adaptive", cap="none")(ctx, stats, Direction(w))
    with pytest.raises(ValueError, match="^cap: got '17'; allowed: 15a, 18, none$"):
        make_step_size("gap-adaptive", cap="17")(ctx, stats, Direction(w))
    with pytest.raises(ValueError, match="^estimate: got 'mc'; allowed: exact, samples$"):
        make_step_size("gap-adaptive", estimate="mc")(ctx, stats, Direction(w))
    with pytest.raises(ValueError, match="^fraction: got 0"):
        make_step_size("gap-adaptive", fraction=0)(ctx, stats, Direction(w))
    with pytest.raises(ValueError, match="^eta_min: "):
        make_step_size("gap-adaptive", eta_min=-1.0)
