"""rlvrlab.updates.weighting and the weighted presets: each weighting against a plain loop over
(g, t) on random ragged batches of several shapes; "none" and α = 0 against the unweighted
presets bit for bit (and the surrogates against a frozen copy of their code before token-level
advantages); the gradient of "dapo-lowprob" at θ = θ_old against the hand-written surrogate
-Σ w_t Â log π / tokens with a tensor of logits as parameters; the loss at θ ≠ θ_old against a
loop; bad settings against their messages.

Every tensor is created as float64 explicitly (the default dtype stays float32, as users have it).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlvrlab.policies import TokenSoftmax
from rlvrlab.policies.model import Enumerated
from rlvrlab.updates import (
    AGGREGATIONS,
    PRESETS,
    SURROGATES,
    WEIGHTINGS,
    StepContext,
    get_preset,
    make_direction,
    policy_loss,
)
from rlvrlab.updates.advantages import ADVANTAGES

F64 = torch.float64
EPS = 1e-4  # std_eps of the presets
BASE = ("reinforce", "rloo", "grpo", "dr-grpo", "dapo", "gspo")  # the presets from before weighting
WEIGHTED = ("dapo-lowprob", "dapo-dominate", "dapo-ppl")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ragged(lead: tuple[int, ...], G: int, T: int, seed: int, *, pad=0.0):
    """adv (*lead, G), logp_old and mask (*lead, G, T) with random lengths 1..T (one response empty
    when there is room); padding holds ``pad``."""
    gen = _gen(seed)
    lengths = torch.randint(1, T + 1, (*lead, G), generator=gen)
    lengths.view(-1)[-1] = T
    if lengths.numel() > 2:
        lengths.view(-1)[1] = 0
    mask = torch.arange(T) < lengths.unsqueeze(-1)
    logp_old = torch.log(0.02 + 0.98 * torch.rand(*lead, G, T, generator=gen, dtype=F64))
    logp_old = torch.where(mask, logp_old, torch.full_like(logp_old, pad))
    adv = torch.randn(*lead, G, generator=gen, dtype=F64)
    return adv, logp_old, mask


def _loop(name: str, adv, logp_old, mask, alpha: float) -> torch.Tensor:
    """Ã_{g,t} = w_{g,t}·Â_g with plain Python floats, one group (leading index) at a time."""
    G, T = logp_old.shape[-2:]
    out = torch.empty(logp_old.shape, dtype=F64)
    for idx in itertools.product(*(range(n) for n in adv.shape[:-1])):
        A, lp, mk = adv[idx].tolist(), logp_old[idx].tolist(), mask[idx].tolist()
        if name == "perplexity":
            L = []
            for g in range(G):
                toks = [lp[g][t] for t in range(T) if mk[g][t]]
                L.append(-sum(toks) / len(toks) if toks else 0.0)
            mean = sum(L) / G
            std = math.sqrt(sum((x - mean) ** 2 for x in L) / (G - 1))  # Bessel
            seq_w = [min(max(1 - alpha * ((x - mean) / std if std > 0 else 0.0), 0.8), 1.2) for x in L]
        for g in range(G):
            for t in range(T):
                p = math.exp(lp[g][t])
                if name == "none" or not mk[g][t]:
                    w = 1.0
                elif name == "low-prob":
                    w = 1 + alpha * (1 - p)
                elif name == "dominate":
                    w = alpha * p + (1 - alpha)
                else:
                    w = seq_w[g]
                out[idx + (g, t)] = w * A[g]
    return out


SHAPES = [((), 5, 6), ((3,), 4, 5), ((2, 3), 4, 7)]  # (leading, G, T); the last has a run dimension R = 2


@pytest.mark.parametrize("lead, G, T", SHAPES)
@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
@pytest.mark.parametrize("alpha", [0.2, 0.9])
def test_weighting_against_plain_loop(name, lead, G, T, alpha):
    adv, logp_old, mask = _ragged(lead, G, T, seed=len(lead) + 10 * G, pad=-math.inf)  # -inf padding must not leak
    out = WEIGHTINGS[name](adv, logp_old, mask, alpha=alpha)
    assert out.shape == (*lead, G, T) and out.dtype == F64
    torch.testing.assert_close(out, _loop(name, adv, logp_old, mask, alpha), rtol=1e-12, atol=1e-14)
    w = (out / adv.unsqueeze(-1))[mask]  # the weights on the real tokens
    lo, hi = {"none": (1, 1), "low-prob": (1, 1 + alpha), "dominate": (1 - alpha, 1), "perplexity": (0.8, 1.2)}[name]
    assert bool(((w >= lo - 1e-12) & (w <= hi + 1e-12)).all())
    if name == "perplexity" and alpha == 0.9 and G * T > 20:  # both ends of the clamp are reached
        assert bool((w - 0.8).abs().min() < 1e-12) and bool((w - 1.2).abs().min() < 1e-12)


def test_perplexity_group_with_equal_log_ppl_gets_weight_one():
    adv, logp_old, mask = _ragged((2,), 4, 5, seed=3)
    mask[0] = True
    logp_old[0] = logp_old[0, :1]  # group 0: four identical full-length responses, std = 0
    out = WEIGHTINGS["perplexity"](adv, logp_old, mask, alpha=0.5)
    assert torch.equal(out[0], adv[0].unsqueeze(-1).expand(4, 5))  # z = 0 exactly, not 0/0
    torch.testing.assert_close(out[1], _loop("perplexity", adv[1], logp_old[1], mask[1], 0.5), rtol=1e-12, atol=1e-14)


def test_weights_carry_no_gradient():
    adv, logp_old, mask = _ragged((2,), 3, 4, seed=4)
    logp_old.requires_grad_(True)
    for name, fn in WEIGHTINGS.items():
        assert not fn(adv, logp_old, mask, alpha=0.3).requires_grad, name
    a = adv.clone().requires_grad_(True)  # gradient through Â only: dÃ/dÂ = w
    out = WEIGHTINGS["low-prob"](a, logp_old, mask, alpha=0.3)
    (g,) = torch.autograd.grad(out.sum(), a)
    w = torch.where(mask, 1 + 0.3 * (1 - logp_old.detach().exp()), torch.ones_like(logp_old))
    torch.testing.assert_close(g, w.sum(-1), rtol=1e-14, atol=0)


# --- "none", α = 0 and the surrogates: bit for bit ---------------------------------------------------------------


def _old_pg(logp, logp_old, adv, mask, *, eps_low, eps_high):  # surrogates.pg before token-level advantages
    ratio = torch.exp(logp - logp_old)
    return -ratio * adv.unsqueeze(-1), torch.zeros_like(mask)


def _old_clip(logp, logp_old, adv, mask, *, eps_low, eps_high):  # surrogates.clip before token-level advantages
    ratio = torch.exp(logp - logp_old)
    a = adv.unsqueeze(-1)
    unclipped, clipped = ratio * a, ratio.clamp(1 - eps_low, 1 + eps_high) * a
    return -torch.minimum(unclipped, clipped), (clipped < unclipped) & mask


def _moved(lead, G, T, seed):
    """logp_old, a logp 0.3 nats away per token (ratios well outside the clip range), mask, rewards."""
    adv, logp_old, mask = _ragged(lead, G, T, seed)
    gen = _gen(seed + 1)
    logp = logp_old + 0.3 * torch.randn(logp_old.shape, generator=gen, dtype=F64)
    reward = (torch.rand(adv.shape, generator=gen, dtype=F64) < 0.5).to(F64)
    reward[..., 0], reward[..., 1] = 1.0, 0.0
    return adv, logp_old, logp, mask, reward


@pytest.mark.parametrize("lead, G, T", SHAPES)
def test_surrogates_take_token_advantages_and_match_their_old_code(lead, G, T):
    adv, logp_old, logp, mask, _ = _moved(lead, G, T, seed=5)
    for name, old in (("pg", _old_pg), ("clip", _old_clip)):
        ref = old(logp, logp_old, adv, mask, eps_low=0.2, eps_high=0.28)
        assert bool(ref[1].any()) or name == "pg"  # the clip acts somewhere
        for a in (adv, WEIGHTINGS["none"](adv, logp_old, mask)):
            loss, clipped = SURROGATES[name](logp, logp_old, a, mask, eps_low=0.2, eps_high=0.28)
            assert torch.equal(loss, ref[0]) and torch.equal(clipped, ref[1]), name


def _old_policy_loss(preset, logp, logp_old, reward, mask):
    """policy_loss as it was before weighting (uniform prompt weights, no J), with the frozen surrogates."""
    B = reward.shape[-2]
    weights = torch.full(reward.shape[:-1], 1.0 / B, dtype=logp.dtype)
    adv = ADVANTAGES[preset.advantage](reward, eps=preset.std_eps)
    flat = (reward == reward[..., :1]).all(-1)
    if preset.dynamic_sampling:
        weights = weights * ~flat
        total = weights.sum(-1, keepdim=True)
        weights = torch.where(total > 0, weights / total.clamp(min=1e-300), torch.zeros_like(weights))
    surrogate = {"pg": _old_pg, "clip": _old_clip, "gspo": SURROGATES["gspo"]}[preset.surrogate]
    loss_t, _ = surrogate(logp, logp_old, adv, mask, eps_low=preset.eps_low, eps_high=preset.eps_high)
    return AGGREGATIONS[preset.aggregation](loss_t, mask, weights, norm=preset.norm)


@pytest.mark.parametrize("name", [n for n in BASE if n != "reinforce"])  # reinforce needs the exact J
def test_none_reproduces_the_presets_before_weighting(name):
    _, logp_old, logp, mask, reward = _moved((2, 3), 4, 6, seed=6)
    reward[0, 2] = 1.0  # one flat group (dropped by dynamic sampling)
    assert PRESETS[name].weighting == "none" and PRESETS[name].alpha == 0.0
    loss, metrics = policy_loss(PRESETS[name], logp, logp_old, reward, mask)
    assert torch.equal(loss, _old_policy_loss(PRESETS[name], logp, logp_old, reward, mask))
    assert set(metrics) == {"loss/clipfrac", "loss/clipfrac_low", "loss/clipfrac_high", "loss/zero_variance_groups",
                            "loss/abs_advantage", "loss/advantage_std"}


@pytest.mark.parametrize("name", WEIGHTED)
def test_alpha_zero_is_exactly_dapo(name):
    _, logp_old, logp, mask, reward = _moved((2, 3), 4, 6, seed=7)
    reward[1, 0] = 0.0  # a flat group
    got_t, ref_t = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    loss, metrics = policy_loss(get_preset(name, alpha=0.0), got_t, logp_old, reward, mask)
    ref, ref_metrics = policy_loss(PRESETS["dapo"], ref_t, logp_old, reward, mask)
    assert torch.equal(loss, ref)
    assert torch.equal(torch.autograd.grad(loss.sum(), got_t)[0], torch.autograd.grad(ref.sum(), ref_t)[0])
    for key, value in ref_metrics.items():
        assert torch.equal(metrics[key], value), key
    assert torch.equal(metrics["loss/advantage_weight"], torch.ones(2, dtype=F64))
    # and a nonzero α changes the loss
    moved, _ = policy_loss(PRESETS[name], logp, logp_old, reward, mask)
    assert float((moved - ref).abs().max().detach()) > 1e-6


# --- the weighted presets: gradient at θ_old by hand, the loss at θ ≠ θ_old by a loop ------------------------------


def _logits_batch(seed: int, R=2, B=3, G=4, T=5, V=6):
    gen = _gen(seed)
    logits = torch.randn(R, B, G, T, V, generator=gen, dtype=F64)
    tokens = torch.randint(V, (R, B, G, T), generator=gen)
    lengths = torch.randint(1, T + 1, (R, B, G), generator=gen)
    mask = torch.arange(T) < lengths.unsqueeze(-1)
    reward = (torch.rand(R, B, G, generator=gen) < 0.5).to(F64)
    reward[:, 0, 0], reward[:, 0, 1] = 1.0, 0.0  # group 0 mixed in every run
    reward[:, -1] = 0.0  # the last group is flat: dynamic sampling drops it
    return logits, tokens, mask, reward


def _token_logp(logits, tokens):
    return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (R, B, G, T)


def _mean_std_by_hand(rew: list[float]) -> list[float]:
    G = len(rew)
    mean = sum(rew) / G
    std = math.sqrt(sum((x - mean) ** 2 for x in rew) / (G - 1))
    return [(x - mean) / (std + EPS) for x in rew]


def test_dapo_lowprob_gradient_at_theta_old_is_the_hand_written_surrogate():
    logits, tokens, mask, reward = _logits_batch(8)
    R, B, G, T = mask.shape
    theta = logits.clone().requires_grad_(True)
    logp = _token_logp(theta, tokens)
    logp_old = logp.detach()
    loss, metrics = policy_loss(PRESETS["dapo-lowprob"], logp, logp_old, reward, mask)
    grad = torch.autograd.grad(loss.sum(), theta)[0]
    # -Σ_{kept b, g, t < |o|} w_t Â_bg log π(y_t) / (tokens of the kept groups), w_t = 1 + 0.2(1 - p_old)
    theta_h = logits.clone().requires_grad_(True)
    lp = _token_logp(theta_h, tokens)
    hand = torch.zeros((), dtype=F64)
    for r in range(R):
        kept = [b for b in range(B) if len(set(reward[r, b].tolist())) > 1]
        n_tokens = sum(int(mask[r, b].sum()) for b in kept)
        for b in kept:
            A = _mean_std_by_hand(reward[r, b].tolist())
            for g in range(G):
                for t in range(T):
                    if mask[r, b, g, t]:
                        w = 1 + 0.2 * (1 - math.exp(float(logp_old[r, b, g, t])))
                        hand = hand - w * A[g] * lp[r, b, g, t] / n_tokens
    ref = torch.autograd.grad(hand, theta_h)[0]
    assert float(ref.abs().max()) > 1e-3
    torch.testing.assert_close(grad, ref, rtol=1e-12, atol=1e-14)
    # the weighting matters: plain DAPO's gradient differs
    plain = torch.autograd.grad(policy_loss(PRESETS["dapo"], _token_logp(theta, tokens), logp_old, reward, mask)[0].sum(), theta)[0]
    assert float((plain - grad).abs().max()) > 1e-4
    assert metrics["loss/clipfrac"].tolist() == [0.0, 0.0]
    w = metrics["loss/advantage_weight"]
    assert bool(((w > 1) & (w < 1.2)).all())


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_dapo_loss_away_from_theta_old_against_a_loop(name):
    logits, tokens, mask, reward = _logits_batch(9)
    R, B, G, T = mask.shape
    logp_old = _token_logp(logits, tokens)
    logp = logp_old + 0.3 * torch.randn(logp_old.shape, generator=_gen(10), dtype=F64)
    preset = PRESETS[name]
    loss, metrics = policy_loss(preset, logp, logp_old, reward, mask)
    assert 0 < float(metrics["loss/clipfrac"].min())  # the clip acts
    weighting = {"dapo-lowprob": "low-prob", "dapo-dominate": "dominate", "dapo-ppl": "perplexity"}[name]
    for r in range(R):
        kept = [b for b in range(B) if len(set(reward[r, b].tolist())) > 1]
        total, n_tokens = 0.0, 0
        for b in kept:
            A = torch.tensor(_mean_std_by_hand(reward[r, b].tolist()), dtype=F64)
            adv_t = _loop(weighting, A, logp_old[r, b], mask[r, b], preset.alpha)  # (G, T), checked above
            for g in range(G):
                for t in range(T):
                    if mask[r, b, g, t]:
                        rho, a = math.exp(float(logp[r, b, g, t] - logp_old[r, b, g, t])), float(adv_t[g, t])
                        total += -min(rho * a, min(max(rho, 1 - 0.2), 1 + 0.28) * a)
                        n_tokens += 1
        assert float(loss[r]) == pytest.approx(total / n_tokens, rel=1e-12, abs=1e-14)


def test_advantage_weight_metric():
    logits, tokens, mask, reward = _logits_batch(11)
    logp_old = _token_logp(logits, tokens)
    kept = (~(reward == reward[..., :1]).all(-1)).to(F64)[..., None, None] * mask  # tokens that count
    A = ADVANTAGES["mean-std"](reward, eps=EPS)
    for name in WEIGHTED:
        p = PRESETS[name]
        _, metrics = policy_loss(p, logp_old, logp_old, reward, mask)
        adv_t = WEIGHTINGS[p.weighting](A, logp_old, mask, alpha=p.alpha)
        ref = (adv_t.abs() * kept).sum((-1, -2, -3)) / (A.abs().unsqueeze(-1) * kept).sum((-1, -2, -3))
        torch.testing.assert_close(metrics["loss/advantage_weight"], ref, rtol=1e-14, atol=0)
        torch.testing.assert_close(metrics["loss/abs_advantage"], A.abs().mean((-1, -2)), rtol=0, atol=0)  # before weighting
    _, metrics = policy_loss(PRESETS["dapo"], logp_old, logp_old, reward, mask)
    assert "loss/advantage_weight" not in metrics


# --- presets table and bad settings ------------------------------------------------------------------------------


def test_weighted_presets_table():
    assert set(WEIGHTINGS) == {"none", "low-prob", "dominate", "perplexity"}
    assert set(PRESETS) == set(BASE) | set(WEIGHTED)
    dapo = PRESETS["dapo"]
    for name, (weighting, alpha) in {"dapo-lowprob": ("low-prob", 0.2), "dapo-dominate": ("dominate", 0.2),
                                     "dapo-ppl": ("perplexity", 0.2)}.items():
        p = PRESETS[name]
        assert (p.weighting, p.alpha) == (weighting, alpha)
        assert get_preset(name, weighting="none", alpha=0.0) == dapo  # otherwise DAPO in every field
    assert get_preset("dapo-lowprob", alpha=0.1).alpha == 0.1  # the Qwen3-8B-Base setting


def test_bad_settings_are_refused_with_clear_messages():
    with pytest.raises(ValueError, match="^weighting: got 'lowprob'; allowed: dominate, low-prob, none, perplexity$"):
        get_preset("dapo", weighting="lowprob", alpha=0.2)
    for alpha in (-0.1, math.nan, math.inf, True, "0.2"):
        with pytest.raises(ValueError, match=r"^alpha: got .*; allowed: a finite number >= 0 \(the weighting's strength\)$"):
            get_preset("dapo-lowprob", alpha=alpha)
    with pytest.raises(ValueError, match="^alpha: got 0.2; allowed: 0 with weighting 'none' \\(it would have no effect\\)"):
        get_preset("dapo", alpha=0.2)
    with pytest.raises(ValueError, match="^alpha: got 1.5; allowed: a number in \\[0, 1\\] for weighting 'dominate'"):
        get_preset("dapo-dominate", alpha=1.5)
    assert get_preset("dapo-lowprob", alpha=1.5).alpha == 1.5  # low-prob's w >= 1 for any α >= 0
    for kwargs in ({"surrogate": "gspo"}, {"surrogate": "gspo", "weighting": "perplexity"}):
        with pytest.raises(ValueError, match="^weighting: got '[a-z-]+'; allowed: 'none' with surrogate 'gspo' \\(GSPO's ratio"):
            get_preset("dapo-lowprob", **kwargs)
    with pytest.raises(ValueError, match="^weighting: got 'dominate'; allowed: 'none' with surrogate 'gspo'"):
        get_preset("gspo", weighting="dominate", alpha=0.2)
    with pytest.raises(ValueError, match="^preset 'dapo-ppl' option: got 'beta'; allowed: .*alpha.*weighting$"):
        get_preset("dapo-ppl", beta=0.1)
    # the functions check their shapes and the group size
    adv, logp_old, mask = _ragged((2,), 3, 4, seed=12)
    with pytest.raises(ValueError, match="^surrogate 'gspo': adv: got 'token-level advantages of shape \\(2, 3, 4\\)'"):
        SURROGATES["gspo"](logp_old, logp_old, WEIGHTINGS["none"](adv, logp_old, mask), mask, eps_low=0.2, eps_high=0.2)
    with pytest.raises(ValueError, match="^surrogate 'clip': adv: got 'shape \\(2, 3, 3\\)'"):
        SURROGATES["clip"](logp_old, logp_old, torch.ones(2, 3, 3, dtype=F64), mask, eps_low=0.2, eps_high=0.2)
    with pytest.raises(ValueError, match="^surrogate 'pg': adv: got 'shape \\(2, 4\\)'"):
        SURROGATES["pg"](logp_old, logp_old, torch.ones(2, 4, dtype=F64), mask, eps_low=0.2, eps_high=0.2)
    with pytest.raises(ValueError, match="^weighting 'low-prob': adv: got 'shape \\(2, 4\\)'"):
        WEIGHTINGS["low-prob"](torch.ones(2, 4, dtype=F64), logp_old, mask, alpha=0.2)
    with pytest.raises(ValueError, match="^weighting 'perplexity': got 'groups of 1'; allowed: groups of G >= 2"):
        WEIGHTINGS["perplexity"](adv[:, :1], logp_old[:, :1], mask[:, :1], alpha=0.2)


def _simulator_ctx():
    gen = _gen(13)
    policy = TokenSoftmax(3, 3, eos=0)
    reward = (torch.rand(2, policy.n_responses, generator=gen) < 0.4).to(F64)
    reward[:, 0], reward[:, 1] = 1.0, 0.0
    theta = policy.init(2, scale=1.0, generator=gen)
    weights = torch.tensor([[0.4, 0.6]], dtype=F64).expand(2, 2).clone()
    return StepContext(0, 1, theta, Enumerated(policy, reward), weights, policy.constants(), _gen(14))


def test_simulator_samples_weighted_presets_and_refuses_their_exact_expectation():
    ctx = _simulator_ctx()
    for name in WEIGHTED:
        with pytest.raises(ValueError, match=f"^preset '{name}' weighting: got '[a-z-]+'; allowed: 'none' for an exact expected update"):
            make_direction("expected", preset=name)(ctx)
        with pytest.raises(ValueError, match=f"^preset '{name}' weighting: "):
            make_direction("prompt-adaptive", preset=name, lr=0.1)(ctx)
    assert make_direction("expected", preset="dapo-lowprob", weighting="none", alpha=0.0)(ctx).w.shape == ctx.theta.shape
    # the sampled update: same batch as DAPO (same generator), a different direction
    d = make_direction("preset", preset="dapo-lowprob", G=4)(ctx)
    ctx_plain = StepContext(0, 1, ctx.theta, ctx.model, ctx.weights, ctx.constants, _gen(14))
    plain = make_direction("preset", preset="dapo", G=4)(ctx_plain)
    assert torch.equal(d.samples.index, plain.samples.index)
    assert bool(torch.isfinite(d.w).all()) and float((d.w - plain.w).abs().max()) > 1e-6
    assert bool((d.metrics["loss/advantage_weight"] >= 1).all())
