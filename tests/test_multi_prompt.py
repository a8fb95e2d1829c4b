"""The multi-prompt experiment (§5): its quantities against plain loops, and its quick run's checks."""

from __future__ import annotations

import math

import pytest
import torch

from rlvrlab.experiments import run_experiment
from rlvrlab.experiments.multi_prompt import (MultiPromptConfig, alignment_ratio, batch_alignment_from_prompts, cosine,
                                              dynamic_sampling_weights)
from rlvrlab.policies import TokenSoftmax
from rlvrlab.policies.model import Enumerated
from rlvrlab.simulate import initial_theta, token_bandit
from rlvrlab.updates import get_preset


def _tiny(seed: int = 0):
    """Three prompts sharing a token policy with EOS (V=3, T=2: 7 responses of length 1 or 2), each
    with its own pass set; two runs at random θ."""
    gen = torch.Generator().manual_seed(seed)
    policy = TokenSoftmax(3, 2, eos=0, parametrization="linear", features=torch.randn(3, 2, generator=gen, dtype=torch.float64))
    reward = torch.tensor([[1, 0, 0, 1, 0, 0, 1], [0, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 1]], dtype=torch.float64)
    theta = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    return policy, reward, theta


def _loops(policy, reward, theta, weights, w):
    """Per run, by plain loops over prompts and responses: J_q, Δμ_q, the batch Δμ (Lemma 5's P±),
    the batch gap g+ − g−, and GRPO's expected update Σ_q P_Q Σ_o π (r − J_q)/σ_q (1/|o|) ∇log π."""
    scores = policy.scores(theta)[:, 0]  # (R, N, d)
    p = policy.logp(theta)[:, 0].exp()  # (R, N)
    lengths = policy.lengths()
    out = []
    for r in range(theta.shape[0]):
        C, N = reward.shape
        J_q, dm_q = [], []
        g_plus = torch.zeros(theta.shape[1], dtype=torch.float64)
        g_minus = torch.zeros_like(g_plus)
        J = sum(weights[q] * sum(p[r, o] * reward[q, o] for o in range(N)) for q in range(C))
        grpo = torch.zeros_like(g_plus)
        for q in range(C):
            Jq = sum(p[r, o] * reward[q, o] for o in range(N))
            gp = sum(p[r, o] * reward[q, o] * scores[r, o] for o in range(N)) / Jq
            gm = sum(p[r, o] * (1 - reward[q, o]) * scores[r, o] for o in range(N)) / (1 - Jq)
            J_q.append(float(Jq))
            dm_q.append(float(w[r] @ (gp - gm)))
            for o in range(N):
                if reward[q, o]:
                    g_plus += weights[q] * p[r, o] * scores[r, o] / J
                else:
                    g_minus += weights[q] * p[r, o] * scores[r, o] / (1 - J)
                sigma = math.sqrt(Jq * (1 - Jq))
                grpo += weights[q] * p[r, o] * (reward[q, o] - Jq) / sigma / lengths[o] * scores[r, o]
        gap = g_plus - g_minus
        out.append({"J_q": J_q, "delta_mu_q": dm_q, "delta_mu": float(w[r] @ gap), "gap": gap, "grpo": grpo})
    return out


