"""The post-step pass on a stratified sample of the groups (rlvrlab.lm.diagnostics.measured_groups),
and on the distinct completions only (rlvrlab.lm.logprobs.distinct_rows).

A sampled pass measures every group with both outcomes and a share of the groups that are all
right or all wrong, counting each of those U/k times. The checks: frequency weights are copies
(a plain-loop reference); averaged over every sample the design can draw, the sampled estimate is
the full pass's exactly and the sampling variance it reports is the variance it has (enumeration);
on the enumerable policy of test_lm_estimator the sampled estimates find the exact values within
their own standard errors; the trainer and the TRL monitor measure what they say they measure.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlvrlab.gap import gap_stats_mc, realized_log_odds_change
from rlvrlab.lm.diagnostics import _sampling_variance, group_weights, measured_groups, repeated_groups, step_diagnostics
from rlvrlab.lm.logprobs import distinct_rows, token_logprobs
from rlvrlab.lm.sampling import Rollout

from test_lm_estimator import Z, _assert_within, _exact, _instance
from test_logprobs import _qwen, _rollout


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- frequency weights ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_a_sample_of_weight_w_counts_as_w_copies_of_itself(seed, float64):
    gen = _gen(seed)
    x = torch.randn(3, 7, generator=gen)
    reward = (torch.rand(3, 7, generator=gen) < 0.5).double()
    reward[:, 0], reward[:, 1] = 1.0, 0.0  # both sides in every row
    weight = torch.randint(0, 4, (3, 7), generator=gen).double()
    weight[:, :2] = torch.tensor([2.0, 3.0])
    got = gap_stats_mc(reward, proj=x, weight=weight)
    realized, se = realized_log_odds_change(x, reward, weight=weight)
    for b in range(3):  # the reference: each sample repeated weight times, unweighted
        copies = torch.repeat_interleave(torch.arange(7), weight[b].long())
        ref = gap_stats_mc(reward[b, copies][None], proj=x[b, copies][None])
        ref_realized, ref_se = realized_log_odds_change(x[b, copies][None], reward[b, copies][None])
        for name in ("n_plus", "n_minus", "J", "se_J", "delta_mu", "se_delta_mu", "var_plus", "var_minus", "se_var_plus",
                     "se_var_minus"):
            assert float(getattr(got, name)[b]) == pytest.approx(float(getattr(ref, name)[0]), rel=1e-12, abs=1e-15), name
        assert float(realized[b]) == pytest.approx(float(ref_realized[0]), rel=1e-12)
        assert float(se[b]) == pytest.approx(float(ref_se[0]), rel=1e-12)


# --- the design -----------------------------------------------------------------------------------


def _batch(seed: int, B: int = 40, G: int = 4) -> torch.Tensor:
    gen = _gen(seed)
    J = torch.rand(B, 1, generator=gen)  # prompts of every difficulty: about a fifth all right, a fifth all wrong
    return (torch.rand(B, G, generator=gen) < J).double()


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 1.0])
def test_every_mixed_group_and_a_share_of_each_unmixed_kind_is_measured(fraction):
    reward = _batch(1)
    right, wrong = reward.bool().all(-1), ~reward.bool().any(-1)
    mixed = ~right & ~wrong
    assert right.sum() >= 4 and wrong.sum() >= 4 and mixed.sum() >= 5  # every kind is there
    keep = measured_groups(reward, fraction, _gen(0))
    assert bool(keep[mixed].all())
    for stratum in (right, wrong):
        U = int(stratum.sum())
        assert int((keep & stratum).sum()) == min(U, max(2, math.ceil(fraction * U)))  # two at least
    assert torch.equal(keep, measured_groups(reward, fraction, _gen(0)))  # a function of the generator
    weight = group_weights(reward, keep)
    # the weighted counts of successes and failures are the batch's own
    assert float((weight[:, None] * reward).sum()) == pytest.approx(float(reward.sum()), rel=1e-12)
    assert float((weight[:, None] * (1 - reward)).sum()) == pytest.approx(float((1 - reward).sum()), rel=1e-12)
    assert bool((weight[mixed] == 1).all()) and bool((weight[~keep] == 0).all())


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_the_share_is_checked(fraction):
    with pytest.raises(ValueError, match=r"^fraction: got .*; allowed: a number in \(0, 1\]"):
        measured_groups(_batch(0), fraction)


def _every_sample(reward: torch.Tensor, always: torch.Tensor, k_right: int, k_wrong: int):
    """Every measured set the design can draw with k of each unmixed kind outside ``always`` (all
    equally likely)."""
    right = (reward.bool().all(-1) & ~always).nonzero().flatten().tolist()
    wrong = (~reward.bool().any(-1) & ~always).nonzero().flatten().tolist()
    certain = (reward.bool().any(-1) & ~reward.bool().all(-1)) | always
    for a in itertools.combinations(right, k_right):
        for b in itertools.combinations(wrong, k_wrong):
            keep = certain.clone()
            keep[list(a) + list(b)] = True
            yield keep


@pytest.mark.parametrize("certain", [[], [2, 7]], ids=["strata", "with-certain-groups"])
def test_over_every_sample_the_estimate_averages_to_the_full_pass_and_varies_as_it_says(certain, float64):
    # 2 mixed groups, 4 all right, 5 all wrong; 2 of 4 and 3 of 5 measured: 6 · 10 equally likely samples.
    # With groups measured for certain (one all right, one all wrong), 2 of 3 and 3 of 4: 3 · 4.
    reward = torch.tensor([[1, 0, 1.0], [0, 0, 1]] + [[1, 1, 1]] * 4 + [[0, 0, 0]] * 5)
    always = torch.zeros(11, dtype=torch.bool)
    always[certain] = True
    delta = torch.randn(reward.shape, generator=_gen(3)) * 0.1 + 0.05 * reward
    full = step_diagnostics(delta, reward, eta=1.0)
    samples = list(_every_sample(reward, always, 2, 3))
    assert len(samples) == (12 if certain else 60)
    estimates, variances = [], []
    for keep in samples:
        est = step_diagnostics(torch.where(keep[:, None], delta, 1e3), reward, eta=1.0, measured=keep,  # left out: never read
                               always=always if certain else None)
        estimates.append(est["gap/delta_mu_eta"])
        weight = group_weights(reward, keep, always)
        v = 0.0
        for side in (reward.bool(), ~reward.bool()):
            stratum = side.all(-1) & ~always
            v += _sampling_variance(torch.where(keep[:, None], delta, 0.0), stratum, side, keep, float(side.sum()))
        variances.append(v)
        # the standard error it reports: the weighted samples' own and this sampling's
        own = gap_stats_mc(reward.reshape(1, -1), proj=delta.reshape(1, -1), weight=weight.repeat_interleave(3)[None])
        assert est["gap/se_delta_mu_eta"] ** 2 == pytest.approx(float(own.se_delta_mu[0]) ** 2 + v, rel=1e-9)
        assert bool((weight[always] == 1).all())
    # unbiased: the counts of each side are fixed, so each side's weighted mean averages to the full one
    assert sum(estimates) / len(estimates) == pytest.approx(full["gap/delta_mu_eta"], rel=1e-12)
    # and the sampling variance it reports is, on average, the variance it has (k >= 2 in both kinds)
    spread = sum((e - full["gap/delta_mu_eta"]) ** 2 for e in estimates) / len(estimates)
    assert spread > 0 and sum(variances) / len(variances) == pytest.approx(spread, rel=1e-9)


def test_groups_measured_for_certain_are_outside_the_strata():
    reward = _batch(1)
    always = torch.zeros(len(reward), dtype=torch.bool)
    right, wrong = reward.bool().all(-1), ~reward.bool().any(-1)
    always[right.nonzero().flatten()[:2]] = True  # two of the all-right groups cost one row each
    keep = measured_groups(reward, 0.1, _gen(0), always=always)
    assert bool(keep[always].all())
    for stratum in (right & ~always, wrong):
        U = int(stratum.sum())
        assert int((keep & stratum).sum()) == min(U, max(2, math.ceil(0.1 * U)))
    assert float((group_weights(reward, keep, always)[:, None] * reward).sum()) == pytest.approx(float(reward.sum()))


def test_repeated_groups_are_one_completion_repeated():
    ids = torch.tensor([[5, 6, 0], [5, 6, 0], [5, 6, 9], [5, 6, 3], [7, 1, 1], [7, 1, 2]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]).bool()
    # group 0: one completion twice; group 1 too (its rows differ only where masked); group 2: two completions
    assert repeated_groups(ids, mask, 2).tolist() == [True, True, False]


def test_with_every_group_measured_the_estimates_are_the_full_pass():
    reward = _batch(2, B=12)
    delta = torch.randn(reward.shape, generator=_gen(4)) * 0.1
    full = step_diagnostics(delta, reward, eta=0.5)
    same = step_diagnostics(delta, reward, eta=0.5, measured=measured_groups(reward, 1.0))
    assert same.keys() == full.keys()
    assert all(same[k] == v or (math.isnan(v) and math.isnan(same[k])) for k, v in full.items())
    assert full["gap/measured_groups"] == 12


# --- against exact values (the enumerable policy of test_lm_estimator) ------------------------------


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("eta", [0.01, 3.0])
def test_sampled_estimates_find_the_exact_values_within_their_standard_errors(eta):
    policy, theta, reward, dirs = _instance()
    w = dirs["ascent"]
    exact = _exact(policy, theta, reward, w, eta)
    B, G = 1024, 4  # groups of 4 at J = 0.25: about a third of them all wrong, a few all right
    idx = policy.sample(theta, B * G, _gen(500))
    theta_new = theta + eta * w
    delta = (policy.token_logp(theta_new, idx) - policy.token_logp(theta, idx)).sum(-1).view(B, G)
    r = reward[idx].view(B, G)
    full = step_diagnostics(delta, r, eta=eta)
    keep = measured_groups(r, 0.25, _gen(501))
    sampled = step_diagnostics(delta, r, eta=eta, measured=keep)
    assert 0.6 < sampled["gap/measured_groups"] / B < 0.8  # a quarter of the unmixed groups, every mixed one
    truth = {"delta_mu_eta": exact["delta_mu_eta"] if eta < 1 else exact["mean_gap"], "log_odds_change": exact["log_odds_change"]}
    for key, value in truth.items():
        se, se_full = sampled[f"gap/se_{key}"], full[f"gap/se_{key}"]
        assert se > se_full  # the sample costs precision, and says so
        _assert_within(sampled[f"gap/{key}"], se, value, f"sampled {key}")
        assert abs(sampled[f"gap/{key}"] - full[f"gap/{key}"]) <= Z * math.sqrt(se**2 - se_full**2), key


# --- distinct rows ----------------------------------------------------------------------------------


def _repeating(seed: int) -> Rollout:
    """A rollout whose groups repeat some completions (as a confident policy's do)."""
    roll = _rollout(3, 4, 5, 9, seed=seed)
    rows = torch.tensor([0, 0, 1, 0, 4, 5, 5, 5, 8, 9, 10, 11])  # group 0 and 1 repeat rows, group 2 does not
    return Rollout(roll.prompt_ids[rows], roll.prompt_mask[rows], roll.completion_ids[rows], roll.completion_mask[rows], 4)


def test_distinct_rows_are_each_distinct_completion_once_with_its_prompt():
    roll = _repeating(30)
    unique, inverse, (heads, owner) = distinct_rows(roll)
    assert unique.completion_ids.shape[0] == 8 and inverse.tolist() == [0, 0, 1, 0, 2, 3, 3, 3, 4, 5, 6, 7]
    assert torch.equal(unique.completion_ids[inverse], roll.completion_ids)
    assert torch.equal(unique.prompt_ids[heads][owner], unique.prompt_ids)  # each row continues its group's prompt
    assert len(heads) == 3


@pytest.mark.parametrize("seed", [31, 32])
def test_the_distinct_pass_gives_every_row_its_log_probs_and_gradients(seed):
    model = _qwen()
    params = [p for p in model.parameters() if p.requires_grad]
    roll = _repeating(seed)
    weight = torch.randn(roll.completion_ids.shape, generator=_gen(seed))
    logp, ent = token_logprobs(model, roll, entropy=True)
    grads = torch.autograd.grad((logp * weight).sum(), params)
    once, once_ent = token_logprobs(model, roll, entropy=True, distinct=True)
    once_grads = torch.autograd.grad((once * weight).sum(), params)
    torch.testing.assert_close(once, logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(once_ent, ent, atol=1e-5, rtol=1e-5)
    assert bool((once[~roll.completion_mask] == 0).all())
    for g, h in zip(once_grads, grads):
        torch.testing.assert_close(g, h, atol=1e-5, rtol=1e-4)
