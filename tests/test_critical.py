"""rlvrlab.simulate.critical: each prompt's exact critical step against a brute-force reference (J_c
over the enumerated responses of a small token bandit, in a plain loop, scanned on a fine grid of
steps); the capped line search's step against the same reference; the cross-prompt controller's guarantee (every prompt it helps still gains log-odds); the
prediction as the minimum of its recorded per-step thresholds, along the controller's own steps."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rlvrlab.simulate import simulate
from rlvrlab.simulate.critical import (capped_line_step_size, cross_prompt_step_size, predict_critical_rate,
                                       prompt_critical_steps, smallest_critical_step)
from rlvrlab.simulate.instances import initial_theta, token_bandit
from rlvrlab.updates import Direction, StepContext, make_direction

T, C, D, V = 2, 6, 3, 4


def _instance(seed: int, J0: float = 0.3):
    policy, reward, beta = token_bandit(seed, T, prompts=C, dim=D, vocab=V, rho=0.5)
    theta0 = initial_theta(policy, reward, beta, J0)
    model = policy.bind(reward)
    w = model.expected_update(theta0, torch.full((1, C), 1.0 / C, dtype=torch.float64), _grpo())
    return policy, reward, model, theta0, w


def _grpo():
    from rlvrlab.updates import get_preset
    return get_preset("grpo")


def _log_odds_loop(policy, reward, theta: np.ndarray) -> np.ndarray:
    """Prompt log-odds (n, C) at parameters theta (n, d), summing over every response o ∈ V^T."""
    X = policy.features[:, 0, :, :].numpy()  # (C, V, d): token logits θ·φ, the same at every position
    targets, m = reward.targets.numpy(), reward.threshold
    out = np.zeros((theta.shape[0], C))
    for c in range(C):
        logits = theta @ X[c].T  # (n, V)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)  # softmax per step η
        J, Jm = np.zeros(theta.shape[0]), np.zeros(theta.shape[0])  # 1 - J summed directly: exact as J -> 1
        for o in itertools.product(range(V), repeat=T):
            prob = np.prod([p[:, o[t]] for t in range(T)], axis=0)
            if sum(o[t] == targets[c, t] for t in range(T)) >= m:
                J += prob
            else:
                Jm += prob
        with np.errstate(divide="ignore"):  # Jm underflows to 0 at the largest steps: log-odds +inf
            out[:, c] = np.log(J) - np.log(Jm)
    return out


def test_prompt_critical_steps_match_a_fine_scan_of_the_enumerated_log_odds():
    finite_seen = 0
    for seed in range(6):
        policy, reward, model, theta0, w = _instance(seed)
        got = prompt_critical_steps(model, theta0, w, eta_min=1e-2, eta_max=1e5, points=41, bisection=40)[0].numpy()
        etas = np.geomspace(1e-2, 1e5, 100_001)
        th, ww = theta0.numpy(), w.numpy()
        change = _log_odds_loop(policy, reward, th + etas[:, None] * ww) - _log_odds_loop(policy, reward, th)
        delta_mu = model.along(theta0, w).delta_mu[0].numpy()
        for c in range(C):
            if not delta_mu[c] > 0:
                assert math.isnan(got[c])
                continue
            bad = np.flatnonzero(~(change[:, c] > 0))
            if len(bad) == 0:
                assert got[c] == math.inf
                continue
            assert bad[0] > 0  # the scan starts where the prompt gains
            finite_seen += 1
            assert etas[bad[0] - 1] * (1 - 1e-9) <= got[c] <= etas[bad[0]] * (1 + 1e-9)
    assert finite_seen >= 3  # the reference saw real thresholds, not only infinities


def test_smallest_critical_step_takes_order_statistics_of_the_batch():
    crit = torch.tensor([[3.0, math.nan, 1.0, math.inf, 2.0]], dtype=torch.float64)
    weights = torch.tensor([[0.25, 0.25, 0.0, 0.25, 0.25]], dtype=torch.float64)  # prompt 2 not in the batch
    assert smallest_critical_step(crit, weights).tolist() == [2.0]
    assert smallest_critical_step(crit, weights, tolerated=1).tolist() == [3.0]
    assert smallest_critical_step(crit, weights, tolerated=2).tolist() == [math.inf]
    assert smallest_critical_step(crit, weights, tolerated=9).tolist() == [math.inf]
    with pytest.raises(ValueError, match="tolerated"):
        smallest_critical_step(crit, weights, tolerated=-1)


def test_cross_prompt_steps_keep_every_helped_prompt_gaining():
    policy, reward, model, theta0, w = _instance(1)
    rule = cross_prompt_step_size(fraction=0.5, eta_max=1e4, bisection=30)
    traj = simulate(policy, reward, theta0, steps=15, direction=make_direction("expected", preset="grpo"), step_size=rule,
                    per_prompt=True)
    lo = traj.prompt_metrics["log_odds"].numpy()[:, 0]  # (S, C)
    dm = traj.prompt_metrics["delta_mu"].numpy()[:, 0]
    eta = traj.metrics["eta"].numpy()[:, 0]
    helped = dm[:-1] > 0
    assert (eta[:-1] > 0).all()
    assert (np.diff(lo, axis=0)[helped] > 0).all()


def test_prediction_is_the_minimum_of_the_recorded_thresholds_along_the_controllers_steps():
    policy, reward, model, theta0, _ = _instance(1)
    grpo = make_direction("expected", preset="grpo")
    pred = predict_critical_rate(model, theta0, grpo, steps=6, fraction=0.5, eta_max=1e4, bisection=30)
    assert pred.thresholds.shape == (6, C) and pred.eta.shape == (6,)
    per = pred.per_step()
    assert pred.rate() == float(per.min())
    assert pred.rate(tolerated=1) >= pred.rate()
    # the same steps from the step-size rule inside simulate
    rule = cross_prompt_step_size(fraction=0.5, eta_max=1e4, bisection=30)
    traj = simulate(policy, reward, theta0, steps=6, direction=grpo, step_size=rule)
    assert np.allclose(traj.metrics["eta"].numpy()[:-1, 0], pred.eta.numpy(), rtol=1e-9)
    helped = ~torch.isnan(pred.thresholds).all(1).numpy()
    assert np.isfinite(per.numpy()).any()
    assert np.allclose(pred.eta.numpy(), np.where(helped, np.minimum(0.5 * per.numpy(), 1e4), 0.0), rtol=1e-12)


@pytest.mark.parametrize("bad", [dict(fraction=0.0), dict(fraction=1.5), dict(eta_min=0.0), dict(points=1)])
def test_cross_prompt_refuses_bad_settings(bad):
    with pytest.raises(ValueError):
        cross_prompt_step_size(**bad)


def _capped_line_reference(policy, reward, theta: np.ndarray, w: np.ndarray, weights: np.ndarray, grid: np.ndarray,
                           max_loss: float, objective: str) -> float:
    """The capped line search by hand: the scan's steps before the first at which some prompt of the
    batch loses more than max_loss of log J_c, and among them the one with the largest batch objective
    (Σ weights_c · 2·arcsin(√J_c), or the batch J)."""
    phi = (lambda J: 2 * math.asin(math.sqrt(J))) if objective == "arcsin" else (lambda J: J)
    log_J = lambda th: -np.logaddexp(0.0, -_log_odds_loop(policy, reward, th)[0])  # noqa: E731  log σ(ℓ)
    base = log_J(theta)
    best, best_J = 0.0, -np.inf
    for eta in grid:
        lj = log_J(theta + eta * w)
        if any(weights[c] > 0 and lj[c] - base[c] < -max_loss for c in range(C)):
            break
        J = sum(weights[c] * phi(min(1.0, np.exp(lj[c]))) for c in range(C))
        if J > best_J:
            best, best_J = eta, J
    return best


@pytest.mark.parametrize("objective", ["arcsin", "J"])
@pytest.mark.parametrize("max_loss", [0.05, 0.5, 1e6])
def test_capped_line_step_is_the_best_batch_objective_below_the_per_prompt_cap(max_loss, objective):
    binding = 0
    for seed in range(4):
        policy, reward, model, theta0, w = _instance(seed)
        weights = np.full(C, 1.0 / C)
        if seed % 2:  # a batch without prompt 0: its losses do not count
            weights = np.r_[0.0, np.full(C - 1, 1.0 / (C - 1))]
        grid = np.geomspace(1e-2, 1e4, 31)
        rule = capped_line_step_size(objective=objective, max_loss=max_loss, fraction=0.5, eta_min=1e-2, eta_max=1e4, points=31)
        ctx = StepContext(0, 1, theta0, model, torch.tensor(weights)[None], model.constants())
        got = float(rule(ctx, None, Direction(w))[0])
        ref = _capped_line_reference(policy, reward, theta0.numpy(), w.numpy(), weights, grid, max_loss, objective)
        assert got == pytest.approx(0.5 * ref, rel=1e-9)
        free = _capped_line_reference(policy, reward, theta0.numpy(), w.numpy(), weights, grid, 1e6, objective)
        binding += ref != free
    if max_loss == 0.05:
        assert binding >= 1  # the cap changed the step somewhere: the test sees it bind


def test_capped_line_runs_never_lower_a_prompts_log_success_by_more_than_the_cap():
    policy, reward, model, theta0, _ = _instance(2)
    rule = capped_line_step_size(max_loss=0.3, eta_max=1e4)
    traj = simulate(policy, reward, theta0, steps=20, direction=make_direction("expected", preset="grpo"), step_size=rule,
                    per_prompt=True)
    log_J = np.log(traj.prompt_metrics["J"].numpy()[:, 0])  # (S, C)
    assert (np.diff(log_J, axis=0) >= -0.3 - 1e-9).all()
    assert traj.metrics["J"][-1, 0] > traj.metrics["J"][0, 0]


def test_grpos_expected_update_ascends_the_arcsine_of_the_success_rates():
    """The capped line search's "arcsin" objective: with the exact σ_c, GRPO's expected update is
    Σ_c weights_c ∇J_c/σ_c = ∇ Σ_c weights_c · 2·arcsin(√J_c), divided by T for its 1/|o| (every
    response has T tokens here). Checked against central differences of the enumerated J_c."""
    policy, reward, model, theta0, w = _instance(3)
    weights = np.full(C, 1.0 / C)

    def phi(th: np.ndarray) -> float:
        J = 1 / (1 + np.exp(-_log_odds_loop(policy, reward, th[None])[0]))
        return float(sum(weights[c] * 2 * math.asin(math.sqrt(J[c])) for c in range(C)))

    th, eps = theta0.numpy()[0], 1e-6
    grad = np.array([(phi(th + eps * e) - phi(th - eps * e)) / (2 * eps) for e in np.eye(len(th))])
    np.testing.assert_allclose(w.numpy()[0], grad / T, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bad", [dict(max_loss=0.0), dict(max_loss=math.inf), dict(fraction=0.0), dict(eta_min=10.0, eta_max=1.0),
                                 dict(objective="mean")])
def test_capped_line_refuses_bad_settings(bad):
    with pytest.raises(ValueError):
        capped_line_step_size(**bad)