def test_batch_and_per_prompt_alignment_and_grpo_angle_against_plain_loops():
    policy, reward, theta = _tiny()
    model = Enumerated(policy, reward)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    W = weights.expand(2, 3)
    w = torch.randn(2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = _loops(policy, reward, theta, weights, w)
    got = alignment_ratio(model, theta, W, w)
    gap = model.gap_vector(theta, W)
    grpo = model.expected_update(theta, W, get_preset("grpo"))
    for r in range(2):
        assert got["J_q"][r].tolist() == pytest.approx(ref[r]["J_q"], rel=1e-12)
        assert got["delta_mu_q"][r].tolist() == pytest.approx(ref[r]["delta_mu_q"], rel=1e-10, abs=1e-12)
        assert float(got["delta_mu"][r]) == pytest.approx(ref[r]["delta_mu"], rel=1e-10)
        mean_q = sum(float(weights[q]) * ref[r]["delta_mu_q"][q] for q in range(3))
        assert float(got["ratio"][r]) == pytest.approx(mean_q / ref[r]["delta_mu"], rel=1e-9) if ref[r]["delta_mu"] > 0 \
            else math.isnan(float(got["ratio"][r]))
        assert torch.allclose(gap[r], ref[r]["gap"], rtol=1e-10, atol=1e-13)
        assert torch.allclose(grpo[r], ref[r]["grpo"], rtol=1e-10, atol=1e-13)
        cos_ref = float(ref[r]["grpo"] @ ref[r]["gap"] / (ref[r]["grpo"].norm() * ref[r]["gap"].norm()))
        assert float(cosine(grpo, gap)[r]) == pytest.approx(cos_ref, rel=1e-10)
    # The identity the experiment checks: Δμ = Σ_q P_Q J_q(1−J_q)/(J(1−J)) Δμ_q.
    closed = batch_alignment_from_prompts(got["J_q"], got["delta_mu_q"], W)
    assert closed.tolist() == pytest.approx([ref[r]["delta_mu"] for r in range(2)], rel=1e-10)


def test_grpo_is_not_parallel_to_the_batch_gap_but_reinforce_and_dr_grpo_are():
    policy, reward, theta = _tiny(1)
    model = Enumerated(policy, reward)
    W = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    gap = model.gap_vector(theta, W)
    for preset in ("reinforce", "dr-grpo"):  # ∇J = J(1−J)(g+ − g−) (Lemma 8); Dr. GRPO divides by a constant
        assert cosine(model.expected_update(theta, W, get_preset(preset)), gap).tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    assert (cosine(model.expected_update(theta, W, get_preset("grpo")), gap) < 1 - 1e-6).all()


def test_one_prompt_of_fixed_length_makes_grpo_parallel_to_the_gap():
    # With one prompt and every response of length T, GRPO's update is ∇J/(T σ): the σ_q tilt needs several prompts.
    policy, reward, beta = token_bandit(0, 3, prompts=1, dim=3, vocab=3, rho=0.5)
    model = policy.bind(reward)
    theta = initial_theta(policy, reward, beta, 0.3)
    W = torch.ones(1, 1, dtype=torch.float64)
    assert float(cosine(model.expected_update(theta, W, get_preset("grpo")), model.gap_vector(theta, W))) == pytest.approx(1.0, abs=1e-12)


def test_dynamic_sampling_weights_by_hand():
    J_q = torch.tensor([[0.01, 0.2, 0.97, 0.5], [0.0, 1.0, 0.001, 0.999]], dtype=torch.float64)
    W = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64).expand(2, 4)
    got = dynamic_sampling_weights(J_q, W, 0.05)
    assert got[0].tolist() == pytest.approx([0.0, 0.2 / 0.6, 0.0, 0.4 / 0.6])
    assert got[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # nothing kept: no batch


def test_same_sign_alignments_stay_between_the_bounds_of_the_identity():
    # Δμ = Σ_q P_Q c_q Δμ_q with c_q = J_q(1−J_q)/(J(1−J)): where every Δμ_q >= 0 the ratio
    # E_q[Δμ_q]/Δμ lies in [1/max c, 1/min c]; with J_q in [eps, 1 − eps] that is inside [1/B, B].
    gen = torch.Generator().manual_seed(0)
    eps = 0.05
    B = 1 / (4 * eps * (1 - eps))
    J_q = eps + (1 - 2 * eps) * torch.rand(500, 6, generator=gen, dtype=torch.float64)
    dm_q = torch.rand(500, 6, generator=gen, dtype=torch.float64) ** 3
    W = torch.full((500, 6), 1 / 6, dtype=torch.float64)
    ratio = (W * dm_q).sum(-1) / batch_alignment_from_prompts(J_q, dm_q, W)
    J = J_q.mean(-1, keepdim=True)
    c = J_q * (1 - J_q) / (J * (1 - J))
    assert (ratio >= 1 / c.max(-1).values * (1 - 1e-12)).all() and (ratio <= 1 / c.min(-1).values * (1 + 1e-12)).all()
    assert (ratio >= 1 / B).all() and (ratio <= B).all()
    # With mixed signs nothing bounds it: two prompts, Δμ = c1·1 + c2·(−x) can be made as small as one likes.
    J2 = torch.tensor([[0.2, 0.6]], dtype=torch.float64)
    W2 = torch.full((1, 2), 0.5, dtype=torch.float64)
    c2 = J2 * (1 - J2) / (0.4 * 0.6)
    x = float(c2[0, 0] / c2[0, 1]) * (1 - 1e-3)  # Δμ = c1 − c2·x = 1e-3·c1 > 0
    dm2 = torch.tensor([[1.0, -x]], dtype=torch.float64)
    ratio2 = float((W2 * dm2).sum() / batch_alignment_from_prompts(J2, dm2, W2))
    assert ratio2 == pytest.approx((1 - x) / (1e-3 * float(c2[0, 0])), rel=1e-9) and ratio2 > 100


def test_quick_run_checks_hold_with_their_counts(tmp_path):
    summary = run_experiment("multi-prompt", tmp_path, quick=True)
    checks = {c["name"]: c for c in summary["checks"]}
    failed = [n for n, c in checks.items() if c["kind"] == "theorem" and not c["passed"]]
    assert failed == []
    h = summary["headline"]
    for mode in ("uniform", "current"):
        regions = h["lemma7"][mode]
        for region in ("inside (15a)", "inside (64), outside (15a)", "worst direction, one step"):
            assert regions[region]["steps"] > 0 and regions[region]["held"] == regions[region]["steps"], (mode, region)
        assert 0 < h["lemma7_largest_fraction_of_allowance_used"][mode] <= 1  # (65): realized penalty within the allowance
    assert h["theorem5"]["steps"] > 0 and h["theorem5"]["held"] == h["theorem5"]["steps"]
    assert h["premises"]["failed"] == [] and h["premises"]["max_score_over_G_p"] <= 1 + 1e-12
    assert h["premises"]["max_cov_over_L_p"] <= 1 + 1e-12
    assert max(h["one_minus_cos_max"].values()) <= 1e-9
    assert h["dynamic_sampling"]["B"] == pytest.approx(1 / (4 * 0.05 * 0.95))


@pytest.mark.parametrize("settings, message", [
    ({"eps": 0.6}, "eps: got 0.6"),
    ({"eps": 0.0}, "eps: got 0.0"),
    ({"lengths": (0,)}, "lengths: got (0,)"),
    ({"J0s": (1.5,)}, "J0s: got (1.5,)"),
    ({"steps": 0}, "steps: got 0"),
    ({"share": 2.0}, "share: got 2.0"),
])
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MultiPromptConfig(**settings)
