"""Token softmax with one shared softmax, EOS and a maximum length, exact for long responses.

The "linear" ``TokenSoftmax`` draws every token from the same softmax of h = Φθ until EOS (the
last token, V - 1) or the maximum length T = T_inf. Then log π(o) depends on o only through its
token counts, so responses with the same counts n = (n_0, ..., n_{V-2}) and the same ending
(EOS or truncated at T) share their probability, score and curvature:

    log π(o)       = Σ_v n_v log p_v + e·log p_EOS                 (e = 1 if o ends with EOS)
    ∇log π(o)      = Φᵀ(n, e) - ℓ·Φᵀp                              (ℓ = Σ_v n_v + e, the length)
    ∇²log π(o)     = -ℓ·Σ_Φ,   Σ_Φ = Φᵀ(diag p - p pᵀ)Φ

This policy enumerates those classes instead of the responses: its "response" k is the class
of count vector n_k and ending e_k, with log π(k) = log multinomial(n_k) + the above. Every
expectation over π (J for a reward that reads the counts, the Gradient Gap, var±, curvature, the
length distribution) is the one of the token policy, exactly, over O(T^(V-1)) classes instead of
O((V-1)^T) responses: V = 3, T = 64 is 2 145 classes for 3.7e19 responses. A class's
score and curvature are those of each of its members, not the derivatives of its log mass
(the multinomial coefficient does not depend on θ, so the two agree).

Constants are those of the "linear" TokenSoftmax: G_p = D, L_p = D²/4 with D the diameter of
the token features, G_o = G_p·T, L_o = L_p·T.
"""

from __future__ import annotations

import itertools
import math

import torch

from rlvrlab import _checks
from rlvrlab.policies.base import Constants, EnumerablePolicy

__all__ = ["MAX_CLASSES", "CountedTokenSoftmax"]

MAX_CLASSES = 1_000_000


class CountedTokenSoftmax(EnumerablePolicy):
    """One shared softmax over V tokens (EOS = V - 1), maximum length T; responses grouped by counts.

    vocab: V >= 2; max_len: T >= 1; features: (V, d) token features (h = Φθ), default the
    identity (d = V: one logit per token, the same at every step).
    Attributes: counts (N, V) long, the token counts of each class (EOS last, 0 or 1); lengths (N,).
    """

    def __init__(self, vocab: int, max_len: int, *, features: torch.Tensor | None = None):
        if not (isinstance(vocab, int) and vocab >= 2):
            _checks.fail("vocab", vocab, "an integer >= 2")
        if not (isinstance(max_len, int) and max_len >= 1):
            _checks.fail("max_len", max_len, "an integer >= 1")
        if features is None:
            features = torch.eye(vocab, dtype=torch.float64)
        _checks.shape("features", features, (vocab, None), "(V, d)")
        if features.dim() != 2:
            _checks.fail("features", f"shape {tuple(features.shape)}", "a (V, d) tensor")
        if math.comb(max_len + vocab - 1, vocab - 1) > MAX_CLASSES:
            _checks.fail("vocab/max_len", f"V={vocab}, T={max_len}",
                         f"at most {MAX_CLASSES} count classes (about C(T + V - 1, V - 1)); use fewer tokens")
        self.vocab, self.max_len, self.eos = vocab, max_len, vocab - 1
        self.features = features.to(torch.float64)
        self.n_params, self.n_prompts = self.features.shape[1], 1
        T, rows = max_len, []
        for n in itertools.product(range(T + 1), repeat=vocab - 1):
            k = sum(n)
            if k <= T - 1:
                rows.append((*n, 1))  # k content tokens, then EOS: length k + 1 <= T
            if k == T:
                rows.append((*n, 0))  # truncated at T without EOS
        self.counts = torch.tensor(rows, dtype=torch.long)  # (N, V)
        self._lengths = self.counts.sum(1)
        self.n_responses = self.counts.shape[0]
        content = self.counts[:, :-1]
        self.log_mult = (torch.lgamma(content.sum(1).double() + 1) - torch.lgamma(content.double() + 1).sum(1))  # (N,)
        self._A = self.counts.double()

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        """(R, d) -> (R, V)."""
        return theta @ self.features.to(theta.dtype).T

    def logp(self, theta: torch.Tensor) -> torch.Tensor:
        logpi = torch.log_softmax(self.logits(theta), -1)
        return (self.log_mult.to(theta.dtype) + logpi @ self._A.to(theta.dtype).T).unsqueeze(1)

    def logp_and_jvp(self, theta: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.logits(w)  # (R, V)
        mean = (torch.softmax(self.logits(theta), -1) * h).sum(-1, keepdim=True)
        proj = h @ self._A.to(h.dtype).T - self._lengths.to(h.dtype) * mean
        return self.logp(theta), proj.unsqueeze(1)

    def curvature(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p, h = torch.softmax(self.logits(theta), -1), self.logits(w)
        var = (p * h * h).sum(-1, keepdim=True) - (p * h).sum(-1, keepdim=True) ** 2
        return (-self._lengths.to(h.dtype) * var).unsqueeze(1)

    def vjp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.logits(theta), -1)
        vv = v.sum(1)  # (R, N)
        g = vv @ self._A.to(vv.dtype) - (vv * self._lengths.to(vv.dtype)).sum(-1, keepdim=True) * p  # (R, V)
        return g @ self.features.to(g.dtype)

    def expected_hessian(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.logits(theta), -1)
        F = self.features.to(p.dtype)
        cov = torch.einsum("vi,rv,vj->rij", F, p, F) - torch.einsum("rv,vi,rw,wj->rij", p, F, p, F)  # Σ_Φ (R, d, d)
        steps = (v.sum(1) * self._lengths.to(v.dtype)).sum(-1)  # Σ_o v_o ℓ_o, (R,)
        return -steps[:, None, None] * cov

    def lengths(self) -> torch.Tensor:
        return self._lengths

    def response_tokens(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A representative of each class: its content tokens in order 0, 1, ..., then EOS if it ended."""
        counts = self.counts[index]  # (..., V)
        pos = torch.arange(self.max_len)
        edges = counts.cumsum(-1)  # token v fills positions [edges[v-1], edges[v])
        tokens = (pos.view(*([1] * index.dim()), -1, 1) >= edges.unsqueeze(-2)).sum(-1).clamp(max=self.vocab - 1)
        mask = pos < self._lengths[index].unsqueeze(-1)
        return tokens.masked_fill(~mask, 0), mask

    def token_logp(self, theta: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Per-token log π of each class's representative (R, C, G, T): sums to log π(k) - log multinomial(n_k)."""
        tokens, mask = self.response_tokens(index)
        logpi = torch.log_softmax(self.logits(theta), -1)  # (R, V)
        R = theta.shape[0]
        out = logpi.gather(1, tokens.reshape(R, -1)).view(tokens.shape)
        return out * mask.to(out.dtype)

    def constants(self) -> Constants:
        T = self.max_len
        D = float(torch.cdist(self.features, self.features).max())
        return Constants(G_o=D * T, L_o=D * D / 4 * T, G_p=D, L_p=D * D / 4, T_inf=T)
