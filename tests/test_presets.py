"""rlvrlab.updates presets: advantages, surrogates and aggregations against values worked out by
hand and plain loops; each preset's loss gradient at θ = θ_old against the formula written as a
loop over prompts and samples; the "expected" direction against eq. (5) (GRPO), ∇J (REINFORCE,
RLOO, Dr. GRPO) and the sampled "preset" direction within standard errors; epochs > 1 against
plain SGD steps on one batch.

Every tensor is created as float64 explicitly (the default dtype stays float32, as users have it).
"""

from __future__ import annotations

import math

import pytest
import torch

from rlvrlab.policies import TokenSoftmax
from rlvrlab.policies.model import Batch, Enumerated
from rlvrlab.updates import (
    ADVANTAGES,
    AGGREGATIONS,
    PRESETS,
    SURROGATES,
    StepContext,
    get_preset,
    make_direction,
    policy_loss,
)

F64 = torch.float64
EPS = 1e-4  # std_eps of the presets


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# --- advantages ----------------------------------------------------------------------------------------------


def test_advantages_by_hand():
    reward = _t([[1.0, 0, 0, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    J = _t([0.25, 0.5, 0.9])
    A = {name: fn(reward, J=J, eps=EPS) for name, fn in ADVANTAGES.items()}
    assert torch.equal(A["none"], reward)
    # exact: r - J per row
    torch.testing.assert_close(A["exact"], _t([[0.75, -0.25, -0.25, 0.75], [0.5, 0.5, 0.5, -0.5], [0.1, 0.1, 0.1, 0.1]]),
                               rtol=0, atol=1e-15)
    # mean: row means 1/2, 3/4, 1
    torch.testing.assert_close(A["mean"], _t([[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75], [0, 0, 0, 0]]),
                               rtol=0, atol=1e-15)
    # mean-std, Bessel's std: row 0 sqrt(4·¼/3) = sqrt(1/3); row 1 sqrt((3/16 + 9/16)/3) = 1/2; row 2 0
    s0, s1 = math.sqrt(1 / 3), 0.5
    torch.testing.assert_close(A["mean-std"], _t([[0.5 / (s0 + EPS), -0.5 / (s0 + EPS), -0.5 / (s0 + EPS), 0.5 / (s0 + EPS)],
                                                  [0.25 / (s1 + EPS)] * 3 + [-0.75 / (s1 + EPS)],
                                                  [0, 0, 0, 0]]), rtol=1e-14, atol=0)
    # leave-one-out: row 0: 1 - (0 + 0 + 1)/3 = 2/3, 0 - 2/3; row 1: 1 - 2/3 = 1/3, 0 - 3/3 = -1
    torch.testing.assert_close(A["loo"], _t([[2 / 3, -2 / 3, -2 / 3, 2 / 3], [1 / 3, 1 / 3, 1 / 3, -1], [0, 0, 0, 0]]),
                               rtol=0, atol=1e-15)
    # a different eps enters only mean-std
    torch.testing.assert_close(ADVANTAGES["mean-std"](reward[:1], eps=0.5)[0, 0], _t(0.5 / (s0 + 0.5)), rtol=1e-15, atol=0)


def test_advantage_errors_name_the_advantage():
    one = _t([[1.0]])
    for name in ("mean", "mean-std", "loo"):
        with pytest.raises(ValueError, match=f"^advantage '{name}': got 'groups of 1'"):
            ADVANTAGES[name](one)
    with pytest.raises(ValueError, match="^advantage 'exact': got 'no exact J'"):
        ADVANTAGES["exact"](_t([[1.0, 0.0]]))
    # groups of 1 are fine without a group baseline
    assert torch.equal(ADVANTAGES["none"](one), one)
    assert torch.equal(ADVANTAGES["exact"](one, J=_t([0.25])), _t([[0.75]]))


# --- surrogates --------------------------------------------------------------------------------------------


def _ragged(seed: int, B: int = 2, G: int = 3, T: int = 4):
    gen = _gen(seed)
    logp = -torch.rand(B, G, T, generator=gen, dtype=F64) - 0.1
    lengths = torch.randint(1, T + 1, (B, G), generator=gen)
    lengths[0, 0], lengths[-1, -1] = 1, T  # both extremes present
    mask = torch.arange(T) < lengths.unsqueeze(-1)
    adv = torch.randn(B, G, generator=gen, dtype=F64)
    return logp * mask, mask, adv, lengths


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogates_at_theta_old(name):
    logp_old, mask, adv, lengths = _ragged(0)
    logp = logp_old.clone().requires_grad_(True)
    loss, clipped = SURROGATES[name](logp, logp_old, adv, mask, eps_low=0.2, eps_high=0.28)
    assert loss.shape == mask.shape and clipped.shape == mask.shape and clipped.dtype == torch.bool
    assert not bool(clipped.any())  # every ratio is 1
    m = mask.to(F64)
    # value: -A on every token (gspo: the sequence's -s·A with s = 1, carried by every token)
    torch.testing.assert_close(loss * m, -adv.unsqueeze(-1) * m, rtol=0, atol=0)
    if name == "gspo":
        # seq-mean-token-mean of the tokens is the sequence loss -s·A; s = exp(mean_t Δlogp)
        # spreads A/|o| over each token of the sequence and nothing over padding
        seq = ((loss * m).sum(-1) / lengths).sum()
        grad = torch.autograd.grad(seq, logp)[0]
        expected = -(adv / lengths).unsqueeze(-1) * m
    else:
        grad = torch.autograd.grad((loss * m).sum(), logp)[0]
        expected = -adv.unsqueeze(-1) * m
    torch.testing.assert_close(grad, expected, rtol=1e-15, atol=0)


def _ppo_by_hand(rho: float, A: float, lo: float, hi: float) -> tuple[float, float, bool]:
    """Token loss -min(ρA, clip(ρ)A), its derivative in log ρ, and whether the clip is active."""
    rc = min(max(rho, 1 - lo), 1 + hi)
    if rc * A < rho * A:
        return -rc * A, 0.0, True
    return -rho * A, -rho * A, False


def test_clip_surrogate_outside_the_range():
    # ratios below, inside, between 1.2 and 1.28 (inside only for DAPO's clip-higher), above
    rhos = [0.7, 0.95, 1.25, 1.35]
    # by hand, A = +1, eps = (0.2, 0.2): 0.7 → -0.7 (unclipped branch is the min: gradient -0.7);
    # 0.95 → -0.95; 1.25 → -1.2 clipped; 1.35 → -1.2 clipped.  A = -1: 0.7 → +0.8 clipped;
    # 0.95 → 0.95; 1.25 → 1.25; 1.35 → 1.35 (the unclipped, larger loss, is kept)
    hand = {
        (1.0, 0.2): ([-0.7, -0.95, -1.2, -1.2], [-0.7, -0.95, 0, 0], [False, False, True, True]),
        (-1.0, 0.2): ([0.8, 0.95, 1.25, 1.35], [0, 0.95, 1.25, 1.35], [True, False, False, False]),
        (1.0, 0.28): ([-0.7, -0.95, -1.25, -1.28], [-0.7, -0.95, -1.25, 0], [False, False, False, True]),
        (-1.0, 0.28): ([0.8, 0.95, 1.25, 1.35], [0, 0.95, 1.25, 1.35], [True, False, False, False]),
    }
    logp_old = _t([[[-1.0, -2.0, -0.5, -1.5, -3.0]]])  # (B, G, T) = (1, 1, 5), last token padding
    mask = torch.tensor([[[True, True, True, True, False]]])
    for (A, hi), (values, grads, flags) in hand.items():
        for scale in (1.0, 2.5):  # the loss and gradient scale with |A|
            a = A * scale
            logp = (logp_old + torch.log(_t(rhos + [1.0]))).requires_grad_(True)
            loss, clipped = SURROGATES["clip"](logp, logp_old, _t([[a]]), mask, eps_low=0.2, eps_high=hi)
            grad = torch.autograd.grad((loss * mask).sum(), logp)[0]
            loss = loss.detach()
            torch.testing.assert_close(loss[0, 0, :4], scale * _t(values), rtol=1e-14, atol=1e-15)
            torch.testing.assert_close(grad[0, 0, :4], scale * _t(grads), rtol=1e-14, atol=1e-15)
            assert clipped[0, 0].tolist() == flags + [False]  # padding is never counted
            for j, rho in enumerate(rhos):  # the generic rule agrees with the table
                v, g, f = _ppo_by_hand(rho, a, 0.2, hi)
                assert float(loss[0, 0, j]) == pytest.approx(v, rel=1e-14) and f == flags[j]
                assert float(grad[0, 0, j]) == pytest.approx(g, rel=1e-14, abs=1e-15)
    # pg never clips: its value and gradient are -ρA at every ratio
    logp = (logp_old + torch.log(_t(rhos + [1.0]))).requires_grad_(True)
    loss, clipped = SURROGATES["pg"](logp, logp_old, _t([[2.0]]), mask, eps_low=0.2, eps_high=0.2)
    grad = torch.autograd.grad((loss * mask).sum(), logp)[0]
    torch.testing.assert_close(loss[0, 0, :4], -2 * _t(rhos), rtol=1e-14, atol=0)
    torch.testing.assert_close(grad[0, 0, :4], -2 * _t(rhos), rtol=1e-14, atol=0)
    assert not bool(clipped.any())


def test_clip_fractions_split_by_the_sign_of_the_advantage():
    # one prompt, G = 2: rewards (1, 0) give GRPO advantages (+a, -a); ratios per token by hand:
    # response 0 (Â > 0): 1.3 (high clip), 1.0, 0.7 (no clip: the unclipped branch is the min), padding
    # response 1 (Â < 0): 0.7 (low clip), 1.3 (no clip), 1.0, 0.75 (low clip)
    logp_old = _t([[[-1.0, -2.0, -0.5, -1.5], [-0.3, -1.0, -2.0, -0.9]]])  # (B, G, T) = (1, 2, 4)
    rho = _t([[[1.3, 1.0, 0.7, 1.0], [0.7, 1.3, 1.0, 0.75]]])
    mask = torch.tensor([[[True, True, True, False], [True, True, True, True]]])
    _, metrics = policy_loss(PRESETS["grpo"], logp_old + rho.log(), logp_old, _t([[1.0, 0.0]]), mask)
    assert float(metrics["loss/clipfrac_high"]) == pytest.approx(1 / 7, rel=1e-12)  # 7 tokens count
    assert float(metrics["loss/clipfrac_low"]) == pytest.approx(2 / 7, rel=1e-12)
    assert float(metrics["loss/clipfrac"]) == pytest.approx(3 / 7, rel=1e-12)


def test_gspo_sequence_ratio_and_clip():
    logp_old = _t([[[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0]]])  # (1, 2, 3)
    mask = torch.tensor([[[True, True, False], [True, True, True]]])
    # sequence 0 (2 tokens): Δ = (0.01, 0.03) → s = exp(0.02); sequence 1 (3 tokens): Δ = (0.3, 0.3, 0.6)
    # → s = exp(0.4) ≈ 1.49, outside [1 - 3e-4, 1 + 4e-4]; padding's Δ = 5 must not count
    delta = _t([[[0.01, 0.03, 5.0], [0.3, 0.3, 0.6]]])
    s0, s1 = math.exp(0.02), math.exp(0.4)
    for A in (1.5, -1.5):
        logp = (logp_old + delta).requires_grad_(True)
        loss, clipped = SURROGATES["gspo"](logp, logp_old, _t([[A, A]]), mask, eps_low=3e-4, eps_high=4e-4)
        # A > 0: both ratios are above 1 + eps_high, both clipped at (1 + 4e-4)·A.
        # A < 0: -min(sA, clip(s)A) = |A|·max(s, clip(s)) = s|A|, unclipped, gradient -sA/|o| per token
        if A > 0:
            values, flags = [-(1 + 4e-4) * A] * 2, [True, True]
            grads = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
        else:
            values, flags = [-s0 * A, -s1 * A], [False, False]
            grads = [[-s0 * A / 2, -s0 * A / 2, 0.0], [-s1 * A / 3] * 3]
        torch.testing.assert_close(loss[0, :, 0], _t(values), rtol=1e-14, atol=0)
        assert bool((loss == loss[..., :1]).all())  # every token carries the sequence's value
        assert clipped[0].tolist() == [[flags[0], flags[0], False], [flags[1]] * 3]
        seq = ((loss * mask).sum(-1) / mask.sum(-1)).sum()
        torch.testing.assert_close(torch.autograd.grad(seq, logp)[0][0], _t(grads), rtol=1e-14, atol=1e-15)


# --- aggregations ------------------------------------------------------------------------------------------


def _agg_loop(name, loss, mask, weights, norm):
    """One run: loss, mask (B, G, T), weights (B,)."""
    B, G, T = loss.shape
    if name == "token-mean":
        num = sum(float(weights[b]) * float(loss[b, g, t]) for b in range(B) for g in range(G) for t in range(T) if mask[b, g, t])
        den = sum(float(weights[b]) for b in range(B) for g in range(G) for t in range(T) if mask[b, g, t])
        return num / den
    total = 0.0
    for b in range(B):
        per_seq = []
        for g in range(G):
            toks = [float(loss[b, g, t]) for t in range(T) if mask[b, g, t]]
            if name == "seq-mean-token-mean":
                per_seq.append(sum(toks) / len(toks))
            elif name == "seq-mean-token-sum":
                per_seq.append(sum(toks))
            else:
                per_seq.append(sum(toks) / (T if norm is None else norm))
        total += float(weights[b]) * sum(per_seq) / G
    return total


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
@pytest.mark.parametrize("shape", [(1, 3, 4), (3, 2, 5), (2, 4, 1)])
def test_aggregations_equal_plain_loops(name, shape):
    gen = _gen(hash((name, shape)) % 1000)
    R = 2
    B, G, T = shape
    loss = torch.randn(R, B, G, T, generator=gen, dtype=F64)
    lengths = torch.randint(1, T + 1, (R, B, G), generator=gen)
    mask = torch.arange(T) < lengths.unsqueeze(-1)
    loss = torch.where(mask, loss, 1e3)  # padding must not count
    weights = torch.rand(R, B, generator=gen, dtype=F64) + 0.1
    weights = weights / weights.sum(-1, keepdim=True)
    for norm in (None, 2.5):
        got = AGGREGATIONS[name](loss, mask, weights, norm=norm)
        assert got.shape == (R,)
        for r in range(R):
            assert float(got[r]) == pytest.approx(_agg_loop(name, loss[r], mask[r], weights[r], norm), rel=1e-13)


def test_aggregations_by_hand():
    loss = _t([[[[1.0, 2.0, 9.0], [4.0, 9.0, 9.0]], [[3.0, 3.0, 3.0], [6.0, 9.0, 9.0]]]])  # (1, B=2, G=2, T=3)
    mask = torch.tensor([[[[True, True, False], [True, False, False]], [[True, True, True], [True, False, False]]]])
    w = _t([[0.25, 0.75]])
    # prompt 0: sequences (1, 2) and (4); prompt 1: (3, 3, 3) and (6)
    assert float(AGGREGATIONS["seq-mean-token-mean"](loss, mask, w)[0]) == pytest.approx(0.25 * (1.5 + 4) / 2 + 0.75 * (3 + 6) / 2)
    assert float(AGGREGATIONS["seq-mean-token-sum"](loss, mask, w)[0]) == pytest.approx(0.25 * (3 + 4) / 2 + 0.75 * (9 + 6) / 2)
    assert float(AGGREGATIONS["seq-mean-token-sum-norm"](loss, mask, w)[0]) == pytest.approx((0.25 * 3.5 + 0.75 * 7.5) / 3)
    assert float(AGGREGATIONS["seq-mean-token-sum-norm"](loss, mask, w, norm=10.0)[0]) == pytest.approx((0.25 * 3.5 + 0.75 * 7.5) / 10)
    assert float(AGGREGATIONS["token-mean"](loss, mask, w)[0]) == pytest.approx((0.25 * 7 + 0.75 * 15) / (0.25 * 3 + 0.75 * 4))


# --- presets: lookup -----------------------------------------------------------------------------------------


def test_presets_table_and_overrides():
    assert set(PRESETS) == {"reinforce", "rloo", "grpo", "dr-grpo", "dapo", "gspo", "dapo-lowprob", "dapo-dominate", "dapo-ppl"}
    dapo = get_preset("dapo")
    assert (dapo.advantage, dapo.surrogate, dapo.aggregation, dapo.eps_low, dapo.eps_high, dapo.dynamic_sampling) == \
        ("mean-std", "clip", "token-mean", 0.2, 0.28, True)
    g = get_preset("grpo", epochs=4, eps_high=0.3)
    assert (g.epochs, g.eps_high, g.eps_low) == (4, 0.3, 0.2) and PRESETS["grpo"].epochs == 1
    with pytest.raises(ValueError, match="^preset: got 'ppo'; allowed: dapo, dapo-dominate, dapo-lowprob, dapo-ppl, dr-grpo, grpo, gspo, reinforce, rloo$"):
        get_preset("ppo")
    with pytest.raises(ValueError, match="^preset 'grpo' option: got 'beta'"):
        get_preset("grpo", beta=0.1)
    with pytest.raises(ValueError, match="^epochs: got 0"):
        get_preset("grpo", epochs=0)
    with pytest.raises(ValueError, match="^norm: got -1"):
        get_preset("dr-grpo", norm=-1.0)
    with pytest.raises(ValueError, match="^eps_low/eps_high: "):
        get_preset("grpo", eps_low=1.0)
    with pytest.raises(ValueError, match="^aggregation: got 'sum'"):
        get_preset("grpo", aggregation="sum")


# --- presets on sampled batches: the gradient at θ = θ_old against plain loops -------------------------------------


def _setup(R: int = 2, seed: int = 0):
    """TokenSoftmax(3, 3, eos=0) (15 responses of lengths 1-3) shared by 3 prompts: two random 0/1
    rewards and one prompt nothing solves (its group is always all-wrong)."""
    gen = _gen(seed)
    policy = TokenSoftmax(3, 3, eos=0)
    N = policy.n_responses
    reward = torch.zeros(3, N, dtype=F64)
    reward[:2] = (torch.rand(2, N, generator=gen) < 0.4).to(F64)
    reward[0, 0], reward[0, 1], reward[1, 0], reward[1, 1] = 1.0, 0.0, 0.0, 1.0  # 0 < J < 1
    theta = policy.init(R, scale=1.0, generator=gen)
    weights = _t([0.2, 0.3, 0.5]).expand(R, 3).clone()
    return policy, Enumerated(policy, reward), theta, weights


def _score(policy, theta_r: torch.Tensor, o: int) -> torch.Tensor:
    """∇_θ log π(o) of one run by autograd."""
    t = theta_r.detach().clone().requires_grad_(True)
    return torch.autograd.grad(policy.logp(t.unsqueeze(0))[0, 0, o], t)[0]


def _loop_update(name, policy, model, theta, batch: Batch, weights, **overrides):
    """A preset's update -∇loss at θ = θ_old, as explicit loops over runs, prompts and samples."""
    pre = get_preset(name, **overrides)
    R, C, G = batch.reward.shape
    T = batch.mask.shape[-1]
    lengths = policy.lengths().tolist()
    J = model.masses(theta)[0].exp()
    out, flat_count = torch.zeros_like(theta), []
    for r in range(R):
        adv, idx, flat = [], [], 0
        for c in range(C):
            rew = batch.reward[r, c].tolist()
            mean = sum(rew) / G
            std = math.sqrt(sum((x - mean) ** 2 for x in rew) / (G - 1))
            if pre.advantage == "exact":
                A = [x - float(J[r, c]) for x in rew]
            elif pre.advantage == "loo":
                A = [x - (sum(rew) - x) / (G - 1) for x in rew]
            elif pre.advantage == "mean":
                A = [x - mean for x in rew]
            else:
                A = [(x - mean) / (std + EPS) for x in rew]
            adv.append(A)
            idx.append(batch.index[r, c].tolist())
            flat += len(set(rew)) == 1
        flat_count.append(flat)
        w = weights[r].tolist()
        if pre.dynamic_sampling:  # drop the all-equal groups, renormalize over the rest
            w = [wc if len(set(batch.reward[r, c].tolist())) > 1 else 0.0 for c, wc in enumerate(w)]
            w = [wc / sum(w) for wc in w] if sum(w) > 0 else w
        total = torch.zeros(theta.shape[1], dtype=F64)
        for c in range(C):
            for i, o in enumerate(idx[c]):
                if pre.aggregation == "seq-mean-token-sum":
                    n = 1.0 / G
                elif pre.aggregation == "seq-mean-token-mean":
                    n = 1.0 / (G * lengths[o])
                elif pre.aggregation == "seq-mean-token-sum-norm":
                    n = 1.0 / (G * (pre.norm or T))
                else:
                    n = 1.0
                total += w[c] * adv[c][i] * n * _score(policy, theta[r], o)
        if pre.aggregation == "token-mean":  # every token of the kept groups counts the same
            total /= sum(w[c] * lengths[o] for c in range(C) for o in idx[c])
        out[r] = total
    return out, flat_count


UNWEIGHTED = sorted(n for n, p in PRESETS.items() if p.weighting == "none")  # weighted ones: tests/test_updates_weighting.py


@pytest.mark.parametrize("name", UNWEIGHTED)
def test_preset_gradient_at_theta_old_equals_plain_loop(name):
    policy, model, theta, weights = _setup()
    G = 4
    batch = model.sample(theta, G, _gen(11))
    R, C = theta.shape[0], model.n_prompts
    assert batch.tokens.shape == batch.mask.shape == (R, C, G, 3) and batch.reward.shape == (R, C, G)
    J = model.masses(theta)[0].exp()
    t = theta.clone().requires_grad_(True)
    logp_old = model.token_logp(theta, batch).detach()
    loss, metrics = policy_loss(PRESETS[name], model.token_logp(t, batch), logp_old, batch.reward, batch.mask,
                                weights=weights, J=J)
    assert loss.shape == (R,)
    grad = torch.autograd.grad(loss.sum(), t)[0]
    ref, flat = _loop_update(name, policy, model, theta, batch, weights)
    assert bool((ref.norm(dim=-1) > 1e-3).all())
    torch.testing.assert_close(-grad, ref, rtol=1e-12, atol=1e-14)
    # metrics: no clip at θ_old; the fraction of all-equal groups (prompt 2 always is one); mean |A|
    assert torch.equal(metrics["loss/clipfrac"], torch.zeros(R, dtype=F64))
    assert metrics["loss/zero_variance_groups"].tolist() == [f / C for f in flat]
    assert min(flat) >= 1
    adv = {"exact": lambda r: r - J.unsqueeze(-1)}.get(PRESETS[name].advantage, lambda r: ADVANTAGES[PRESETS[name].advantage](r))
    torch.testing.assert_close(metrics["loss/abs_advantage"], adv(batch.reward).abs().mean((-1, -2)), rtol=1e-14, atol=0)
    torch.testing.assert_close(metrics["loss/advantage_std"], adv(batch.reward).flatten(-2).std(-1), rtol=1e-12, atol=0)
    # the sampled "preset" direction draws the same batch from the same generator and returns -∇loss
    ctx = StepContext(0, 1, theta, model, weights, policy.constants(), _gen(11))
    d = make_direction("preset", preset=name, G=G)(ctx)
    assert torch.equal(d.samples.index, batch.index) and torch.equal(d.samples.reward, batch.reward)
    torch.testing.assert_close(d.w, ref, rtol=1e-12, atol=1e-14)


def test_preset_overrides_reach_the_update():
    policy, model, theta, weights = _setup()
    batch = model.sample(theta, 5, _gen(12))
    for name, overrides in (("dr-grpo", {"norm": 7.0}), ("grpo", {"dynamic_sampling": True}),
                            ("rloo", {"aggregation": "seq-mean-token-mean"})):
        ctx = StepContext(0, 1, theta, model, weights, policy.constants(), _gen(12))
        d = make_direction("preset", preset=name, G=5, **overrides)(ctx)
        ref, _ = _loop_update(name, policy, model, theta, batch, weights, **overrides)
        torch.testing.assert_close(d.w, ref, rtol=1e-12, atol=1e-14)
        plain, _ = _loop_update(name, policy, model, theta, batch, weights)
        assert float((plain - ref).norm()) > 1e-3  # the override changed something


def test_dynamic_sampling_with_every_group_flat_gives_zero():
    policy, model, theta, weights = _setup()
    batch = model.sample(theta, 3, _gen(13))
    reward = torch.zeros_like(batch.reward)  # every group all-wrong
    t = theta.clone().requires_grad_(True)
    loss, metrics = policy_loss(PRESETS["dapo"], model.token_logp(t, batch), model.token_logp(theta, batch).detach(),
                                reward, batch.mask, weights=weights)
    assert torch.equal(loss.detach(), torch.zeros(2, dtype=F64))
    assert torch.equal(torch.autograd.grad(loss.sum(), t)[0], torch.zeros_like(theta))
    assert metrics["loss/zero_variance_groups"].tolist() == [1.0, 1.0]


# --- "expected": the G -> ∞ update, exactly ------------------------------------------------------------------


def _expected_loop(policy, reward, theta, weights, *, advantage="mean-std", per_token="mean", norm=None, keep=None):
    """Σ_c w_c Σ_o π(o) a(o) n(o) ∇log π(o) (then / Σ_c w_c E_c|o| for per_token = "batch").
    a = (r - J)/σ or r - J (or r for advantage "none"); n = 1/|o|, 1, or 1/norm. Plain loops."""
    lengths = policy.lengths().tolist()
    R, N, C = theta.shape[0], policy.n_responses, reward.shape[0]
    out = torch.zeros_like(theta)
    for r in range(R):
        p = policy.logp(theta[r:r + 1])[0, 0].exp().tolist()
        scores = [_score(policy, theta[r], o) for o in range(N)]
        w = weights[r].tolist() if keep is None else [wc * k for wc, k in zip(weights[r].tolist(), keep)]
        w = [wc / sum(w) for wc in w]
        den = 0.0
        for c in range(C):
            rc = reward[c].tolist()
            J = sum(pi * x for pi, x in zip(p, rc))
            sigma = math.sqrt(J * (1 - J))
            den += w[c] * sum(pi * L for pi, L in zip(p, lengths))
            for o in range(N):
                a = rc[o] if advantage == "none" else rc[o] - J
                if advantage == "mean-std":
                    a = a / sigma if sigma > 0 else 0.0
                n = 1 / lengths[o] if per_token == "mean" else 1 / norm if per_token == "norm" else 1.0
                out[r] += w[c] * p[o] * a * n * scores[o]
        if per_token == "batch":
            out[r] /= den
    return out


def test_expected_grpo_is_eq5_and_the_others_their_closed_forms():
    policy, model, theta, weights = _setup()
    model = Enumerated(policy, model.reward[:2])  # two prompts with 0 < J < 1
    weights = _t([0.4, 0.6]).expand(2, 2).clone()
    reward = model.reward
    ctx = StepContext(0, 1, theta, model, weights, policy.constants())
    exp = {name: make_direction("expected", preset=name)(ctx).w for name in UNWEIGHTED}
    grad_J = model.grad_J(theta, weights)
    eq5 = _expected_loop(policy, reward, theta, weights, advantage="mean-std", per_token="mean")
    assert bool((eq5.norm(dim=-1) > 1e-3).all())
    torch.testing.assert_close(exp["grpo"], eq5, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(exp["gspo"], eq5, rtol=1e-12, atol=1e-14)  # same gradient at θ = θ_old
    torch.testing.assert_close(exp["dapo"], _expected_loop(policy, reward, theta, weights, advantage="mean-std", per_token="batch"),
                               rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(exp["reinforce"], grad_J, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(exp["rloo"], grad_J, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(exp["dr-grpo"], grad_J / 3, rtol=1e-12, atol=1e-14)  # norm = T = 3
    dr = make_direction("expected", preset="dr-grpo", norm=2.0)(ctx).w
    torch.testing.assert_close(dr, grad_J / 2, rtol=1e-12, atol=1e-14)
    # the exact baseline and the plain-loop formula of ∇J agree (E[(r - J)∇log π] = ∇J)
    torch.testing.assert_close(grad_J, _expected_loop(policy, reward, theta, weights, advantage="exact", per_token="sum"),
                               rtol=1e-12, atol=1e-14)


def test_expected_without_a_baseline_and_with_a_prompt_nobody_solves():
    """Regressions: advantage "none" keeps a = r (E[n(o)∇log π] ≠ 0 when n depends on |o|), and
    dynamic sampling drops a prompt with J = 0 (its groups are always all-wrong) from the weights."""
    policy, model, theta, weights = _setup()  # prompt 2 has J = 0
    reward = model.reward
    ctx = StepContext(0, 1, theta, model, weights, policy.constants())
    none = make_direction("expected", preset="reinforce", advantage="none", aggregation="seq-mean-token-mean")(ctx).w
    torch.testing.assert_close(none, _expected_loop(policy, reward, theta, weights, advantage="none", per_token="mean"),
                               rtol=1e-12, atol=1e-14)
    live = [1.0, 1.0, 0.0]
    dapo = make_direction("expected", preset="dapo")(ctx).w
    torch.testing.assert_close(dapo, _expected_loop(policy, reward, theta, weights, per_token="batch", keep=live),
                               rtol=1e-12, atol=1e-14)
    grpo_ds = make_direction("expected", preset="grpo", dynamic_sampling=True)(ctx).w
    torch.testing.assert_close(grpo_ds, _expected_loop(policy, reward, theta, weights, per_token="mean", keep=live),
                               rtol=1e-12, atol=1e-14)
    grpo = make_direction("expected", preset="grpo")(ctx).w  # without dynamic sampling prompt 2 keeps its weight
    torch.testing.assert_close(grpo, grpo_ds * 0.5, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["reinforce", "rloo"])
def test_sampled_preset_is_unbiased_for_expected(name):
    copies, G = 4000, 3
    policy, model, theta, _ = _setup(R=1)
    model = Enumerated(policy, model.reward[:2])
    theta = theta.expand(copies, -1).clone()
    weights = _t([0.3, 0.7]).expand(copies, 2).clone()
    ctx = StepContext(0, 1, theta, model, weights, policy.constants(), _gen(21))
    d = make_direction("preset", preset=name, G=G)(ctx)
    exp = make_direction("expected", preset=name)(ctx).w[0]
    mean, se = d.w.mean(0), d.w.std(0) / math.sqrt(copies)
    assert float(exp.norm()) > 1e-2
    assert float(((mean - exp) / se).abs().max()) < 4.5


def test_sampled_dapo_converges_to_expected_with_a_dead_prompt():
    """With the exact baseline (no std bias) and large G, DAPO's token mean over the kept groups
    tends to the expected update, which leaves the J = 0 prompt's tokens out of the normalizer."""
    copies, G = 1000, 32
    policy, model, theta, _ = _setup(R=1)
    theta = theta.expand(copies, -1).clone()
    weights = _t([0.25, 0.25, 0.5]).expand(copies, 3).clone()
    ctx = StepContext(0, 1, theta, model, weights, policy.constants(), _gen(22))
    d = make_direction("preset", preset="dapo", advantage="exact", G=G)(ctx)
    exp = make_direction("expected", preset="dapo", advantage="exact")(ctx).w[0]
    mean, se = d.w.mean(0), d.w.std(0) / math.sqrt(copies)
    assert float(((mean - exp) / se).abs().max()) < 4.5
    assert float(((mean - exp / 2) / se).abs().max()) > 10  # the old normalizer (all prompts' tokens) is resolved away


# --- epochs > 1 --------------------------------------------------------------------------------------------------


def _grpo_loss_loop(model, theta_t, batch, logp_old, weights, eps=0.2):
    """GRPO's clipped loss (eq. 23, β = 0) token by token: -Σ_c w_c (1/G) Σ_i (1/|o_i|) Σ_t min(ρA, clip(ρ)A)."""
    logp = model.token_logp(theta_t, batch)
    R, C, G, T = logp.shape
    total = []
    for r in range(R):
        acc = 0.0
        for c in range(C):
            rew = batch.reward[r, c].tolist()
            mean = sum(rew) / G
            std = math.sqrt(sum((x - mean) ** 2 for x in rew) / (G - 1))
            for i in range(G):
                A = (rew[i] - mean) / (std + EPS)
                L = int(batch.mask[r, c, i].sum())
                for t in range(L):
                    rho = torch.exp(logp[r, c, i, t] - logp_old[r, c, i, t])
                    acc = acc - float(weights[r, c]) / (G * L) * torch.minimum(rho * A, rho.clamp(1 - eps, 1 + eps) * A)
        total.append(acc)
    return torch.stack(total)


def test_epochs_take_plain_sgd_steps_on_one_batch():
    policy, model, theta, weights = _setup()
    G, lr, epochs = 4, 2.0, 3
    ctx = StepContext(0, 1, theta, model, weights, policy.constants(), _gen(31))
    d = make_direction("preset", preset="grpo", G=G, epochs=epochs, lr=lr)(ctx)
    batch = model.sample(theta, G, _gen(31))
    assert torch.equal(d.samples.index, batch.index)
    logp_old = model.token_logp(theta, batch).detach()
    th = theta.clone()
    for _ in range(epochs):
        t = th.clone().requires_grad_(True)
        th = th - lr * torch.autograd.grad(_grpo_loss_loop(model, t, batch, logp_old, weights).sum(), t)[0]
    torch.testing.assert_close(theta + lr * d.w, th, rtol=1e-12, atol=1e-12)
    one = make_direction("preset", preset="grpo", G=G)(StepContext(0, 1, theta, model, weights, policy.constants(), _gen(31)))
    assert float((d.w - one.w).norm()) > 1e-3  # several steps are not one step scaled
    # the other presets: the same loop through policy_loss
    for name in ("dapo", "gspo", "rloo"):
        ctx = StepContext(0, 1, theta, model, weights, policy.constants(), _gen(32))
        d = make_direction("preset", preset=name, G=G, epochs=2, lr=0.7)(ctx)
        th = theta.clone()
        for _ in range(2):
            t = th.clone().requires_grad_(True)
            loss, _ = policy_loss(PRESETS[name], model.token_logp(t, d.samples), model.token_logp(theta, d.samples).detach(),
                                  d.samples.reward, d.samples.mask, weights=weights)
            th = th - 0.7 * torch.autograd.grad(loss.sum(), t)[0]
        torch.testing.assert_close(theta + 0.7 * d.w, th, rtol=1e-12, atol=1e-12)


def test_clip_fraction_is_positive_after_large_inner_steps():
    policy, model, theta, weights = _setup()
    for seed in (41, 42):
        ctx = StepContext(0, 1, theta, model, weights, policy.constants(), _gen(seed))
        one = make_direction("preset", preset="grpo", G=6)(ctx)
        assert torch.equal(one.metrics["loss/clipfrac"], torch.zeros(2, dtype=F64))
        ctx = StepContext(0, 1, theta, model, weights, policy.constants(), _gen(seed))
        many = make_direction("preset", preset="grpo", G=6, epochs=4, lr=5.0)(ctx)
        frac = many.metrics["loss/clipfrac"]
        assert bool((frac > 0).all()) and bool((frac <= 1).all())
        # by hand: the fraction of real tokens whose clip is active at the last inner step's θ
        # (θ_3, where the metrics were computed)
        batch, th = many.samples, theta.clone()
        logp_old = model.token_logp(theta, batch).detach()
        for _ in range(3):
            t = th.clone().requires_grad_(True)
            loss, _ = policy_loss(PRESETS["grpo"], model.token_logp(t, batch), logp_old, batch.reward, batch.mask, weights=weights)
            th = th - 5.0 * torch.autograd.grad(loss.sum(), t)[0]
        rho = torch.exp(model.token_logp(th, batch) - logp_old)
        A = ADVANTAGES["mean-std"](batch.reward).unsqueeze(-1)
        active = ((A > 0) & (rho > 1.2)) | ((A < 0) & (rho < 0.8))
        expected = (active & batch.mask).sum((-1, -2, -3)).to(F64) / batch.mask.sum((-1, -2, -3))
        torch.testing.assert_close(frac, expected, rtol=1e-14, atol=0)


def test_preset_direction_checks_its_options():
    policy, model, theta, weights = _setup()
    ctx = StepContext(0, 1, theta, model, weights, policy.constants(), _gen(0))
    with pytest.raises(ValueError, match="^lr: got None"):
        make_direction("preset", preset="grpo", G=4, epochs=2)(ctx)
    with pytest.raises(ValueError, match="^G: got 1"):
        make_direction("preset", preset="grpo", G=1)(ctx)
    with pytest.raises(ValueError, match="^preset: got 'trpo'"):
        make_direction("preset", preset="trpo", G=4)(ctx)
    with pytest.raises(ValueError, match="^direction 'preset': got 'no value for preset, G'"):
        make_direction("preset")


# --- per-token log π of sampled responses ----------------------------------------------------------------------


@pytest.mark.parametrize("param", ["position", "prefix", "linear"])
@pytest.mark.parametrize("eos", [None, 0])
def test_token_logp_of_sampled_responses(param, eos):
    V, T = 3, 3
    feats = torch.randn(V, 2, generator=_gen(51), dtype=F64) if param == "linear" else None
    policy = TokenSoftmax(V, T, eos=eos, parametrization=param, features=feats)
    theta = policy.init(2, scale=1.0, generator=_gen(52))
    index = torch.randint(0, policy.n_responses, (2, 2, 6), generator=_gen(53))  # (R, C, G), two prompts sharing π
    tokens, mask = policy.response_tokens(index)
    tok_logp = policy.token_logp(theta, index)
    assert tokens.shape == mask.shape == tok_logp.shape == (2, 2, 6, T)
    for r in range(2):
        for c in range(2):
            for g in range(6):
                o = int(index[r, c, g])
                seq = policy.decode(o)
                assert tokens[r, c, g, :len(seq)].tolist() == list(seq) and mask[r, c, g].tolist() == [t < len(seq) for t in range(T)]
                assert bool((tok_logp[r, c, g, len(seq):] == 0).all())  # padding carries nothing
                for t, v in enumerate(seq):
                    if param == "position":
                        logits = theta[r].view(T, V)[t]
                    elif param == "linear":
                        logits = feats @ theta[r]
                    else:
                        continue
                    assert float(tok_logp[r, c, g, t]) == pytest.approx(float(torch.log_softmax(logits, -1)[v]), rel=1e-13)
    torch.testing.assert_close(tok_logp.sum(-1), policy.logp(theta)[:, 0].gather(-1, index.view(2, -1)).view(2, 2, 6),
                               rtol=1e-13, atol=1e-14)
    # differentiable in theta: the gradient of one token's log π is e_v - π at its context
    t = theta.clone().requires_grad_(True)
    grad = torch.autograd.grad(policy.token_logp(t, index)[0, 0, 0].sum(), t)[0]
    torch.testing.assert_close(grad[0], _score(policy, theta[0], int(index[0, 0, 0])), rtol=1e-12, atol=1e-14)
    assert bool((grad[1] == 0).all())


def test_trajectory_level_responses_are_one_token():
    from rlvrlab.policies import FeatureSoftmax

    policy = FeatureSoftmax(torch.randn(2, 5, 3, generator=_gen(54), dtype=F64))  # C = 2 prompts, N = 5
    theta = policy.init(3, scale=1.0, generator=_gen(55))
    index = policy.sample(theta, 4, _gen(56))  # (R, C, G)
    tokens, mask = policy.response_tokens(index)
    assert torch.equal(tokens, index.unsqueeze(-1)) and bool(mask.all()) and mask.shape == (3, 2, 4, 1)
    torch.testing.assert_close(policy.token_logp(theta, index)[..., 0], policy.logp(theta).gather(-1, index), rtol=0, atol=0)
    model = Enumerated(policy, torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]], dtype=F64))
    batch = model.sample(theta, 4, _gen(56))
    assert torch.equal(batch.index, index)  # the model draws through the policy
    assert torch.equal(batch.reward, model.reward.expand(3, 2, 5).gather(-1, index))
