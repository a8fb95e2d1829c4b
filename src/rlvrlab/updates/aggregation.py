"""Loss aggregation: per-token losses of a batch -> one number (per run), as in verl's agg_loss.

Signature: ``fn(loss, mask, weights, *, norm) -> (...)`` with loss, mask (..., B, G, T) for B
prompts of G responses, weights (..., B) a distribution over the prompts (uniform in practice;
the simulator's curricula change it), norm a constant length (only "seq-mean-token-sum-norm").

    "seq-mean-token-mean"      Σ_b w_b mean_g (1/|o|) Σ_t loss    GRPO (eq. 23), GSPO
    "seq-mean-token-sum"       Σ_b w_b mean_g Σ_t loss            REINFORCE, RLOO: log π of
                                                                  the whole response
    "seq-mean-token-sum-norm"  Σ_b w_b mean_g Σ_t loss / norm     Dr. GRPO: a constant, not
                                                                  the response's length
    "token-mean"               Σ w_b Σ_{g,t} loss / Σ w_b Σ_{g,t} 1   DAPO: every token of the
                                                                  batch counts the same
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["AGGREGATIONS"]


def _seq(loss: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = mask.to(loss.dtype)
    return (loss * m).sum(-1), m.sum(-1)  # (..., B, G) token sums and lengths


def seq_mean_token_mean(loss, mask, weights, *, norm: float | None = None):
    total, length = _seq(loss, mask)
    return (weights * (total / length.clamp(min=1)).mean(-1)).sum(-1)


def seq_mean_token_sum(loss, mask, weights, *, norm: float | None = None):
    total, _ = _seq(loss, mask)
    return (weights * total.mean(-1)).sum(-1)


def seq_mean_token_sum_norm(loss, mask, weights, *, norm: float | None = None):
    total, _ = _seq(loss, mask)
    return (weights * total.mean(-1)).sum(-1) / (norm if norm is not None else mask.shape[-1])


def token_mean(loss, mask, weights, *, norm: float | None = None):
    total, length = _seq(loss, mask)
    return (weights * total.sum(-1)).sum(-1) / (weights * length.sum(-1)).sum(-1).clamp(min=1e-12)


AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "seq-mean-token-mean": seq_mean_token_mean,
    "seq-mean-token-sum": seq_mean_token_sum,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
    "token-mean": token_mean,
}
