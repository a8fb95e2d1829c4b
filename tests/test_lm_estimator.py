"""rlvrlab.lm.diagnostics against exact values on an enumerable token-level policy.

After each optimizer step the LM trainer measures the Gradient Gap from one extra forward pass:
ΔL_i = log π_new(o_i) - log π_old(o_i) for the completions o_i it sampled from π_old. Here the
language model is a TokenSoftmax small enough to enumerate (40 responses), so everything
``step_diagnostics`` estimates has an exact value along the step θ_new = θ_old + η·ŵ:

    gap/delta_mu_eta      η·Δμ = η·ŵ·(g+ - g-)                      Lemma 1, first order in η
    gap/log_odds_change   logit J(θ_new) - logit J(θ_old)           Lemma 3, exact at any η
    gap/var_plus, _minus  Var±(ŵ·∇log π)                            App. F, as η -> 0
    gap/crit_ratio        η (var- - var+) / (2Δμ) = η / η_crit       App. F, second order

Tolerance: 4 standard errors, the ones step_diagnostics (or, for var±, gap_stats_mc) reports.
Each estimate is a smooth function of means over 4096 i.i.d. samples, so its error is close to
normal: over 300 repeated draws of this instance the z-scores of Δμ·η and of the log-odds change
had mean within ±0.11 and sd 0.97-1.03 at both step sizes, those of var± sd 0.98-1.04 (one |z| of
4.1 in 600), and crit_ratio's delta-method SE came out ~13% small (z sd 1.14). 4 SE is thus a
3.5-4σ bound: a failure means a biased estimate or a wrong standard error, not bad luck, and the
draws are seeded anyway. Each check also asserts that its standard error is small next to the
value it tests (SE < |exact|/3), so that none can pass vacuously.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlvrlab.gap import gap_along, gap_stats_mc
from rlvrlab.lm.diagnostics import step_diagnostics
from rlvrlab.policies import TokenSoftmax

pytestmark = pytest.mark.usefixtures("float64")

V, T, EOS = 4, 3, 0  # 40 responses: 1 + 3 + 9 of lengths 1-3 ending in EOS, 27 truncated at T
SEED = 5  # θ_old with J = 0.254 and var- > var+ along the gradient (a finite η_crit = 18.3)
B, G = 256, 16  # prompts × group, pooled: 4096 samples
SMALL_ETA = 0.01  # second-order remainder of E+ΔL - E-ΔL is < 1/10 of the SE (asserted below)
LARGE_ETA = 3.0  # η/η_crit = 0.16, yet the log-odds change is off its first order by > 10 SE
Z = 4.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _instance() -> tuple[TokenSoftmax, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The policy, θ_old (1, d), reward (N,) = "the response contains token 1", unit directions (1, d)."""
    policy = TokenSoftmax(V, T, eos=EOS, parametrization="prefix")  # h_t = θ[o_<t]: a full tree, d = 52
    tokens, alive = policy.response_tokens(torch.arange(policy.n_responses))  # (N, T) twice
    reward = ((tokens == 1) & alive).any(-1).to(torch.float64)  # (N,)
    theta = policy.init(1, scale=1.0, generator=_gen(SEED))  # (1, d)
    grad = policy.grad_J(theta, reward.view(1, -1), torch.ones(1))  # (1, d) exact ∇J
    ascent = grad / grad.norm()
    # a sampled update's direction: the gradient under isotropic noise twice its size (cos 0.46 with ∇J)
    noise = torch.randn(1, policy.n_params, generator=_gen(SEED + 1))
    noisy = ascent + 2 * noise / noise.norm()
    directions = {"ascent": ascent, "descent": -ascent, "noisy": noisy / noisy.norm()}
    return policy, theta, reward, directions


def _logit_J(logp: torch.Tensor, reward: torch.Tensor) -> float:
    J = (logp.exp() * reward).sum()
    return float(torch.log(J) - torch.log1p(-J))


def _exact(policy: TokenSoftmax, theta: torch.Tensor, reward: torch.Tensor, w: torch.Tensor,
           eta: float) -> dict[str, float]:
    """Exact values by enumeration for the step θ + η·w (w a unit vector)."""
    logp, proj = policy.logp_and_jvp(theta, w)  # (1, 1, N): log π_old, w·∇log π_old
    along = gap_along(logp, proj, reward)
    logp_new = policy.logp(theta + eta * w)  # (1, 1, N)
    p, dL = logp.exp().flatten(), (logp_new - logp).flatten()  # (N,)
    J = float((p * reward).sum())
    mean_plus = float((p * reward * dL).sum()) / J
    mean_minus = float((p * (1 - reward) * dL).sum()) / (1 - J)
    var_plus = float((p * reward * (dL - mean_plus) ** 2).sum()) / J
    var_minus = float((p * (1 - reward) * (dL - mean_minus) ** 2).sum()) / (1 - J)
    delta_mu, vp, vm = float(along.delta_mu), float(along.var_plus), float(along.var_minus)
    return {
        "J": J,
        "delta_mu_eta": eta * delta_mu,
        "log_odds_change": _logit_J(logp_new, reward) - _logit_J(logp, reward),
        # what mean+(ΔL) - mean-(ΔL) estimates without bias at any η; Δμ·η only to first order
        "mean_gap": mean_plus - mean_minus,
        "var_plus": vp,
        "var_minus": vm,
        "crit_ratio": eta * (vm - vp) / (2 * delta_mu),
        # the population values of what gap/var± compute, Var±(ΔL)/η², at this η
        "step_var_plus": var_plus / eta**2,
        "step_var_minus": var_minus / eta**2,
    }


