"""Advantage estimators: rewards of a group of G responses to one prompt -> advantages.

Every estimator has the signature ``fn(reward, *, J=None, eps=1e-4) -> advantages`` with reward
(..., G) 0/1 and J (...) the exact success rate (used only by "exact"):

    "none"      A = r                                   REINFORCE without a baseline
    "exact"     A = r - J                               eq. (4): the exact value baseline
    "mean"      A = r - mean_G(r)                       Dr. GRPO (Liu et al., 2025)
    "mean-std"  A = (r - mean_G(r)) / (std_G(r) + eps)  GRPO, eq. (22) (std with Bessel's
                                                        correction, as TRL computes it)
    "loo"       A = r - mean_{j≠i}(r_j)                 RLOO; unbiased, E[A ∇log π] = ∇J
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlvrlab import _checks

__all__ = ["ADVANTAGES"]


def none(reward: torch.Tensor, *, J: torch.Tensor | None = None, eps: float = 1e-4) -> torch.Tensor:
    return reward


def exact(reward: torch.Tensor, *, J: torch.Tensor | None = None, eps: float = 1e-4) -> torch.Tensor:
    if J is None:
        _checks.fail("advantage 'exact'", "no exact J", "a model that knows J exactly (a simulator), or another advantage")
    return reward - J.unsqueeze(-1)


def _group(reward: torch.Tensor, name: str) -> int:
    G = reward.shape[-1]
    if G < 2:
        _checks.fail(f"advantage '{name}'", f"groups of {G}", "groups of G >= 2 responses per prompt")
    return G


def mean(reward: torch.Tensor, *, J: torch.Tensor | None = None, eps: float = 1e-4) -> torch.Tensor:
    _group(reward, "mean")
    return reward - reward.mean(-1, keepdim=True)


def mean_std(reward: torch.Tensor, *, J: torch.Tensor | None = None, eps: float = 1e-4) -> torch.Tensor:
    _group(reward, "mean-std")
    return (reward - reward.mean(-1, keepdim=True)) / (reward.std(-1, keepdim=True) + eps)


def loo(reward: torch.Tensor, *, J: torch.Tensor | None = None, eps: float = 1e-4) -> torch.Tensor:
    G = _group(reward, "loo")
    return (G * reward - reward.sum(-1, keepdim=True)) / (G - 1)


ADVANTAGES: dict[str, Callable[..., torch.Tensor]] = {
    "none": none,
    "exact": exact,
    "mean": mean,
    "mean-std": mean_std,
    "loo": loo,
}
