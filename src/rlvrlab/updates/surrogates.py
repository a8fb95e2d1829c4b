"""Policy surrogates: per-token losses whose gradient is the update (to be minimized).

Signature: ``fn(logp, logp_old, adv, mask, *, eps_low, eps_high) -> (loss, clipped)`` with
logp, logp_old, mask (..., G, T) per-token log-probabilities under theta and theta_old, adv
(..., G) one advantage per response or, for "pg" and "clip", (..., G, T) one per token (a token
weighting, rlvrlab.updates.weighting); loss (..., G, T) and clipped (..., G, T) bool (where a clip
is active). A (..., G) advantage gives bit for bit the loss of its broadcast over the tokens.

    "pg"    -ρ_t·A, ρ_t = π/π_old per token: importance-weighted REINFORCE; at θ = θ_old its
            gradient is -A ∇log π(o_t)
    "clip"  -min(ρ_t A, clip(ρ_t, 1-eps_low, 1+eps_high) A): PPO / GRPO (eq. 23 without KL) /
            DAPO's clip-higher (eps_high > eps_low; Yu et al., 2025)
    "gspo"  the sequence-level ratio s = exp(mean_t(log π - log π_old)) clipped at the sequence
            level (Zheng et al., 2025), its value carried by every token of the sequence; its
            ratio and clip are per sequence, so it takes (..., G) advantages only
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlvrlab import _checks

__all__ = ["SURROGATES"]


def _per_token(name: str, adv: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """(..., G) or (..., G, T) advantages as a tensor that broadcasts against logp (..., G, T)."""
    if adv.dim() == logp.dim():
        _checks.shape(f"surrogate '{name}': adv", adv, tuple(logp.shape[-2:]), "(..., G, T) like logp")
        return adv
    _checks.shape(f"surrogate '{name}': adv", adv, tuple(logp.shape[-2:-1]), "(..., G) or (..., G, T) like logp")
    return adv.unsqueeze(-1)


def pg(logp, logp_old, adv, mask, *, eps_low: float, eps_high: float):
    ratio = torch.exp(logp - logp_old)
    return -ratio * _per_token("pg", adv, logp), torch.zeros_like(mask)


def clip(logp, logp_old, adv, mask, *, eps_low: float, eps_high: float):
    ratio = torch.exp(logp - logp_old)
    a = _per_token("clip", adv, logp)
    unclipped, clipped = ratio * a, ratio.clamp(1 - eps_low, 1 + eps_high) * a
    return -torch.minimum(unclipped, clipped), (clipped < unclipped) & mask


def gspo(logp, logp_old, adv, mask, *, eps_low: float, eps_high: float):
    if adv.dim() == logp.dim():
        _checks.fail("surrogate 'gspo': adv", f"token-level advantages of shape {tuple(adv.shape)}",
                     "(..., G) advantages only: GSPO's ratio and clip are per sequence")
    m = mask.to(logp.dtype)
    log_s = ((logp - logp_old) * m).sum(-1) / m.sum(-1).clamp(min=1)  # (..., G)
    s = torch.exp(log_s)
    unclipped, clipped = s * adv, s.clamp(1 - eps_low, 1 + eps_high) * adv
    seq = -torch.minimum(unclipped, clipped)
    return seq.unsqueeze(-1).expand_as(logp), ((clipped < unclipped).unsqueeze(-1) & mask)


SURROGATES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {"pg": pg, "clip": clip, "gspo": gspo}
