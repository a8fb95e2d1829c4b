"""Training-time token weighting: sequence advantages -> per-token advantages Ã_{i,t} = w_{i,t}·Â_i.

Signature: ``fn(adv, logp_old, mask, *, alpha) -> adv_t`` with adv (..., G) the advantages of a
group of G responses, logp_old and mask (..., G, T) the per-token log-probabilities under θ_old
and which tokens are real; adv_t (..., G, T). p_t = π_old(y_t | x, y_<t) = exp(logp_old) is always
detached: a weight is a constant of the step, it carries no gradient. Padded tokens (mask False)
get w = 1 (they never reach the loss, but a non-finite log-probability there must not either).

    "none"        w_t = 1: Â broadcast over the tokens (what the presets did before weighting)
    "low-prob"    w_t = 1 + α(1 − p_t) ∈ [1, 1 + α]: up-weights low-probability tokens, where the
                  RLVR update is concentrated ("Direction of RLVR updates", arXiv 2603.22117;
                  METHODS.md §B; α = 0.2 for Qwen2.5-Math-7B, 0.1 for Qwen3-8B-Base)
    "dominate"    w_t = α·p_t + (1 − α) ∈ [1 − α, 1]: the opposite, down-weights low-probability
                  tokens (that paper's baseline: the "Advantage Reweighting" of Yang et al., 2025,
                  "Do Not Let Low-Probability Tokens Over-Dominate in RL for LLMs",
                  arXiv 2505.12929; α ∈ [0, 1] keeps w > 0)
    "perplexity"  one weight per response, w_i = clamp(1 − α·z_i, 0.8, 1.2) with
                  z_i = (L_i − mean_G L) / std_G L and L_i = log PPL_i = −(1/|o_i|) Σ_t log p_t
                  (the paper's perplexity-based baseline): responses that are unusually
                  surprising to π_old, within their group, count less

For "perplexity" std_G uses Bessel's correction (G − 1), as the "mean-std" advantage does; a group
whose L are all equal gets z = 0 (w = 1), and an empty response (|o| = 0) has L = 0.
α = 0 gives w = 1 exactly in every weighting, hence exactly the unweighted update.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlvrlab import _checks

__all__ = ["WEIGHTINGS"]


def _check(name: str, adv: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor) -> None:
    _checks.shape(f"weighting '{name}': adv", adv, tuple(logp_old.shape[-2:-1]), "(..., G) with G of logp_old (..., G, T)")
    _checks.shape(f"weighting '{name}': mask", mask, tuple(logp_old.shape[-2:]), "(..., G, T) like logp_old")


def _tokens(adv: torch.Tensor, w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """w (..., G, T) on the real tokens, 1 on padding, times Â (..., G) -> (..., G, T)."""
    w = torch.where(mask.bool(), w, torch.ones_like(w))
    return w * adv.unsqueeze(-1)


def none(adv: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor, *, alpha: float = 0.0) -> torch.Tensor:
    _check("none", adv, logp_old, mask)
    return adv.unsqueeze(-1).expand(*adv.shape, logp_old.shape[-1])


def low_prob(adv: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor, *, alpha: float) -> torch.Tensor:
    _check("low-prob", adv, logp_old, mask)
    p = logp_old.detach().exp()
    return _tokens(adv, 1 + alpha * (1 - p), mask)


def dominate(adv: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor, *, alpha: float) -> torch.Tensor:
    _check("dominate", adv, logp_old, mask)
    p = logp_old.detach().exp()
    return _tokens(adv, alpha * p + (1 - alpha), mask)


def perplexity(adv: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor, *, alpha: float) -> torch.Tensor:
    _check("perplexity", adv, logp_old, mask)
    G = logp_old.shape[-2]
    if G < 2:
        _checks.fail("weighting 'perplexity'", f"groups of {G}", "groups of G >= 2 responses per prompt (z is within a group)")
    m = mask.bool()
    lp = torch.where(m, logp_old.detach(), torch.zeros_like(logp_old))  # padding may hold anything, even -inf
    L = -lp.sum(-1) / m.sum(-1).clamp(min=1).to(lp.dtype)  # (..., G) log-perplexity of each response
    dev = L - L.mean(-1, keepdim=True)
    std = ((dev * dev).sum(-1, keepdim=True) / (G - 1)).sqrt()
    z = torch.where(std > 0, dev / std.clamp(min=torch.finfo(std.dtype).tiny), torch.zeros_like(dev))
    w = (1 - alpha * z).clamp(0.8, 1.2)  # (..., G)
    return _tokens(adv, w.unsqueeze(-1).expand_as(logp_old), mask)


WEIGHTINGS: dict[str, Callable[..., torch.Tensor]] = {
    "none": none,
    "low-prob": low_prob,
    "dominate": dominate,
    "perplexity": perplexity,
}
