"""Trajectory-level softmax policies whose logits are linear in theta.

    π(o | c) = softmax_o( h_θ(c, o) ),   h linear in θ:  h_θ(c, o) = ⟨φ(c, o), θ⟩

The bandit (φ = one-hot arm), the contextual bandit of §6.1 (φ = x_c ⊗ e_o), and the App. F.1
lower-bound instance (explicit φ) are all of this form. Linearity gives every derivative in closed
form (the defaults of ``EnumerablePolicy`` are kept only as the reference in tests):

    score     ∇ log π(o|c)        = φ(c, o) - E_π[φ(c, ·)]
    jvp       w·∇ log π(o|c)      = h_w(c, o) - E_π[h_w(c, ·)]
    Hessian   ∇² log π(o|c)       = -Cov_π(φ(c, ·))      (the same for every o)

and the regularity constants of Assumption 1: with D the largest distance between two feature
vectors of one prompt, G_o = D (the score is φ minus a point of the convex hull) and
L_o = D²/4 (the largest variance of a distribution on a set of diameter D). For the App. F.1
instance the paper states L_o = 0; the score does depend on θ through E_π[φ], so we use D²/4,
which still satisfies the theorem's premise G_o >= sqrt(L_o).
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch

from rlvrlab import _checks
from rlvrlab.policies.base import Constants, EnumerablePolicy

__all__ = ["FeatureSoftmax", "LinearContextualSoftmax", "LinearSoftmax", "TabularSoftmax"]


class LinearSoftmax(EnumerablePolicy):
    """Softmax over N responses per prompt with logits linear in theta."""

    @abstractmethod
    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        """(R, d) -> (R, C, N); linear, so logits(w) is also the directional derivative along w."""

    @abstractmethod
    def logits_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """(R, C, N) -> (R, d), the adjoint of ``logits``: ⟨logits(θ), v⟩ = ⟨θ, adjoint(v)⟩."""

    @abstractmethod
    def feature_diameter(self) -> float:
        """Largest ‖φ(c, o) - φ(c, o')‖ over prompts c and response pairs."""

    def logp(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits(theta), dim=-1)

    def logp_and_jvp(self, theta: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = self.logp(theta)
        dl = self.logits(w)
        return logp, dl - (logp.exp() * dl).sum(-1, keepdim=True)

    def vjp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.logp(theta).exp()
        return self.logits_adjoint(v - p * v.sum(-1, keepdim=True))

    def curvature(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p = self.logp(theta).exp()
        dl = self.logits(w)
        mean = (p * dl).sum(-1, keepdim=True)
        var = (p * (dl - mean) ** 2).sum(-1, keepdim=True)
        return (-var).expand_as(dl)

    def constants(self) -> Constants:
        D = self.feature_diameter()
        return Constants(G_o=D, L_o=D * D / 4, G_p=D, L_p=D * D / 4, T_inf=1)


class TabularSoftmax(LinearSoftmax):
    """The K-armed bandit: theta are the K logits themselves; one prompt (App. I.1, App. E)."""

    def __init__(self, arms: int):
        if not (isinstance(arms, int) and arms >= 2):
            _checks.fail("arms", arms, "an integer >= 2")
        self.n_params = self.n_responses = arms
        self.n_prompts = 1

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        return theta.unsqueeze(1)

    def logits_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return v.sum(1)

    def feature_diameter(self) -> float:
        return math.sqrt(2.0)


class FeatureSoftmax(LinearSoftmax):
    """Explicit features: h_θ(c, o) = ⟨φ[c, o], θ⟩ with φ of shape (C, N, d) (App. F.1)."""

    def __init__(self, features: torch.Tensor):
        if features.dim() == 2:
            features = features.unsqueeze(0)
        _checks.shape("features", features, (None, None, None), "(C, N, d) or (N, d)")
        if features.shape[1] < 2 or not bool(torch.isfinite(features).all()):
            _checks.fail("features", f"shape {tuple(features.shape)}", "finite features for N >= 2 responses")
        self.features = features.to(torch.float64)
        self.n_prompts, self.n_responses, self.n_params = features.shape

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.einsum("cnd,rd->rcn", self.features.to(theta.dtype), theta)

    def logits_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return torch.einsum("rcn,cnd->rd", v, self.features.to(v.dtype))

    def feature_diameter(self) -> float:
        return float(torch.cdist(self.features, self.features).max())


class LinearContextualSoftmax(LinearSoftmax):
    """The contextual bandit of §6.1: logits ℓ(x) = θᵀx over N arms, θ of shape (d_x, N).

    contexts: (C, d_x), shared by all runs, or (R, C, d_x), one set per run. theta is stored
    flat, (R, d_x·N), row-major in (d_x, N).
    """

    def __init__(self, contexts: torch.Tensor, arms: int):
        if contexts.dim() == 2:
            contexts = contexts.unsqueeze(0)
        _checks.shape("contexts", contexts, (None, None, None), "(C, d_x) or (R, C, d_x)")
        if not (isinstance(arms, int) and arms >= 2):
            _checks.fail("arms", arms, "an integer >= 2")
        self.contexts = contexts.to(torch.float64)  # (R or 1, C, d_x)
        self.n_prompts, self.dx = contexts.shape[1], contexts.shape[2]
        self.n_responses = arms
        self.n_params = self.dx * arms

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        X = self.contexts.to(theta.dtype)
        return X @ theta.view(theta.shape[0], self.dx, self.n_responses)

    def logits_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        X = self.contexts.to(v.dtype)
        return (X.transpose(-1, -2) @ v).reshape(v.shape[0], self.n_params)

    def feature_diameter(self) -> float:
        # ‖x ⊗ e_o - x ⊗ e_o'‖ = sqrt(2)·‖x‖ for o != o'.
        return math.sqrt(2.0) * float(self.contexts.norm(dim=-1).max())
