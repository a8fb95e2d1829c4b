"""Theorem 6 and Remark 1 (App. G): the closed forms added to rlvrlab.theory, the bound
‖∇J‖² <= L_o·J(1-J) that decides Theorem 6(b)'s printed constant, and the checks the two-response
and collapse experiments run; and Figure 1a's logistic fit (its b-range is Theorem 6(a)'s sandwich)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlvrlab import theory
from rlvrlab.experiments import run_experiment
from rlvrlab.experiments.contextual import logistic_fit
from rlvrlab.policies.model import as_model
from rlvrlab.simulate import two_response
from rlvrlab.simulate.instances import random_instances


def test_error_bound_is_one_minus_the_logistic_bound_and_stays_precise():
    J0, M = torch.tensor([0.01, 0.3, 0.9], dtype=torch.float64), torch.tensor([0.0, 2.0, 7.0], dtype=torch.float64)
    b = theory.theorem6_error_bound(J0, M)
    assert torch.allclose(b, 1 - theory.logistic_lower_bound(J0, M), rtol=1e-12)
    assert torch.allclose(b, (1 - J0) / (1 - J0 + J0 * torch.exp(M / 2)), rtol=1e-12)  # the printed summand
    # Far out 1 - (lower bound) rounds to 0; the summand keeps its relative precision.
    assert theory.theorem6_error_bound(0.5, 2000.0) == pytest.approx(math.exp(-1000.0), rel=1e-12)


def test_printed_and_proof_terms():
    # 2 L_o b and 4 G_o² b²: on App. E (L_o = 1/2, G_o = sqrt 2) b and 8 b², the proof's larger where b > 1/8.
    b = theory.theorem6_error_bound(0.2, 1.0)
    assert theory.theorem6_gradient_term(0.2, 1.0, 0.5) == pytest.approx(b)
    assert theory.theorem6_gradient_term_proof(0.2, 1.0, math.sqrt(2)) == pytest.approx(8 * b * b)
    assert 8 * b * b > b > 1 / 8


def test_alignment_floor_worked_by_hand():
    # (2/3)(logit 0.9 - logit 0.5) = (2/3) log 9
    assert theory.theorem6_alignment_floor(0.5, 0.9) == pytest.approx(2 * math.log(9) / 3)
    assert theory.theorem6_alignment_floor(0.3, 0.3) == 0.0


def test_gradient_norm_bound_holds_on_random_policies_and_is_tight_on_app_e():
    """‖∇J‖² <= L_o·J(1-J) (Cauchy-Schwarz against the Fisher information, itself <= L_o), for every
    prompt of every random instance (bandits, feature and contextual softmax, token policies with and
    without EOS) at random, often peaked, parameters."""
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for inst in random_instances(gen):
        R = 64
        theta = 2 * torch.randn(R, inst.policy.n_params, generator=gen, dtype=torch.float64)
        model = as_model(inst.policy, inst.reward, R, torch.float64)
        log_J, log_1mJ = model.masses(theta)
        for c in range(model.n_prompts):
            weights = torch.zeros(R, model.n_prompts, dtype=torch.float64)
            weights[:, c] = 1
            g2 = model.grad_J(theta, weights).norm(dim=-1) ** 2
            bound = theory.gradient_norm_sq_bound(log_J[:, c].exp(), inst.policy.constants().L_o)
            assert bool((g2 <= bound * (1 + 1e-9)).all()), inst.name
            worst = max(worst, float((g2 / bound).max()))
    assert worst > 0.9  # not a loose bound on these instances either
    # App. E: ‖∇J‖² = 2J²(1-J)² and L_o = 1/2, ratio 4J(1-J): equality at J = 1/2.
    J0 = torch.tensor([0.5, 0.2], dtype=torch.float64)
    policy, reward, theta0 = two_response(J0)
    model = as_model(policy, reward, 2, torch.float64)
    g2 = model.grad_J(theta0, torch.ones(2, 1, dtype=torch.float64)).norm(dim=-1) ** 2
    ratio = g2 / theory.gradient_norm_sq_bound(J0, policy.constants().L_o)
    assert torch.allclose(ratio, 4 * J0 * (1 - J0), rtol=1e-12) and ratio[0] == pytest.approx(1.0, rel=1e-12)


def _checks(summary, *needles):
    return [c for c in summary["checks"] if all(n in c["name"] for n in needles)]


def test_two_response_runs_theorem6(tmp_path):
    summary = run_experiment("two-response", tmp_path, quick=True, settings=["steps=300"])
    for needle in ("eq. (9) along the gap direction", "L_o·J(1-J)", "Theorem 6(a)", "Theorem 6(b) as printed",
                   "Theorem 6(b): Σ‖∇J‖² converges"):
        found = _checks(summary, needle)
        assert len(found) == 1 and found[0]["passed"] and found[0]["kind"] == "theorem", needle
    rows = summary["headline"]["theorem6"]
    inside = [r for r in rows if r["premise_61"]]
    assert len(inside) == 3  # the runs at Corollary 3.1's step; the 10x runs are outside (61)
    for r in inside:
        # App. E: the log-odds move by exactly Delta_mu·eta, so M(K) is the log-odds gain, above (2/3) of it.
        assert r["M_final"] == pytest.approx(r["log_odds_gain"], rel=1e-9)
        assert r["sum_grad_norm_sq"] <= r["sum_grad_norm_sq_limit_upper"] < math.inf
    fisher = _checks(summary, "L_o·J(1-J)")[0]
    assert "= 1.000000" in fisher["measured"]  # the J0 = 1/2 run attains the bound


def test_collapse_runs_remark1(tmp_path):
    summary = run_experiment("collapse", tmp_path, quick=True, settings=["steps=400", "T_infs=1,2", "record_every=8"])
    for label in ("F.1", "F.2 (T_inf=1)", "F.2 (T_inf=2)"):
        remark = _checks(summary, label + ":", "Remark 1")
        assert len(remark) == 2 and all(c["passed"] and c["kind"] == "theorem" for c in remark), label
    assert all(c["passed"] for c in _checks(summary, "F.1:", "Theorem 6"))
    assert len(_checks(summary, "F.1:", "Theorem 6")) == 2  # condition-13a is (61): its premise holds
    assert _checks(summary, "at every step of every run")[0]["passed"]
    for inst in summary["headline"]["instances"]:
        # M grows without bound (linearly) while J falls; the gradient sums are finite, bracketed.
        assert all(m > 0 for m in inst["collapse_M_final"])
        assert all(s <= u < math.inf for s, u in zip(inst["collapse_sum_grad_norm_sq"], inst["collapse_sum_grad_norm_sq_limit_upper"]))


def test_logistic_fit_recovers_a_known_curve():
    rng = np.random.default_rng(0)
    M = rng.uniform(0, 12, 4000)
    J = 1 / (1 + np.exp(-(-4.6 + 0.8 * M))) + rng.normal(0, 0.01, M.size)
    fit = logistic_fit(M, J, -4.6)
    assert fit["a"] == pytest.approx(-4.6, abs=0.05) and fit["b"] == pytest.approx(0.8, abs=0.01)
    assert fit["rms_J"] == pytest.approx(0.01, rel=0.05)
    assert fit["rms_isotonic"] <= fit["rms_J"] + 1e-12  # the best monotone curve fits at least as well
    # A monotone but non-logistic relation (a step): the logistic loses clearly against isotonic.
    step = (M > 6).astype(float)
    fit = logistic_fit(M, step, -4.6)
    assert fit["rms_isotonic"] < 1e-12 and fit["rms_J"] > 0.01 or fit["b"] > 1.5