def _measure(policy: TokenSoftmax, theta_old: torch.Tensor, theta_new: torch.Tensor, reward: torch.Tensor,
             seed: int) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """What the trainer does after its step: sample B·G completions from π_old, take ΔL as the
    masked sum of per-token log-ratios, call step_diagnostics. Also returns ΔL and r, (B, G)."""
    idx = policy.sample(theta_old, B * G, _gen(seed))  # (1, 1, B·G) response indices
    delta = (policy.token_logp(theta_new, idx) - policy.token_logp(theta_old, idx)).sum(-1)  # (1, 1, B·G)
    delta, r = delta.view(B, G), reward[idx].view(B, G)
    eta = float((theta_new - theta_old).norm())
    return step_diagnostics(delta, r, eta=eta), delta, r


def _assert_within(est: float, se: float, exact: float, what: str) -> None:
    assert math.isfinite(se) and se < abs(exact) / 3, f"{what}: se {se:.3g} too large to test {exact:.6g}"
    assert abs(est - exact) <= Z * se, f"{what}: estimate {est:.6g}, exact {exact:.6g}, z = {(est - exact) / se:.2f}"


def test_instance_is_a_mixed_prompt():
    policy, theta, reward, _ = _instance()
    J = float((policy.logp(theta).exp().flatten() * reward).sum())
    assert policy.n_responses == 40 and 0.2 < J < 0.6


@pytest.mark.parametrize("direction", ["ascent", "descent", "noisy"])
def test_small_step_estimates_equal_exact_delta_mu_eta_and_log_odds_change(direction):
    policy, theta, reward, dirs = _instance()
    w = dirs[direction]
    exact = _exact(policy, theta, reward, w, SMALL_ETA)
    mc, _, _ = _measure(policy, theta, theta + SMALL_ETA * w, reward, seed=100)
    # the step is small enough that first order is the truth: the exact remainder is far below the SE
    assert abs(exact["mean_gap"] - exact["delta_mu_eta"]) < mc["gap/se_delta_mu_eta"] / 10
    _assert_within(mc["gap/delta_mu_eta"], mc["gap/se_delta_mu_eta"], exact["delta_mu_eta"], "delta_mu_eta")
    _assert_within(mc["gap/log_odds_change"], mc["gap/se_log_odds_change"], exact["log_odds_change"], "log_odds_change")
    assert mc["gap/eta"] == pytest.approx(SMALL_ETA, rel=1e-12)
    assert mc["gap/J"] == pytest.approx(exact["J"], abs=Z * math.sqrt(exact["J"] * (1 - exact["J"]) / (B * G)))


@pytest.mark.parametrize("direction", ["ascent", "descent"])
def test_large_step_log_odds_change_stays_exact_while_first_order_does_not(direction):
    policy, theta, reward, dirs = _instance()
    w = dirs[direction]
    exact = _exact(policy, theta, reward, w, LARGE_ETA)
    mc, _, _ = _measure(policy, theta, theta + LARGE_ETA * w, reward, seed=200)
    se_lo = mc["gap/se_log_odds_change"]
    # Lemma 3 holds at any step size: the plug-in estimate still finds the exact change ...
    _assert_within(mc["gap/log_odds_change"], se_lo, exact["log_odds_change"], "log_odds_change")
    # ... while first order has drifted many standard errors away from it,
    assert abs(exact["delta_mu_eta"] - exact["log_odds_change"]) > 10 * se_lo
    assert abs(mc["gap/delta_mu_eta"] - exact["log_odds_change"]) > 10 * max(se_lo, mc["gap/se_delta_mu_eta"])
    # and gap/delta_mu_eta still estimates E+ΔL - E-ΔL without bias, just no longer Δμ·η or the change.
    _assert_within(mc["gap/delta_mu_eta"], mc["gap/se_delta_mu_eta"], exact["mean_gap"], "mean_gap")


def test_spread_along_the_step_equals_exact_conditional_variances_and_crit_ratio():
    policy, theta, reward, dirs = _instance()
    w = dirs["ascent"]
    eta = SMALL_ETA
    exact = _exact(policy, theta, reward, w, eta)
    mc, delta, r = _measure(policy, theta, theta + eta * w, reward, seed=300)
    # step_diagnostics reports no SE for var±: take gap_stats_mc's (checked in test_gap) on the same pooled samples
    pooled = gap_stats_mc(r.reshape(1, -1), proj=delta.reshape(1, -1))
    se_vp, se_vm = float(pooled.se_var_plus[0]) / eta**2, float(pooled.se_var_minus[0]) / eta**2
    for side, se in (("plus", se_vp), ("minus", se_vm)):
        # Var±(ΔL)/η² = var± + O(η): at this η the remainder is far below the SE
        assert abs(exact[f"step_var_{side}"] - exact[f"var_{side}"]) < se / 10
        _assert_within(mc[f"gap/var_{side}"], se, exact[f"var_{side}"], f"var_{side}")
    # crit_ratio = η (v- - v+) / (2Δμ); its delta-method SE from the three parts taken as
    # independent, which makes it ~13% small here (z sd 1.14 over 300 draws): still a 3.5σ bound
    first, diff = mc["gap/delta_mu_eta"], mc["gap/var_minus"] - mc["gap/var_plus"]
    rel_se = math.sqrt((se_vp**2 + se_vm**2) / diff**2 + (mc["gap/se_delta_mu_eta"] / first) ** 2)
    assert exact["crit_ratio"] > 0  # var- > var+ along the gradient: a finite critical step
    _assert_within(mc["gap/crit_ratio"], rel_se * abs(mc["gap/crit_ratio"]), exact["crit_ratio"], "crit_ratio")
    assert mc["gap/eta_crit"] == pytest.approx(eta / mc["gap/crit_ratio"], rel=1e-12)
