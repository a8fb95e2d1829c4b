"""The interface every enumerable policy offers, with autograd defaults.

A policy holds no parameters: it is a map theta (R, d) -> log π(o | c) over C prompts and N
enumerated responses, batched over R independent runs. The theory needs it only through
directional derivatives, so the interface is

    logp(theta)               (R, C, N)  log π(o | c)
    logp_and_jvp(theta, w)    (R, C, N) twice: log π and w·∇_θ log π  (projected scores)
    vjp(theta, v)             (R, d)     Σ_{c,o} v[r,c,o] ∇_θ log π(o | c)
    curvature(theta, w)       (R, C, N)  wᵀ ∇²_θ log π(o | c) w
    expected_hessian(theta, v) (R, d, d) Σ_{c,o} v[r,c,o] ∇²_θ log π(o | c)
    scores(theta)             (R, C, N, d)  full scores, for small instances and tests

The defaults below differentiate ``logp`` with torch.func; subclasses replace them with closed
forms where they have them, and tests hold the two against each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch.func import jvp, vjp, vmap

__all__ = ["Constants", "EnumerablePolicy", "init_theta"]


def init_theta(runs: int, n_params: int, *, scale: float = 0.0, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """theta0 (R, d) for any policy: zeros, or N(0, scale²) entries."""
    theta = torch.zeros(runs, n_params, dtype=dtype)
    if scale > 0:
        theta.normal_(0.0, scale, generator=generator)
    return theta


@dataclass(frozen=True)
class Constants:
    """Regularity constants of a policy class, valid for every theta (Assumptions 1-3).

    G_o, L_o: bound on ‖∇ log π(o)‖ and its Lipschitz constant (trajectory level, Assumption 1).
    G_p, L_p: the same per token (Assumption 2); T_inf: maximum response length (Assumption 3).
    For trajectory-level policies a response is one token: G_p = G_o, L_p = L_o, T_inf = 1.
    """

    G_o: float
    L_o: float
    G_p: float
    L_p: float
    T_inf: int


class EnumerablePolicy(ABC):
    """A differentiable policy whose response space can be enumerated (see the module docstring)."""

    n_params: int
    n_prompts: int
    n_responses: int

    @abstractmethod
    def logp(self, theta: torch.Tensor) -> torch.Tensor:
        """(R, d) -> (R, C, N) log-probabilities of every response to every prompt."""

    @abstractmethod
    def constants(self) -> Constants:
        """The policy class's regularity constants (Assumptions 1-3)."""

    def lengths(self) -> torch.Tensor:
        """(N,) length in tokens of each response (1 for trajectory-level policies)."""
        return torch.ones(self.n_responses, dtype=torch.long)

    def init(self, runs: int, *, scale: float = 0.0, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """theta0 (R, d): zeros, or N(0, scale²) entries."""
        return init_theta(runs, self.n_params, scale=scale, generator=generator, dtype=dtype)

    # --- derivatives: autograd defaults ------------------------------------------------------

    def logp_and_jvp(self, theta: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log π (R, C, N) and the projected scores w·∇log π (R, C, N)."""
        return jvp(self.logp, (theta,), (w,))

    def vjp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Σ_{c,o} v[r,c,o] ∇_θ log π(o | c) for each run: (R, C, N) -> (R, d)."""
        _, pullback = vjp(self.logp, theta)
        return pullback(v)[0]

    def curvature(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """wᵀ ∇²log π(o | c) w (R, C, N): forward-over-forward differentiation."""
        return jvp(lambda t: jvp(self.logp, (t,), (w,))[1], (theta,), (w,))[1]

    def expected_hessian(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Σ_{c,o} v[r,c,o] ∇²_θ log π(o | c) with the weights v (R, C, N) held fixed: (R, d, d).

        With v = π± it is E±[∇²log π], the curvature term of the log-odds Hessian (App. F). One
        forward derivative of vjp per coordinate: d passes, for small instances and tests.
        """
        cols = [jvp(lambda t: self.vjp(t, v), (theta,), (e.expand_as(theta),))[1]
                for e in torch.eye(theta.shape[-1], dtype=theta.dtype)]
        return torch.stack(cols, -1)

    def scores(self, theta: torch.Tensor) -> torch.Tensor:
        """Full scores ∇_θ log π(o | c): (R, C, N, d). Memory R·C·N·d: small instances only.

        Run r's log π depends on theta[r] alone, so coordinate j of every run's score is one
        forward derivative along e_j placed in every row. (Calling logp on one row at a time
        would break policies whose prompts differ per run, e.g. per-run contexts.)
        """
        basis = torch.eye(theta.shape[-1], dtype=theta.dtype)
        return vmap(lambda e: jvp(self.logp, (theta,), (e.expand_as(theta),))[1], out_dims=-1)(basis)

    # --- what every experiment needs ----------------------------------------------------------

    def grad_J(self, theta: torch.Tensor, reward: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Exact ∇_θ Σ_c weights_c J_c = Σ_c weights_c Σ_o π(o|c) r(o, c) ∇log π(o|c), eq. (4).

        reward: (C, N) or (R, C, N); weights: (C,) or (R, C). Returns (R, d).

        Computed as E[(r - J) ∇log π] with r - J taken from log-sum-exps (1 - J = Σ_{r=0} π, not
        1 - Σ_{r=1} π): the baseline changes nothing in exact arithmetic, but keeps the gradient
        accurate to relative precision when J is within rounding of 1.
        """
        logp = self.logp(theta)
        correct = reward.to(torch.bool).expand(*logp.shape[:-2], reward.shape[-2], logp.shape[-1])
        logp = logp.expand_as(correct)
        J = torch.logsumexp(logp.masked_fill(~correct, -torch.inf), -1, keepdim=True).exp()
        one_minus_J = torch.logsumexp(logp.masked_fill(correct, -torch.inf), -1, keepdim=True).exp()
        v = logp.exp() * torch.where(correct, one_minus_J, -J) * weights.unsqueeze(-1)
        if v.shape[-2] != self.n_prompts:  # a policy shared by all prompts
            v = v.sum(-2, keepdim=True)
        return self.vjp(theta, v)

    def gap_vector(self, theta: torch.Tensor, reward: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The batch-level Gradient Gap g+ - g- (eq. 8, Section 5) for the prompt distribution ``weights``.

        g± = E_{P±}[∇log π] with P±(q, o) ∝ weights_q π(o|q) 1{r = 1 / 0}, computed as the
        vector-Jacobian product of P+ - P-, whose weights come from log-sum-exps: unlike
        ∇J / (J(1-J)) it stays exact when J(1-J) underflows. Returns (R, d); zero for runs where
        one side has no mass.
        """
        logp = self.logp(theta)
        correct = reward.to(torch.bool).expand(*logp.shape[:-2], reward.shape[-2], logp.shape[-1])
        lw = logp.expand_as(correct) + weights.log().unsqueeze(-1)
        side = []
        for mask in (correct, ~correct):
            lp = lw.masked_fill(~mask, -torch.inf)
            total = torch.logsumexp(lp.flatten(-2), -1)[..., None, None]
            side.append(torch.where(total > -torch.inf, (lp - total).exp(), 0.0))
        present = (side[0].flatten(-2).sum(-1) > 0) & (side[1].flatten(-2).sum(-1) > 0)
        v = (side[0] - side[1]) * present[..., None, None]
        if v.shape[-2] != self.n_prompts:  # a policy shared by all prompts
            v = v.sum(-2, keepdim=True)
        return self.vjp(theta, v)

    def response_tokens(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (..., T) and their mask of the responses ``index`` (...). A trajectory-level
        policy's response is one token: itself."""
        return index.unsqueeze(-1), torch.ones(*index.shape, 1, dtype=torch.bool)

    def token_logp(self, theta: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Per-token log π of the responses ``index`` (R, C, G), differentiable in theta: (R, C, G, T)."""
        logp = self.logp(theta)
        logp = logp.expand(theta.shape[0], index.shape[1], logp.shape[-1])
        return logp.gather(-1, index).unsqueeze(-1)

    def sample(self, theta: torch.Tensor, G: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Indices (R, C, G) of G responses drawn from π(· | c) for every run and prompt."""
        p = self.logp(theta).exp()
        R, C, N = p.shape
        idx = torch.multinomial(p.reshape(R * C, N), G, replacement=True, generator=generator)
        return idx.view(R, C, G)
