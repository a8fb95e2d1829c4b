"""rlvrlab.simulate: the batched loop against a plain per-run loop written here with autograd, the
fused tabular kernel against the generic loop, recording layout, and input checks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from rlvrlab.policies import FeatureSoftmax, LinearContextualSoftmax, TabularSoftmax, TokenSoftmax
from rlvrlab.simulate import simulate, tabular
from rlvrlab.updates import make_direction, make_step_size

F64 = torch.float64
STEP_FIELDS = ("delta_mu", "var_plus", "var_minus", "eta", "w_norm", "log_odds_change")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the reference: one run at a time, autograd, plain sums ----------------------------------------------


def _pooled(P, p, r, proj):
    """J, log-odds, delta_mu, var± of the pooled distribution P_c·p(o|c) with projections proj (plain sums)."""
    C, N = len(p), len(p[0])
    J = sum(P[c] * p[c][o] for c in range(C) for o in range(N) if r[c][o] == 1)
    Jm = sum(P[c] * p[c][o] for c in range(C) for o in range(N) if r[c][o] == 0)
    out = {"J": J, "log_odds": math.log(J) - math.log(Jm)}
    for side, mass, sel in (("plus", J, 1), ("minus", Jm, 0)):
        terms = [(P[c] * p[c][o] / mass, proj[c][o]) for c in range(C) for o in range(N) if r[c][o] == sel and P[c] > 0]
        mean = sum(q * x for q, x in terms)
        out[f"mean_{side}"] = mean
        out[f"var_{side}"] = sum(q * (x - mean) ** 2 for q, x in terms)
    out["delta_mu"] = out["mean_plus"] - out["mean_minus"]
    return out


def _reference(policy, reward, theta0, *, steps, eta, normalized=False, weights=None, train=None, curvature=False):
    """Per-run plain loop: dict name -> (steps + 1, R) (and per-prompt name -> (steps + 1, R, C))."""
    R, d = theta0.shape
    reward = reward if reward.dim() == 3 else reward.expand(R, -1, -1)
    C, N = reward.shape[1:]
    P = [1.0 / C] * C if weights is None else weights.tolist()
    nan = math.nan
    out = {k: torch.full((steps + 1, R), nan, dtype=F64) for k in
           ("J", "log_odds", "M", "M_train", "train_delta_mu", "curv_plus", "curv_minus", *STEP_FIELDS)}
    per = {k: torch.full((steps + 1, R, C), nan, dtype=F64) for k in ("J", "log_odds", "M", "delta_mu", "var_plus", "var_minus", "log_odds_change")}
    for r in range(R):
        theta = theta0.clone()
        rr = reward[r].tolist()

        def logp_of(t, r=r, theta=theta):  # (C, N): run r's log π (other rows held fixed)
            full = torch.cat([theta[:r], t.unsqueeze(0), theta[r + 1:]])
            return policy.logp(full)[r].expand(C, N)

        M = M_train = 0.0
        M_prompt = [0.0] * C
        for k in range(steps + 1):
            t = theta[r].clone()
            p = logp_of(t).exp().tolist()
            state = _pooled(P, p, rr, [[0.0] * N] * C)
            out["J"][k, r], out["log_odds"][k, r], out["M"][k, r] = state["J"], state["log_odds"], M
            out["M_train"][k, r] = M_train
            for c in range(C):
                single = _pooled([1.0], [p[c]], [rr[c]], [[0.0] * N])
                per["J"][k, r, c], per["log_odds"][k, r, c], per["M"][k, r, c] = single["J"], single["log_odds"], M_prompt[c]
            if k > 0:
                out["log_odds_change"][k - 1, r] = out["log_odds"][k, r] - out["log_odds"][k - 1, r]
                per["log_odds_change"][k - 1, r] = per["log_odds"][k, r] - per["log_odds"][k - 1, r]
            if k == steps:
                break
            Ptrain = P if train is None else train(k, per["J"][k], None)[r].tolist()
            tt = t.clone().requires_grad_(True)
            J_train = sum(Ptrain[c] * (logp_of(tt)[c].exp() * reward[r, c]).sum() for c in range(C))
            (g,) = torch.autograd.grad(J_train, tt)
            w = g / g.norm() if normalized else g
            scores = torch.autograd.functional.jacobian(logp_of, t)  # (C, N, d)
            proj = (scores @ w).tolist()
            obj = _pooled(P, p, rr, proj)
            trn = _pooled(Ptrain, p, rr, proj)
            for name in ("delta_mu", "var_plus", "var_minus"):
                out[name][k, r] = obj[name]
            out["eta"][k, r], out["w_norm"][k, r] = eta, float(w.norm())
            out["train_delta_mu"][k, r] = trn["delta_mu"]
            for c in range(C):
                single = _pooled([1.0], [p[c]], [rr[c]], [proj[c]])
                for name in ("delta_mu", "var_plus", "var_minus"):
                    per[name][k, r, c] = single[name]
                M_prompt[c] += max(single["delta_mu"], 0.0) * eta
            if curvature:  # E±[wᵀ ∇²log π w] from the Hessian of each response's log π
                hw = [[float(w @ torch.autograd.functional.hessian(lambda x, c=c, o=o: logp_of(x)[c, o], t) @ w)
                       for o in range(N)] for c in range(C)]
                curv = _pooled(P, p, rr, hw)
                out["curv_plus"][k, r], out["curv_minus"][k, r] = curv["mean_plus"], curv["mean_minus"]
            M += max(obj["delta_mu"], 0.0) * eta
            M_train += max(trn["delta_mu"], 0.0) * eta
            theta[r] = t + eta * w
    return out, per


def _check_rows(traj, ref, per_ref=None, *, names=("J", "log_odds", "M", *STEP_FIELDS), tol=1e-10):
    rows = traj.step.tolist()
    K = rows[-1]
    for name in names:
        got = traj.metrics[name]
        assert got.shape == (len(rows), traj.runs), name
        torch.testing.assert_close(got, ref[name][rows], rtol=tol, atol=tol, equal_nan=True, msg=name)
        if name in STEP_FIELDS:
            assert bool(got[-1].isnan().all()), name  # no step K -> K + 1
    for name in ("J", "log_odds", "M"):
        assert bool(traj.metrics[name][-1].isfinite().all()) and rows[-1] == K
    if per_ref is not None:
        for name, values in per_ref.items():
            got = traj.prompt_metrics[name]
            assert got.shape == (len(rows), traj.runs, values.shape[-1]), name
            torch.testing.assert_close(got, values[rows], rtol=tol, atol=tol, equal_nan=True, msg=name)


# --- the generic loop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("record_every", [1, 3])
@pytest.mark.parametrize("setup", ["feature-gradient", "token-normalized"])
def test_simulate_equals_plain_loop(setup, record_every):
    gen = _gen(1)
    steps = 7
    if setup == "feature-gradient":
        policy = FeatureSoftmax(torch.randn(5, 3, generator=gen, dtype=F64))
        reward = torch.tensor([[1.0, 0, 0, 1, 0]], dtype=F64)
        direction, normalized, eta = "gradient", False, 0.8
    else:
        policy = TokenSoftmax(3, 2, eos=0, parametrization="prefix")
        reward = torch.zeros(1, policy.n_responses, dtype=F64)
        reward[0, [1, 4]] = 1.0
        direction, normalized, eta = "normalized-gradient", True, 0.4
    theta0 = policy.init(2, scale=1.0, generator=gen)
    traj = simulate(policy, reward, theta0, steps=steps, direction=direction, step_size=eta, record_every=record_every)
    assert traj.info["kernel"] == "generic"
    expected_rows = list(range(0, steps, record_every)) + [steps]
    assert traj.step.tolist() == expected_rows  # 0, 3, 6 and the final 7
    ref, _ = _reference(policy, reward, theta0, steps=steps, eta=eta, normalized=normalized)
    _check_rows(traj, ref)
    assert traj.prompt_metrics == {}  # one prompt: nothing per prompt unless asked
    # the final theta is theta_K of the reference loop: its J matches
    torch.testing.assert_close((policy.logp(traj.theta).exp() * reward).sum(-1)[:, 0], ref["J"][-1])


def test_multi_prompt_with_weights_and_train_prompts():
    gen = _gen(2)
    C, arms = 3, 4
    policy = LinearContextualSoftmax(torch.randn(C, 2, generator=gen, dtype=F64), arms=arms)
    reward = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=F64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    theta0 = policy.init(2, scale=0.5, generator=gen)

    def train(k, J, generator):  # one prompt per step, cycling; (R, C)
        assert J.shape == (2, C)
        out = torch.zeros(2, C, dtype=F64)
        out[:, k % C] = 1.0
        return out

    steps, eta = 5, 0.7
    traj = simulate(policy, reward, theta0, steps=steps, step_size=eta, weights=weights, train_prompts=train, record_every=2)
    ref, per = _reference(policy, reward, theta0, steps=steps, eta=eta, weights=weights, train=train)
    _check_rows(traj, ref, per, names=("J", "log_odds", "M", "M_train", "train_delta_mu", *STEP_FIELDS))
    S = len(traj.step)
    assert traj.step.tolist() == [0, 2, 4, 5]
    assert all(v.shape == (S, 2, C) for v in traj.prompt_metrics.values())
    # the trained prompt's alignment is that prompt's own delta_mu
    for i, k in enumerate(traj.step.tolist()[:-1]):
        torch.testing.assert_close(traj.metrics["train_delta_mu"][i], traj.prompt_metrics["delta_mu"][i, :, k % C])
    # M_train differs from M: the objective is the weighted batch, the update trains one prompt
    assert not torch.allclose(traj.metrics["M_train"][-1], traj.metrics["M"][-1])


def test_one_policy_shared_by_several_prompts():
    # the bandit answers two prompts with different correct arms: J = Σ_c P_c J_c, one theta
    policy = TabularSoftmax(4)
    reward = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 1]], dtype=F64)
    weights = torch.tensor([0.25, 0.75], dtype=F64)
    theta0 = policy.init(2, scale=1.0, generator=_gen(9))
    traj = simulate(policy, reward, theta0, steps=4, step_size=0.6, weights=weights, direction="normalized-gradient")
    assert traj.info["kernel"] == "generic"
    ref, per = _reference(policy, reward, theta0, steps=4, eta=0.6, normalized=True, weights=weights)
    _check_rows(traj, ref, per)


def test_per_run_rewards_equal_separate_runs():
    gen = _gen(3)
    policy = FeatureSoftmax(torch.randn(2, 4, 3, generator=gen, dtype=F64))
    reward = torch.tensor([[[1.0, 0, 0, 0], [0, 1, 1, 0]], [[0.0, 0, 1, 0], [1, 0, 0, 0]]], dtype=F64)  # (R, C, N)
    theta0 = policy.init(2, scale=1.0, generator=gen)
    traj = simulate(policy, reward, theta0, steps=4, step_size=0.5, direction="normalized-gradient")
    ref, per = _reference(policy, reward, theta0, steps=4, eta=0.5, normalized=True)
    per.pop("log_odds_change")
    _check_rows(traj, ref, per)
    for r in range(2):  # each run alone, with its reward shared, gives the same records
        alone = simulate(policy, reward[r], theta0[r:r + 1], steps=4, step_size=0.5, direction="normalized-gradient")
        for name, values in alone.metrics.items():
            torch.testing.assert_close(values[:, 0], traj.metrics[name][:, r], rtol=1e-12, atol=1e-13, equal_nan=True)


def test_curvature_is_recorded():
    policy = TokenSoftmax(3, 2, eos=0)  # responses of different lengths: the curvature term differs by response
    reward = torch.zeros(1, policy.n_responses, dtype=F64)
    reward[0, [0, 3]] = 1.0
    theta0 = policy.init(2, scale=1.0, generator=_gen(4))
    traj = simulate(policy, reward, theta0, steps=3, step_size=0.5, direction="normalized-gradient", curvature=True)
    ref, _ = _reference(policy, reward, theta0, steps=3, eta=0.5, normalized=True, curvature=True)
    _check_rows(traj, ref, names=("J", "delta_mu", "curv_plus", "curv_minus"))
    assert bool(((traj.metrics["curv_plus"] - traj.metrics["curv_minus"])[:-1].abs() > 1e-3).all())


def test_sampled_direction_records_monte_carlo_estimates():
    policy = TabularSoftmax(4)
    reward = torch.tensor([[1.0, 0, 1, 0]], dtype=F64)
    theta0 = policy.init(3, scale=1.0, generator=_gen(5))
    traj = simulate(policy, reward, theta0, steps=3, direction=make_direction("reinforce", G=8),
                    step_size=0.3, generator=_gen(6))
    assert traj.info["kernel"] == "generic"
    J_mc = traj.metrics["J_mc"][:-1]
    assert bool(((J_mc * 8) == (J_mc * 8).round()).all())  # n+/G
    assert bool(traj.metrics["J_mc"][-1].isnan().all())


# --- measure=False: only where the runs go ----------------------------------------------------------------


def _state_only_cases():
    from rlvrlab.simulate.instances import Curriculum, contextual_bandit, random_instances, token_bandit

    gen = _gen(21)
    for inst in random_instances(gen):
        theta0 = inst.policy.init(3, scale=1.0, generator=gen)
        yield inst.name, dict(policy=inst.policy, reward=inst.reward, theta0=theta0, direction="normalized-gradient",
                              step_size=torch.tensor([0.3, 1.0, 4.0], dtype=F64))
    policy, reward, _ = token_bandit(3, 4, prompts=6, dim=3, vocab=3, rho=0.5)
    theta0 = policy.init(4, scale=0.5, generator=gen)
    for preset in ("reinforce", "grpo"):
        yield f"token bandit {preset}", dict(policy=policy, reward=reward, theta0=theta0,
                                             direction=make_direction("expected", preset=preset),
                                             step_size=make_step_size("cosine", eta=torch.tensor([1.0, 10.0, 100.0, 1e3], dtype=F64)))
    yield "token bandit sampled", dict(policy=policy, reward=reward, theta0=theta0, direction=make_direction("preset", preset="grpo", G=4),
                                       step_size=3.0)
    policy, reward, theta0 = contextual_bandit(3, 5, dim=2, arms=4, init_scale=1.0, generator=gen)
    yield "contextual curriculum", dict(policy=policy, reward=reward, theta0=theta0, direction="gradient", step_size=2.0,
                                        train_prompts=Curriculum(5, 0.1, 0.9))


@pytest.mark.parametrize("case", list(_state_only_cases()), ids=lambda c: c[0])
def test_state_only_runs_go_where_measured_runs_go(case):
    """measure=False takes the same steps: the same parameters and J, log-odds and eta at every
    recorded step, bit for bit, on every kind of policy, direction (sampled too) and step rule."""
    _, kwargs = case
    args = dict(steps=9, record_every=2, **kwargs)
    full = simulate(**args, generator=_gen(5), fast=False)
    lean = simulate(**args, generator=_gen(5), measure=False)
    assert lean.info["kernel"] == "state-only" and torch.equal(lean.step, full.step)
    assert set(lean.metrics) == {"J", "log_odds", "eta"}
    for name in lean.metrics:
        assert torch.equal(lean.metrics[name].nan_to_num(-7.0), full.metrics[name].nan_to_num(-7.0)), name
    assert torch.equal(lean.theta, full.theta)


def test_state_only_needs_a_step_size_that_reads_no_statistics():
    policy, reward = TabularSoftmax(3), torch.tensor([[1.0, 0, 0]], dtype=F64)
    with pytest.raises(ValueError, match=r"^measure: got False; allowed: True, or a step size that does not read"):
        simulate(policy, reward, torch.zeros(2, 3, dtype=F64), steps=2, step_size=make_step_size("condition-13a"), measure=False)


# --- the fused tabular kernel -------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["gradient", "normalized-gradient", "gap"])
@pytest.mark.parametrize("K, correct", [(3, [0]), (6, [1, 4]), (6, [5])])
@pytest.mark.parametrize("steps, record_every", [(13, 1), (21, 7), (10, 3)])
def test_tabular_kernel_equals_generic_loop(direction, K, correct, steps, record_every):
    policy = TabularSoftmax(K)
    reward = torch.zeros(1, K, dtype=F64)
    reward[0, correct] = 1.0
    theta0 = policy.init(3, scale=1.5, generator=_gen(K + steps))
    eta = torch.tensor([0.2, 0.5, 1.0], dtype=F64) if direction == "gradient" else 0.3
    fast = simulate(policy, reward, theta0, steps=steps, direction=direction, step_size=eta, record_every=record_every)
    slow = simulate(policy, reward, theta0, steps=steps, direction=direction, step_size=eta, record_every=record_every, fast=False)
    assert fast.info["kernel"] == "tabular" and slow.info["kernel"] == "generic"
    assert bool((1 - slow.metrics["J"] > 1e-12).all())  # the kernel's documented range
    assert torch.equal(fast.step, slow.step)
    assert set(fast.metrics) == set(slow.metrics)
    for name in slow.metrics:
        torch.testing.assert_close(fast.metrics[name], slow.metrics[name], rtol=1e-9, atol=1e-12, equal_nan=True, msg=name)
    # theta = log π: equal to the generic theta up to a constant per run
    diff = fast.theta - slow.theta
    torch.testing.assert_close(diff - diff.mean(-1, keepdim=True), torch.zeros_like(diff), rtol=0, atol=1e-9)


def _tabular(compile: bool, second_order: bool = True, *, steps: int = 16, record_every: int = 3):
    policy = TabularSoftmax(5)
    reward = torch.tensor([[1.0, 0, 0, 1, 0]], dtype=F64)
    theta0 = policy.init(3, scale=1.0, generator=_gen(7))
    return tabular.run(policy, reward, theta0, steps=steps, direction=make_direction("normalized-gradient"),
                       step_size=make_step_size("fixed", eta=torch.tensor([0.4, 1.0, 3.0], dtype=F64)),
                       record_every=record_every, second_order=second_order, compile=compile)


def _assert_same_trajectory(got, want, tol=0.0):
    assert torch.equal(got.step, want.step) and list(got.metrics) == list(want.metrics)
    for name in want.metrics:
        torch.testing.assert_close(got.metrics[name], want.metrics[name], rtol=tol, atol=tol, equal_nan=True, msg=name)
    torch.testing.assert_close(got.theta, want.theta, rtol=tol, atol=tol)


def test_tabular_kernel_compiled_equals_eager():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = _tabular(compile=True)  # 16 steps: one compiled loop
    fell_back = any("torch.compile unavailable" in str(w.message) for w in caught)  # no C++ toolchain
    eager = _tabular(compile=False)
    assert (compiled.info["kernel"], eager.info["kernel"]) == ("tabular" if fell_back else "tabular-compiled", "tabular")
    _assert_same_trajectory(compiled, eager, tol=1e-12)


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("steps, record_every, block", [(22, 3, 5), (23, 3, 5), (20, 5, 5), (17, 4, 1), (9, 20, 2)])
def test_tabular_kernel_in_blocks_equals_one_block(monkeypatch, compile, steps, record_every, block):
    """Steps split over several calls (records of a step at a block's end, a final block of one step)
    give the records of one call over all steps."""
    whole = _tabular(compile=False, steps=steps, record_every=record_every)
    monkeypatch.setattr(tabular, "BLOCK_ELEMENTS", block * len(tabular.FIELDS) * 3)  # `block` steps of 3 runs a call
    split = _tabular(compile=compile, steps=steps, record_every=record_every)
    _assert_same_trajectory(split, whole, tol=1e-12 if compile else 0.0)


@pytest.mark.parametrize("compile", [False, True])
def test_tabular_kernel_without_second_order_keeps_the_other_records(compile):
    full, first = _tabular(compile=compile), _tabular(compile=compile, second_order=False)
    assert set(full.metrics) - set(first.metrics) == {"var_plus", "var_minus"}
    for name in first.metrics:
        torch.testing.assert_close(first.metrics[name], full.metrics[name], rtol=1e-12, atol=1e-14, equal_nan=True, msg=name)


def test_fast_path_is_not_taken_where_it_does_not_apply():
    policy = TabularSoftmax(4)
    theta0 = policy.init(2, scale=1.0, generator=_gen(8))
    reward = torch.tensor([[1.0, 0, 0, 0]], dtype=F64)
    cases = [
        dict(reward=reward, step_size=make_step_size("cosine", eta=0.3)),  # not a fixed step
        dict(reward=reward.expand(2, 1, 4), step_size=0.3),  # per-run rewards
        dict(reward=torch.ones(1, 4, dtype=F64), step_size=0.3),  # J = 1: no incorrect arm
        dict(reward=reward, step_size=0.3, curvature=True),
    ]
    for kwargs in cases:
        assert simulate(policy, theta0=theta0, steps=2, **kwargs).info["kernel"] == "generic"


# --- input checks -----------------------------------------------------------------------------------------


def test_bad_input_names_the_field():
    policy = TabularSoftmax(3)
    reward = torch.tensor([[1.0, 0, 0]], dtype=F64)
    theta0 = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="^theta0: got 'shape \\(2, 4\\)'"):
        simulate(policy, reward, torch.zeros(2, 4, dtype=F64), steps=2)
    with pytest.raises(ValueError, match="^theta0: "):
        simulate(policy, reward, torch.zeros(3, dtype=F64), steps=2)
    with pytest.raises(ValueError, match="^theta0: "):
        simulate(policy, reward, torch.full((2, 3), math.nan, dtype=F64), steps=2)
    with pytest.raises(ValueError, match="^reward: .*N = 3"):
        simulate(policy, torch.tensor([[1.0, 0, 0, 0]]), theta0, steps=2)
    with pytest.raises(ValueError, match="^reward: .*0 or 1"):
        simulate(policy, torch.tensor([[1.0, 0.5, 0]]), theta0, steps=2)
    with pytest.raises(ValueError, match="^reward: .*runs"):
        simulate(policy, reward.expand(3, 1, 3), theta0, steps=2)
    with pytest.raises(ValueError, match="^steps: got 0"):
        simulate(policy, reward, theta0, steps=0)
    with pytest.raises(ValueError, match="^record_every: got 0"):
        simulate(policy, reward, theta0, steps=2, record_every=0)
    with pytest.raises(ValueError, match="^weights: "):
        simulate(policy, torch.tensor([[1.0, 0, 0], [0, 1, 0]]), theta0, steps=2, weights=torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="^eta: "):
        simulate(policy, reward, theta0, steps=2, step_size=-0.1)

    def negative(ctx, stats, w_norm):
        return torch.full((ctx.theta.shape[0],), -0.1, dtype=F64)

    with pytest.raises(ValueError, match="^step size at step 0: "):
        simulate(policy, reward, theta0, steps=2, step_size=negative)
