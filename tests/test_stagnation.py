"""The stagnation experiment's sampled part: the finite-G GRPO factor, the step log that splits an
update into each prompt's own term, the mechanism rule, against hand computations and plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlvrlab.experiments.stagnation import (StagnationConfig, _StepLog, classify, exact_mechanism, feature_instance,
                                            grpo_group_factor)
from rlvrlab.policies import TabularSoftmax
from rlvrlab.policies.model import as_model
from rlvrlab.simulate.instances import token_bandit
from rlvrlab.updates import StepContext, make_direction


def _ctx(model, theta, weights, seed):
    return StepContext(0, 1, theta, model, weights, model.constants(), torch.Generator().manual_seed(seed))


# --- f_G(J) ---------------------------------------------------------------------------------------


def test_group_factor_G2_by_hand():
    # G = 2: only k = 1 moves (prob. 2J(1-J)); advantages ±0.5/sqrt(1/2): f = (1/2)·2J(1-J)·sqrt(1/2)
    for J in (0.1, 0.3, 0.9):
        assert grpo_group_factor(J, 2) == pytest.approx(J * (1 - J) / math.sqrt(2), rel=1e-12)


def test_group_factor_limits():
    # G -> ∞: eq. (5)'s sqrt(J(1-J)); J -> 1: (G-1)/sqrt(G)·(1-J), bounded against the cap (1-J)
    assert grpo_group_factor(0.7, 4000) == pytest.approx(math.sqrt(0.21), rel=2e-3)
    for G in (4, 16):
        assert grpo_group_factor(1 - 1e-6, G) / 1e-6 == pytest.approx((G - 1) / math.sqrt(G), rel=1e-4)
    assert grpo_group_factor(1.0, 8) == 0.0 and grpo_group_factor(0.0, 8) == 0.0


def test_group_factor_matches_the_library_sampled_mean():
    # two responses, tabular logits: g+ - g- = e1 - e2, so E[w] = f_G(J)·(e1 - e2); averaged over R runs
    J, G, R = 0.8, 4, 40000
    model = as_model(TabularSoftmax(2), torch.tensor([[1.0, 0.0]], dtype=torch.float64), R, torch.float64)
    logit = math.log(J / (1 - J))
    theta = torch.tensor([[logit / 2, -logit / 2]], dtype=torch.float64).expand(R, -1).clone()
    w = make_direction("preset", preset="grpo", G=G)(_ctx(model, theta, torch.ones(R, 1, dtype=torch.float64), 3)).w
    se = w[:, 0].std().item() / math.sqrt(R)
    # std_eps = 1e-4 shrinks each advantage by a factor std/(std + 1e-4): under 3e-4 here
    assert w[:, 0].mean().item() == pytest.approx(grpo_group_factor(J, G), abs=4 * se + 3e-4)
    assert torch.allclose(w[:, 0], -w[:, 1])


# --- one sampled step by hand ---------------------------------------------------------------------


def test_single_prompt_G2_step_by_hand():
    policy, reward, theta0 = feature_instance(2, 5, 3, 0.6)
    R = 64
    model = as_model(policy, reward, R, torch.float64)
    theta = theta0.expand(R, -1).clone()
    weights = torch.ones(R, 1, dtype=torch.float64)
    log = _StepLog("grpo", 2, torch.full((R,), 1.0, dtype=torch.float64), None)
    mine = log(_ctx(model, theta, weights, 11))
    lib = make_direction("preset", preset="grpo", G=2)(_ctx(model, theta, weights, 11))
    assert torch.equal(mine.samples.index, lib.samples.index)
    phi = policy.features[0]  # (N, d)
    pi = torch.softmax(theta0 @ phi.T, -1)[0]
    score = phi - pi @ phi  # ∇log π(o) = φ_o − E_π φ, (N, d)
    for r in range(R):
        o = mine.samples.index[r, 0]  # (G,)
        rew = reward[0, o]
        if rew[0] == rew[1]:
            hand = torch.zeros(3, dtype=torch.float64)  # no failure, or no success: no signal
        else:
            a = 0.5 / (math.sqrt(0.5) + 1e-4)  # (r − mean)/(std + eps), std with Bessel's correction
            adv = torch.where(rew > 0, a, -a)
            hand = 0.5 * (adv[0] * score[o[0]] + adv[1] * score[o[1]])
        assert torch.allclose(mine.w[r], hand, atol=1e-12)
        assert torch.allclose(lib.w[r], hand, atol=1e-12)
    assert log.failures[0].squeeze(1).tolist() == (2 - reward[0, mine.samples.index[:, 0]].sum(-1)).int().tolist()


def test_own_terms_against_a_plain_loop():
    # several prompts: each prompt's own term is the library's update trained on that prompt alone
    policy, reward, _ = token_bandit(0, 4, prompts=3, dim=3, vocab=3, rho=0.5)
    R, C, eta = 5, 3, 40.0
    model = as_model(policy, reward, R, torch.float64)
    theta = 0.3 * torch.randn(R, model.n_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = torch.full((R, C), 1.0 / C, dtype=torch.float64)
    log = _StepLog("dr-grpo", 4, torch.full((R,), eta, dtype=torch.float64), 4.0)
    total = log(_ctx(model, theta, weights, 5))
    lib = make_direction("preset", preset="dr-grpo", G=4, norm=4.0)(_ctx(model, theta, weights, 5))
    assert torch.allclose(total.w, lib.w, atol=1e-12)
    log_J, log_1mJ = model.masses(theta)
    for c in range(C):
        only = torch.zeros_like(weights)
        only[:, c] = 1.0 / C
        w_c = make_direction("preset", preset="dr-grpo", G=4, norm=4.0)(_ctx(model, theta, only, 5)).w
        lj, l1 = model.masses(theta + eta * w_c)
        expected = (lj - l1)[:, c] - (log_J - log_1mJ)[:, c]
        assert torch.allclose(log.own[0][:, c], expected, atol=1e-9)


def test_feature_instance():
    policy, reward, theta0 = feature_instance(4, 6, 3, 0.95)
    phi = policy.features[0]
    assert torch.allclose(phi.norm(dim=1), torch.ones(6, dtype=torch.float64))
    assert float(torch.softmax(theta0 @ phi.T, -1)[0, 0]) == pytest.approx(0.95, abs=1e-9)
    assert reward.tolist() == [[1.0, 0, 0, 0, 0, 0]]


# --- the mechanism rule on hand-made trajectories ---------------------------------------------------


def test_classify_single_prompt():
    change = np.array([[0.5], [0.4], [-9.0], [0.0], [0.0]])  # one prompt: the realized change is its own
    assert classify(True, np.array([0.95]), np.array([1e-4]), change, change, 2)[0] == "overshoot"
    assert classify(False, np.array([0.95]), np.array([0.999]), change, change, 2)[0] == "none"
    # stalled at a ceiling, nothing lost: overshoot only if own steps still lower J in the tail
    ceiling = np.array([[0.5], [0.4], [0.1], [-0.3], [0.3]])
    assert classify(True, np.array([0.5]), np.array([0.9]), ceiling, ceiling, 2)[0] == "overshoot"
    flat = np.array([[0.5], [0.4], [0.1], [0.0], [0.0]])
    assert classify(True, np.array([0.5]), np.array([0.9]), flat, flat, 2)[0] == "other"
    assert classify(True, np.array([0.001]), np.array([0.001]), flat, flat, 2)[0] == "never started"


def test_classify_several_prompts():
    change = np.array([[0.2, 0.1], [-8.0, 0.3], [0.0, 0.1]])  # prompt 0 falls at step 1
    J0, J1 = np.array([0.6, 0.6]), np.array([1e-3, 0.999])
    by_other = np.array([[0.1, 0.1], [0.5, 0.3], [0.0, 0.1]])  # its own term would have raised it
    assert classify(True, J0, J1, change, by_other, 1) == ("interference", 0, 1, 0)
    by_own = np.array([[0.1, 0.1], [-5.0, 0.3], [0.0, 0.1]])  # its own term gives more than half the drop
    assert classify(True, J0, J1, change, by_own, 1) == ("overshoot", 1, 0, 0)
    half = np.array([[0.1, 0.1], [-3.0, 0.3], [0.0, 0.1]])  # less than half: the others did the rest
    assert classify(True, J0, J1, change, half, 1) == ("interference", 0, 1, 0)
    never = np.array([0.6, 0.001])
    assert classify(True, never, np.array([0.9, 0.001]), change * 0 + 0.1, change * 0 + 0.1, 1) == ("never started", 0, 0, 1)


def test_exact_mechanism():
    mech = exact_mechanism(np.array([True, True, True, False]), np.array([2, 0, 0, 1]), np.array([0, 1, 0, 0]))
    assert mech.tolist() == ["interference", "never started", "other", "none"]


@pytest.mark.parametrize("field,value", [("sampled_Gs", (1,)), ("sampled_J0s", (1.0,)), ("sampled_lrs", (0.0,)),
                                         ("several_prompts", 1), ("responses", 1)])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=f"^{field}: got"):
        StagnationConfig(**{field: value})
