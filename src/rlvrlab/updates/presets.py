"""Paper algorithms as presets over four independent choices: advantage × weighting × surrogate × aggregation.

    preset         advantage  weighting (α)     surrogate  aggregation               clip (low, high)  other
    reinforce      exact      none              pg         seq-mean-token-sum        —                 eq. (4)
    rloo           loo        none              pg         seq-mean-token-sum        —
    grpo           mean-std   none              clip       seq-mean-token-mean       0.2, 0.2          eq. (22)-(23)
    dr-grpo        mean       none              clip       seq-mean-token-sum-norm   0.2, 0.2          constant normalizer
    dapo           mean-std   none              clip       token-mean                0.2, 0.28         dynamic sampling
    gspo           mean-std   none              gspo       seq-mean-token-mean       3e-4, 4e-4        sequence ratio
    dapo-lowprob   mean-std   low-prob (0.2)    clip       token-mean                0.2, 0.28         dynamic sampling
    dapo-dominate  mean-std   dominate (0.2)    clip       token-mean                0.2, 0.28         dynamic sampling
    dapo-ppl       mean-std   perplexity (0.2)  clip       token-mean                0.2, 0.28         dynamic sampling

The weighting (rlvrlab.updates.weighting) turns the advantage Â_i of a response into one per token,
Ã_{i,t} = w_{i,t}·Â_i, from π_old alone (no gradient through w). "dapo-lowprob" is the training
recipe of "Direction of RLVR updates" (arXiv 2603.22117, METHODS.md §B): w_t = 1 + α(1 − p_t),
α = 0.2 as for Qwen2.5-Math-7B (0.1 for Qwen3-8B-Base: get_preset("dapo-lowprob", alpha=0.1)).
Its two baselines get no α in our notes; we use 0.2 for both so that all three move a token's
weight by at most 0.2: "dapo-dominate" w_t = 0.2·p_t + 0.8 ∈ [0.8, 1], "dapo-ppl" w_i =
clamp(1 − 0.2·z_i, 0.8, 1.2), whose clamp binds once a response's log-perplexity is one group
standard deviation from the group's mean. With α = 0 each is exactly "dapo".

``policy_loss`` computes a preset's loss on a sampled batch, one value per leading index (run);
its gradient at θ = θ_old is the preset's policy-gradient estimate, e.g. for GRPO
-(1/G) Σ_i A_i (1/|o_i|) ∇log π(o_i), whose expectation is eq. (5) when A uses the exact J and σ.
``epochs`` > 1 takes several steps on one batch with θ_old fixed (PPO's μ); clipping then acts.
DAPO's dynamic sampling drops groups whose rewards are all equal (they carry no gap signal).
No KL penalty: the paper (and most RLVR recipes) train with β = 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from rlvrlab import _checks
from rlvrlab.updates.advantages import ADVANTAGES
from rlvrlab.updates.aggregation import AGGREGATIONS
from rlvrlab.updates.surrogates import SURROGATES
from rlvrlab.updates.weighting import WEIGHTINGS

__all__ = ["PRESETS", "Preset", "get_preset", "policy_loss"]


@dataclass(frozen=True)
class Preset:
    """One update rule as its four choices (advantage, weighting, surrogate, aggregation) and their
    hyperparameters. ``weighting`` and its ``alpha`` come last so that positional presets keep working."""

    advantage: str
    surrogate: str
    aggregation: str
    eps_low: float = 0.2
    eps_high: float = 0.2
    dynamic_sampling: bool = False
    epochs: int = 1
    norm: float | None = None  # Dr. GRPO's constant normalizer (default: the maximum length T)
    std_eps: float = 1e-4
    weighting: str = "none"  # per-token weights on the advantage (rlvrlab.updates.weighting)
    alpha: float = 0.0  # the weighting's strength; 0 leaves every weight at exactly 1

    def __post_init__(self) -> None:
        _checks.choose("advantage", self.advantage, ADVANTAGES)
        _checks.choose("weighting", self.weighting, WEIGHTINGS)
        _checks.choose("surrogate", self.surrogate, SURROGATES)
        _checks.choose("aggregation", self.aggregation, AGGREGATIONS)
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha >= 0):
            _checks.fail("alpha", alpha, "a finite number >= 0 (the weighting's strength)")
        if self.weighting == "none" and alpha != 0:
            _checks.fail("alpha", alpha, "0 with weighting 'none' (it would have no effect); "
                         "set weighting to one of dominate, low-prob, perplexity, or alpha=0")
        if self.weighting == "dominate" and alpha > 1:
            _checks.fail("alpha", alpha, "a number in [0, 1] for weighting 'dominate' (w = α·p_old + 1 − α must stay > 0)")
        if self.weighting != "none" and self.surrogate == "gspo":
            _checks.fail("weighting", self.weighting, "'none' with surrogate 'gspo' (GSPO's ratio and clip are per "
                         "sequence, so per-token weights have no place in it); use surrogate 'clip' or 'pg' to weight tokens")
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            _checks.fail("eps_low/eps_high", (self.eps_low, self.eps_high), "0 <= eps_low < 1 and eps_high >= 0")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            _checks.fail("epochs", self.epochs, "an integer >= 1 (PPO's μ)")
        if self.norm is not None and not self.norm > 0:
            _checks.fail("norm", self.norm, "None or a length > 0")


PRESETS: dict[str, Preset] = {
    "reinforce": Preset("exact", "pg", "seq-mean-token-sum"),
    "rloo": Preset("loo", "pg", "seq-mean-token-sum"),
    "grpo": Preset("mean-std", "clip", "seq-mean-token-mean", 0.2, 0.2),
    "dr-grpo": Preset("mean", "clip", "seq-mean-token-sum-norm", 0.2, 0.2),
    "dapo": Preset("mean-std", "clip", "token-mean", 0.2, 0.28, dynamic_sampling=True),
    "gspo": Preset("mean-std", "gspo", "seq-mean-token-mean", 3e-4, 4e-4),
    "dapo-lowprob": Preset("mean-std", "clip", "token-mean", 0.2, 0.28, dynamic_sampling=True, weighting="low-prob", alpha=0.2),
    "dapo-dominate": Preset("mean-std", "clip", "token-mean", 0.2, 0.28, dynamic_sampling=True, weighting="dominate", alpha=0.2),
    "dapo-ppl": Preset("mean-std", "clip", "token-mean", 0.2, 0.28, dynamic_sampling=True, weighting="perplexity", alpha=0.2),
}


def get_preset(name: str, **overrides: Any) -> Preset:
    """A preset by name, with fields overridden (e.g. get_preset("grpo", epochs=4))."""
    preset = _checks.choose("preset", name, PRESETS)
    fields = {f.name for f in dataclasses.fields(Preset)}
    for key in overrides:
        if key not in fields:
            _checks.fail(f"preset '{name}' option", key, ", ".join(sorted(fields)))
    return dataclasses.replace(preset, **overrides)


def policy_loss(
    preset: Preset,
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    reward: torch.Tensor,
    mask: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    J: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A preset's loss on a batch and its diagnostics.

    logp, logp_old, mask: (..., B, G, T); reward: (..., B, G) 0/1; weights: (..., B) prompt
    distribution (default uniform); J: (..., B) exact success rates (advantage "exact" only).
    Returns the loss (...) and ``loss/...`` diagnostics (...): clip fraction (over the tokens that
    count: those of dropped groups and of prompts with weight 0 do not; in all, and split into
    the low side, Â < 0, and the high side, Â > 0), fraction of groups with zero reward variance,
    mean |Â| and the standard deviation of Â over all B·G responses (the advantage before any
    weighting);
    with a weighting other than "none" also ``loss/advantage_weight`` = Σ|Ã_t| / Σ|Â| over the
    tokens that count, the |Â|-weighted mean token weight (1 where no such token has Â ≠ 0).
    """
    B = reward.shape[-2]
    if weights is None:
        weights = torch.full(reward.shape[:-1], 1.0 / B, dtype=logp.dtype)
    weights = weights.to(logp.dtype)
    adv = ADVANTAGES[preset.advantage](reward.to(logp.dtype), J=J, eps=preset.std_eps)
    flat = (reward == reward[..., :1]).all(-1)  # (..., B) all-correct or all-wrong groups
    if preset.dynamic_sampling:
        weights = weights * ~flat
        total = weights.sum(-1, keepdim=True)
        weights = torch.where(total > 0, weights / total.clamp(min=1e-300), torch.zeros_like(weights))
    # Weighting "none" keeps one advantage per response (..., B, G): bit for bit the loss of the
    # presets before weighting existed, and the only form GSPO's sequence ratio accepts.
    adv_t = adv if preset.weighting == "none" else WEIGHTINGS[preset.weighting](adv, logp_old, mask, alpha=preset.alpha)
    loss_t, clipped = SURROGATES[preset.surrogate](logp, logp_old, adv_t, mask, eps_low=preset.eps_low, eps_high=preset.eps_high)
    loss = AGGREGATIONS[preset.aggregation](loss_t, mask, weights, norm=preset.norm)
    m = mask.to(logp.dtype) * (weights > 0).to(logp.dtype)[..., None, None]  # tokens that count in the loss
    tokens = m.sum((-1, -2, -3)).clamp(min=1)
    sign = adv_t if adv_t.dim() == logp.dim() else adv_t.unsqueeze(-1)  # (..., B, G, T or 1)
    share = lambda where: (where.to(logp.dtype) * m).sum((-1, -2, -3)).detach() / tokens  # noqa: E731
    metrics = {
        "loss/clipfrac": share(clipped),
        "loss/clipfrac_low": share(clipped & (sign < 0)),  # TRL's clip_ratio/low_mean: ratio < 1 - eps_low with Â < 0
        "loss/clipfrac_high": share(clipped & (sign > 0)),  # TRL's clip_ratio/high_mean: ratio > 1 + eps_high with Â > 0
        "loss/zero_variance_groups": flat.to(logp.dtype).mean(-1),
        "loss/abs_advantage": adv.abs().mean((-1, -2)).detach(),
        "loss/advantage_std": adv.flatten(-2).std(-1).detach(),
    }
    if preset.weighting != "none":
        weighted = (adv_t.abs() * m).sum((-1, -2, -3))
        plain = (adv.abs().unsqueeze(-1) * m).sum((-1, -2, -3))
        metrics["loss/advantage_weight"] = torch.where(plain > 0, weighted / plain.clamp(min=1e-300), torch.ones_like(plain)).detach()
    return loss, metrics
