"""Policy surrogates: per-token losses whose gradient is the update (to be minimized).

Signature: ``fn(logp, logp_old, adv, mask, *, eps_low, eps_high) -> (loss, clipped)`` with
logp, logp_old, mask (..., G, T) per-token log-probabilities under theta and theta_old, adv
(..., G); loss (..., G, T) and clipped (..., G, T) bool (where a clip is active).

    "pg"    -ρ_t·A, ρ_t = π/π_old per token: importance-weighted REINFORCE; at θ = θ_old its
            gradient is -A ∇log π(o_t)
    "clip"  -min(ρ_t A, clip(ρ_t, 1-eps_low, 1+eps_high) A): PPO / GRPO (eq. 23 without KL) /
            DAPO's clip-higher (eps_high > eps_low; Yu et al., 2025)
    "gspo"  the sequence-level ratio s = exp(mean_t(log π - log π_old)) clipped at the sequence
            level (Zheng et al., 2025), its value carried by every token of the sequence
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["SURROGATES"]


def pg(logp, logp_old, adv, mask, *, eps_low: float, eps_high: float):
    ratio = torch.exp(logp - logp_old)
    return -ratio * adv.unsqueeze(-1), torch.zeros_like(mask)


def clip(logp, logp_old, adv, mask, *, eps_low: float, eps_high: float):
    ratio = torch.exp(logp - logp_old)
    a = adv.unsqueeze(-1)
    unclipped, clipped = ratio * a, ratio.clamp(1 - eps_low, 1 + eps_high) * a
    return -torch.minimum(unclipped, clipped), (clipped < unclipped) & mask


def gspo(logp, logp_old, adv, mask, *, eps_low: float, eps_high: float):
    m = mask.to(logp.dtype)
    log_s = ((logp - logp_old) * m).sum(-1) / m.sum(-1).clamp(min=1)  # (..., G)
    s = torch.exp(log_s)
    unclipped, clipped = s * adv, s.clamp(1 - eps_low, 1 + eps_high) * adv
    seq = -torch.minimum(unclipped, clipped)
    return seq.unsqueeze(-1).expand_as(logp), ((clipped < unclipped).unsqueeze(-1) & mask)


SURROGATES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {"pg": pg, "clip": clip, "gspo": gspo}
