"""The success-scaling experiment's pieces: the one-step critical step by bisection on an exact
function, against cases whose crossing is known in closed form; the theory's critical-rate forms
(17) vs (18) and their log-log slopes; the stall guard of the trained states."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlvrlab import theory
from rlvrlab.experiments.success_scaling import SuccessScalingConfig, _objective_log_odds, _states, one_step_critical, theory_lr
from rlvrlab.policies import FeatureSoftmax
from rlvrlab.policies.model import Enumerated
from rlvrlab.simulate import two_response
from rlvrlab.simulate.instances import token_bandit

SCAN = {"eta_min": 1e-3, "eta_max": 1e3, "points": 61, "bisection": 60}


def _log_odds_change(policy, reward, theta, w):
    model = Enumerated(policy, reward)
    log_odds = _objective_log_odds(model, torch.ones(1, 1, dtype=torch.float64))
    lo0 = log_odds(theta)
    return lambda eta: log_odds(theta + eta[:, None] * w) - lo0


def test_bisection_finds_the_closed_form_crossing_of_three_responses():
    # Features (1,0), (0,1), (0,-1), only the first correct, θ = 0 and w = (a, 1): the logits move by
    # (a·η, η, -η), so the log-odds change is a·η - log cosh(η) exactly. (log cosh x)/x increases, so
    # the change is positive below its only root η* and negative above; a = log cosh(2)/2 puts η* at 2.
    policy = FeatureSoftmax(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64))
    reward = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    theta = torch.zeros(1, 2, dtype=torch.float64)
    a = math.log(math.cosh(2.0)) / 2
    change = _log_odds_change(policy, reward, theta, torch.tensor([[a, 1.0]], dtype=torch.float64))
    etas = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    assert torch.allclose(change(etas), a * etas - torch.log(torch.cosh(etas)), atol=1e-13)  # the closed form itself
    eta, lo, hi = one_step_critical(change, **SCAN)
    assert eta == pytest.approx(2.0, rel=1e-12)
    assert lo <= hi and lo == pytest.approx(2.0, rel=1e-12) and hi == pytest.approx(2.0, rel=1e-12)  # a bracket, narrowed


@pytest.mark.parametrize("target", [0.05, 0.7, 30.0])
def test_bisection_finds_the_crossing_wherever_it_lies(target):
    policy = FeatureSoftmax(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64))
    reward = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    a = math.log(math.cosh(target)) / target
    change = _log_odds_change(policy, reward, torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[a, 1.0]], dtype=torch.float64))
    assert one_step_critical(change, **SCAN)[0] == pytest.approx(target, rel=1e-9)


def test_two_response_log_odds_are_linear_so_there_is_no_critical_step():
    # App. E: logit J = θ+ - θ-, so along w the change is η(w+ - w-): never turns negative along the
    # gap direction (censored: inf), and is negative from the first step against it.
    policy, reward, theta0 = two_response(torch.tensor([0.3], dtype=torch.float64))
    up = _log_odds_change(policy, reward, theta0, torch.tensor([[1.0, -1.0]], dtype=torch.float64) / math.sqrt(2))
    assert torch.allclose(up(torch.tensor([0.5, 4.0], dtype=torch.float64)), torch.tensor([0.5, 4.0], dtype=torch.float64) * math.sqrt(2))
    assert one_step_critical(up, **SCAN) == (math.inf, SCAN["eta_max"], math.inf)
    down = _log_odds_change(policy, reward, theta0, torch.tensor([[-1.0, 1.0]], dtype=torch.float64) / math.sqrt(2))
    eta, lo, hi = one_step_critical(down, **SCAN)
    assert math.isnan(eta) and (lo, hi) == (0.0, SCAN["eta_min"])


def test_bisection_returns_the_first_of_two_crossings():
    # η(1 - η)(3 - η): positive on (0, 1), negative on (1, 3), positive again above 3.
    change = lambda eta: eta * (1 - eta) * (3 - eta)  # noqa: E731
    assert one_step_critical(change, **SCAN)[0] == pytest.approx(1.0, rel=1e-12)


def test_theory_forms_and_their_exponents():
    # (17) meets (18): GRPO alpha* = sqrt((1-J)/J), Dr. GRPO / REINFORCE alpha* = 1/(J T).
    assert theory.critical_lr_grpo(0.8) == pytest.approx(0.5)
    assert theory.critical_lr_drgrpo(0.5, 4.0) == pytest.approx(0.5)
    # At that rate GRPO's effective step equals the cap: alpha·sqrt(J(1-J)) = 1 - J (Delta_mu, T cancel).
    J = 0.93
    assert theory.effective_step_grpo(theory.critical_lr_grpo(J), 1.0, J, 1.0) == pytest.approx(theory.theory_step_cap(1.0, J, 1.0))
    # Local log-log slopes against 1 - J: 1/(2J) -> 1/2 and (1-J)/J -> 0.
    for J in (0.5, 0.9, 0.99):
        h = 1e-6
        x = np.array([(1 - J) * (1 - h), (1 - J) * (1 + h)])
        for preset, expected in (("grpo", 1 / (2 * J)), ("reinforce", (1 - J) / J), ("dr-grpo", (1 - J) / J)):
            y = theory_lr(preset, 1 - x)
            assert np.log(y[1] / y[0]) / np.log(x[1] / x[0]) == pytest.approx(expected, rel=1e-6)
    # The GRPO form crosses the plateau law: grpo_plateau(alpha, c) is the J where c·alpha*(J) = alpha.
    assert theory.critical_lr_grpo(theory.grpo_plateau(0.7, 1.0)) == pytest.approx(0.7)


def test_trained_states_stop_when_the_flow_stalls():
    # On this instance the normalized gap flow from J = 0.025 stops improving near J = 0.917: the states
    # end there instead of spending every flow step, and each state reached is at or past its grid value.
    config = SuccessScalingConfig(J_grid=(0.05, 0.5, 0.95, 0.99), prompts=24, flow_step=0.1, flow_steps=20_000)
    policy, reward, beta = token_bandit(2, config.length, prompts=config.prompts, dim=config.dim, vocab=config.vocab, rho=config.rho)
    model = policy.bind(reward)
    weights = torch.full((1, model.n_prompts), 1.0 / model.n_prompts, dtype=torch.float64)
    states = _states(model, policy, reward, beta, weights, config)
    assert len(states["lean"]) == 4
    assert all(abs(J - g) < 1e-6 for (J, _), g in zip(states["lean"], config.J_grid))  # initial_theta hits the grid
    trained = [J for J, _ in states["trained"]]
    assert trained == sorted(trained) and all(J >= g for J, g in zip(trained, config.J_grid))
    assert len(trained) == 2  # 0.95 and 0.99 are never reached
