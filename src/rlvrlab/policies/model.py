"""A policy together with its pass/fail reward: everything a simulation needs to know, exactly.

The simulator never looks inside a policy; it asks a ``Model`` (R runs, C prompts) for

    masses(theta)               log J and log(1 - J) per prompt, (R, C)
    along(theta, w)             the exact GapStats along the direction w, per prompt (R, C)
    grad_J(theta, weights)      ∇ Σ_c weights_c J_c, (R, d)
    gap_vector(theta, weights)  the batch Gradient Gap g+ - g- (Section 5), (R, d)
    expected_update(theta, weights, preset)  a preset's update in expectation at θ = θ_old, (R, d)
    sample(theta, G)            G responses per prompt: tokens, mask, rewards (a ``Batch``)
    token_logp(theta, batch)    per-token log π of a batch, differentiable in theta, (R, C, G, T)
    sample_proj(theta, w, batch) w·∇log π(o_i) of each sampled response, (R, C, G)
    sample_token_proj(theta, w, batch)  the same per token, (R, C, G, T)
    length_psi1(theta)          psi_1 norm of the response length under π, (R,)
    mean_length(theta)          expected response length, averaged over prompts, (R,)

``Enumerated`` answers these over an enumerated response space (any ``EnumerablePolicy`` and a
(C, N) or (R, C, N) 0/1 reward). Policies too long to enumerate answer them in closed form
(``rlvrlab.policies.independent``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch.func import jvp

from rlvrlab import _checks
from rlvrlab.gap import GapStats, _along
from rlvrlab.policies.base import Constants, EnumerablePolicy

__all__ = ["Batch", "Enumerated", "Model"]


@dataclass
class Batch:
    """G sampled responses for each run and prompt.

    tokens (R, C, G, T) long, mask (R, C, G, T) bool (True where the token exists), reward
    (R, C, G) 0/1, index (R, C, G) of the enumerated responses (None for closed-form models).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    reward: torch.Tensor
    index: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)


class Model(ABC):
    """Policy and reward of R runs over C prompts (see the module docstring)."""

    n_params: int
    n_prompts: int

    @abstractmethod
    def masses(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def along(self, theta: torch.Tensor, w: torch.Tensor, *, curvature: bool = False) -> GapStats: ...

    @abstractmethod
    def grad_J(self, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def gap_vector(self, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def expected_update(self, theta: torch.Tensor, weights: torch.Tensor, preset) -> torch.Tensor: ...

    @abstractmethod
    def sample(self, theta: torch.Tensor, G: int, generator: torch.Generator | None = None) -> Batch: ...

    @abstractmethod
    def token_logp(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor: ...

    @abstractmethod
    def length_psi1(self, theta: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def constants(self) -> Constants: ...

    @abstractmethod
    def mean_length(self, theta: torch.Tensor) -> torch.Tensor: ...

    def sample_token_proj(self, theta: torch.Tensor, w: torch.Tensor, batch: Batch) -> torch.Tensor:
        """w·∇log π(o_t | o_<t) for each sampled token (R, C, G, T): a forward derivative of token_logp."""
        _, tangent = jvp(lambda t: self.token_logp(t, batch), (theta,), (w,))
        return tangent * batch.mask

    def sample_proj(self, theta: torch.Tensor, w: torch.Tensor, batch: Batch) -> torch.Tensor:
        """w·∇log π(o_i) for each sampled response (R, C, G)."""
        return self.sample_token_proj(theta, w, batch).sum(-1)


class Enumerated(Model):
    """An EnumerablePolicy with a 0/1 reward over its N responses: (C, N) shared or (R, C, N)."""

    def __init__(self, policy: EnumerablePolicy, reward: torch.Tensor):
        self.policy = policy
        self.reward = reward
        self.correct = reward.to(torch.bool)
        self.n_params = policy.n_params
        self.n_prompts = reward.shape[-2]

    def _logp(self, theta: torch.Tensor) -> torch.Tensor:
        logp = self.policy.logp(theta)
        return logp.expand(theta.shape[0], self.n_prompts, logp.shape[-1])

    def masses(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = self._logp(theta)
        correct = self.correct.expand_as(logp)
        return (torch.logsumexp(logp.masked_fill(~correct, -math.inf), -1),
                torch.logsumexp(logp.masked_fill(correct, -math.inf), -1))

    def along(self, theta: torch.Tensor, w: torch.Tensor, *, curvature: bool = False) -> GapStats:
        logp, proj = self.policy.logp_and_jvp(theta, w)
        shape = (theta.shape[0], self.n_prompts, logp.shape[-1])
        curv = self.policy.curvature(theta, w).expand(shape) if curvature else None
        return _along(logp.expand(shape), proj.expand(shape), self.correct.expand(shape), curv)

    def grad_J(self, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.policy.grad_J(theta, self.reward, weights)

    def gap_vector(self, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.policy.gap_vector(theta, self.reward, weights)

    def expected_update(self, theta: torch.Tensor, weights: torch.Tensor, preset) -> torch.Tensor:
        """The G -> ∞ limit of a preset's update at θ = θ_old: Σ_c w_c E[a(o)·n(o)·∇log π(o|c)].

        a = r - J, divided by sigma = sqrt(J(1-J)) for "mean-std" (any baseline leaves the
        expectation at r - J; a = r for "none"; dynamic sampling drops only the prompts with J = 0
        or 1 as G -> ∞, and renormalizes the weights over the rest); n = 1 (token sum), 1/|o|
        (token mean per sequence), 1/norm (Dr. GRPO), 1/Σ_c w_c E_c|o| (DAPO's token mean).
        At θ = θ_old every surrogate has the gradient of "pg". E.g. GRPO gives eq. (5).
        """
        logp = self._logp(theta)
        correct = self.correct.expand_as(logp)
        log_J, log_1mJ = self.masses(theta)
        J, Jm = log_J.exp().unsqueeze(-1), log_1mJ.exp().unsqueeze(-1)
        a = torch.where(correct, Jm, -J)
        if preset.advantage == "none":  # no baseline: E[r·n(o)∇log π] differs from r - J where n depends on |o|
            a = correct.to(logp.dtype)
        if preset.dynamic_sampling:  # a prompt with J = 0 or 1 only ever gives all-equal groups: always dropped
            live = ((J > 0) & (Jm > 0)).squeeze(-1)
            weights = weights * live
            total = weights.sum(-1, keepdim=True)
            weights = torch.where(total > 0, weights / total.clamp(min=1e-300), torch.zeros_like(weights))
        if preset.advantage == "mean-std":
            sigma = (J * Jm).sqrt()
            a = torch.where(sigma > 0, a / sigma.clamp(min=1e-300), torch.zeros_like(a))
        p = logp.exp()
        lengths = self.policy.lengths().to(p.dtype)
        n = {
            "seq-mean-token-sum": torch.ones_like(lengths),
            "seq-mean-token-mean": 1 / lengths,
            "seq-mean-token-sum-norm": torch.full_like(lengths, 1 / (preset.norm or float(lengths.max()))),
        }.get(preset.aggregation)
        if n is None:  # token-mean: one normalizer for the batch, the expected number of tokens
            mean_len = (weights * (p * lengths).sum(-1)).sum(-1)[:, None, None]
            coef = a / mean_len
        else:
            coef = a * n
        v = weights.unsqueeze(-1) * p * coef
        if v.shape[-2] != self.policy.n_prompts:
            v = v.sum(-2, keepdim=True)
        return self.policy.vjp(theta, v)

    def sample(self, theta: torch.Tensor, G: int, generator: torch.Generator | None = None) -> Batch:
        R, C = theta.shape[0], self.n_prompts
        # A policy shared by all prompts (n_prompts = 1) draws G independent responses for each prompt.
        index = self.policy.sample(theta, G * (C // self.policy.n_prompts), generator).view(R, C, G)
        N = self.reward.shape[-1]
        reward = self.reward.expand(R, C, N).gather(-1, index)
        tokens, mask = self.policy.response_tokens(index)
        return Batch(tokens, mask, reward, index)

    def token_logp(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        assert batch.index is not None
        return self.policy.token_logp(theta, batch.index)

    def length_psi1(self, theta: torch.Tensor) -> torch.Tensor:
        from rlvrlab.theory import psi1_norm

        p = self._logp(theta).exp()
        lengths = self.policy.lengths().long()
        K = int(lengths.max()) + 1  # the mass of each length: a bisection over T + 1 values, not every response
        mass = p.new_zeros(*p.shape[:-1], K).index_add_(-1, lengths, p)
        return psi1_norm(torch.arange(K, dtype=p.dtype).expand_as(mass), mass).amax(-1)

    def mean_length(self, theta: torch.Tensor) -> torch.Tensor:
        p = self._logp(theta).exp()
        return (p * self.policy.lengths().to(p.dtype)).sum(-1).mean(-1)

    def constants(self) -> Constants:
        return self.policy.constants()


def as_model(policy: EnumerablePolicy | Model, reward: torch.Tensor | object | None, runs: int, dtype: torch.dtype) -> Model:
    """The Model behind simulate(policy, reward, ...): a tensor reward enumerates, a closed-form
    policy brings its own reward object."""
    if isinstance(policy, Model):
        return policy
    if isinstance(reward, torch.Tensor) or isinstance(reward, (list, tuple)):
        return Enumerated(policy, _prepare_reward(torch.as_tensor(reward), policy, runs, dtype))
    bind = getattr(policy, "bind", None)
    if bind is None:
        _checks.fail("reward", type(reward).__name__, "a (C, N) or (R, C, N) tensor of 0/1 rewards over the enumerated responses")
    return bind(reward, dtype=dtype)


def _prepare_reward(reward: torch.Tensor, policy: EnumerablePolicy, runs: int, dtype: torch.dtype) -> torch.Tensor:
    if reward.dim() == 1:
        reward = reward.unsqueeze(0)
    if reward.dim() not in (2, 3) or reward.shape[-1] != policy.n_responses:
        _checks.fail("reward", f"shape {tuple(reward.shape)}",
                     f"(C, N) or (R, C, N) with N = {policy.n_responses} responses of the policy")
    if reward.dim() == 3 and reward.shape[0] != runs:
        _checks.fail("reward", f"{reward.shape[0]} runs", f"{runs} runs, as in theta0, or a (C, N) reward shared by all runs")
    C = reward.shape[-2]
    if policy.n_prompts not in (1, C):
        _checks.fail("reward", f"{C} prompts", f"{policy.n_prompts} prompts (the policy's), or any number for a policy shared by all prompts")
    _checks.binary("reward", reward)
    return reward.to(dtype)
