"""Token-level autoregressive softmax policies over a finite vocabulary (Section 4, App. F.2).

A response o = (o_1, ..., o_ℓ) is generated token by token from V tokens; it ends when the EOS
token is emitted or when it reaches the maximum length T (truncated), so 1 <= ℓ <= T = T_inf.
Without an EOS token every response has length exactly T (the App. F.2 instance). With

    log π(o) = Σ_{t <= ℓ} log softmax(h_t)[o_t],

the logits h_t at step t come from one of three parametrizations, all linear in theta:

    "position"  h_t = θ[t]                       tabular per position, d = T·V
    "prefix"    h_t = θ[o_<t]                    tabular per prefix (a full tree), d = #prefixes·V
    "linear"    h_t = Φ θ                        shared linear features of the token, d = d_f,
                                                 the same at every step (App. F.2: "features of
                                                 the last token")

Each step reads the softmax of one "context" (a position, a prefix, or the single shared one), so
every response is a list of (context, token) pairs. Two count matrices hold that structure,
A[o, (c, v)] = #steps of o choosing v in context c and B[o, c] = #steps of o reading c, and every
quantity is a product with them (the token score is e_v - π_c mapped through the linear logits):

    log π(o)        = A[o] · log π_flat
    w·∇log π(o)     = A[o] · h_w - B[o] · E_π[h_w]          (h_w = logits(w))
    wᵀ∇²log π(o) w  = -B[o] · Var_π[h_w]
    Σ_o v_o ∇log π(o) = logits_adjoint( vA - (vB) ⊙ π )

dense (BLAS) when the context table is small, sparse (COO) for large prefix trees.

Regularity (Assumption 2): the token score is the feature of the chosen token minus its mean,
so G_p = D and L_p = D²/4 with D the diameter of the token features (sqrt(2) for the tabular
parametrizations). Trajectory constants (Assumption 1): for "linear" those of the proof of
Theorem 3, G_o = G_p·T_inf and L_o = L_p·T_inf (tight: every step uses the same features); for
the tabular parametrizations every step reads its own block of theta, which gives the tighter
G_o = sqrt(2·T_inf) and L_o = 1/2.
"""

from __future__ import annotations

import math

import torch

from rlvrlab import _checks
from rlvrlab.policies.base import Constants, EnumerablePolicy

__all__ = ["MAX_RESPONSES", "TokenSoftmax", "enumerate_responses"]

MAX_RESPONSES = 2_000_000
PARAMETRIZATIONS = ("position", "prefix", "linear")


def enumerate_responses(vocab: int, max_len: int, eos: int | None) -> tuple[torch.Tensor, ...]:
    """Every response of length 1..max_len, breadth first.

    Returns tokens (N, T) (padded with 0), lengths (N,), prefix ids (N, T) of the context each
    step reads in the "prefix" parametrization (padded with 0), and the number of prefixes.
    """
    count = vocab**max_len if eos is None else sum((vocab - 1) ** (t - 1) for t in range(1, max_len + 1)) + (vocab - 1) ** max_len
    if count > MAX_RESPONSES:
        _checks.fail("vocab/max_len", f"V={vocab}, T={max_len} ({count} responses)",
                     f"at most {MAX_RESPONSES} enumerated responses; use fewer tokens or a shorter maximum length")
    T = max_len
    alive_tok = torch.zeros(1, 0, dtype=torch.long)  # open prefixes, tokens so far
    alive_ctx = torch.zeros(1, 0, dtype=torch.long)  # their prefix ids per step
    next_id, done_tok, done_ctx, done_len = 0, [], [], []
    for t in range(T):
        P = alive_tok.shape[0]
        ids = torch.arange(next_id, next_id + P)
        next_id += P
        ctx = torch.cat([alive_ctx, ids.unsqueeze(1)], 1).repeat_interleave(vocab, 0)
        tok = torch.cat([alive_tok.repeat_interleave(vocab, 0), torch.arange(vocab).repeat(P).unsqueeze(1)], 1)
        stop = torch.zeros(tok.shape[0], dtype=torch.bool) if eos is None else tok[:, -1] == eos
        if t == T - 1:
            stop = torch.ones_like(stop)
        pad = T - (t + 1)
        done_tok.append(torch.nn.functional.pad(tok[stop], (0, pad)))
        done_ctx.append(torch.nn.functional.pad(ctx[stop], (0, pad)))
        done_len.append(torch.full((int(stop.sum()),), t + 1, dtype=torch.long))
        alive_tok, alive_ctx = tok[~stop], ctx[~stop]
    return torch.cat(done_tok), torch.cat(done_len), torch.cat(done_ctx), next_id


DENSE_COUNTS = 4096  # context-table size (n_ctx·V) up to which the count matrices are dense


def _counts(index: torch.Tensor, alive: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) matrix counting, per response, the alive steps at each index (dense or sparse COO)."""
    N = index.shape[0]
    rows = torch.arange(N).unsqueeze(1).expand_as(index)[alive]
    coo = torch.sparse_coo_tensor(torch.stack([rows, index[alive]]), torch.ones(int(alive.sum()), dtype=torch.float64),
                                  (N, size), check_invariants=True).coalesce()
    return coo.to_dense() if size <= DENSE_COUNTS else coo


class TokenSoftmax(EnumerablePolicy):
    """Autoregressive softmax over V tokens with optional EOS and maximum length T (one prompt).

    vocab: V; max_len: T = T_inf; eos: index of the EOS token or None;
    parametrization: "position", "prefix" or "linear"; features: (V, d_f) for "linear".
    """

    def __init__(self, vocab: int, max_len: int, *, eos: int | None = None,
                 parametrization: str = "position", features: torch.Tensor | None = None):
        if not (isinstance(vocab, int) and vocab >= 2):
            _checks.fail("vocab", vocab, "an integer >= 2")
        if not (isinstance(max_len, int) and max_len >= 1):
            _checks.fail("max_len", max_len, "an integer >= 1")
        if eos is not None and not (isinstance(eos, int) and 0 <= eos < vocab):
            _checks.fail("eos", eos, f"None or a token index in [0, {vocab - 1}]")
        _checks.choose("parametrization", parametrization, PARAMETRIZATIONS)
        if (parametrization == "linear") != (features is not None):
            _checks.fail("features", "given" if features is not None else None,
                         "a (V, d_f) tensor exactly when parametrization is 'linear'")
        self.vocab, self.max_len, self.eos, self.parametrization = vocab, max_len, eos, parametrization
        tok, length, prefix_ids, n_prefixes = enumerate_responses(vocab, max_len, eos)
        self.tokens, self._lengths = tok, length                          # (N, T), (N,)
        self.alive = torch.arange(max_len).unsqueeze(0) < length.unsqueeze(1)  # (N, T)
        if parametrization == "position":
            self.n_ctx, self.ctx = max_len, torch.arange(max_len).expand_as(tok).clone()
        elif parametrization == "prefix":
            self.n_ctx, self.ctx = n_prefixes, prefix_ids
        else:
            _checks.shape("features", features, (vocab, None), "(V, d_f)")
            self.features = features.to(torch.float64)
            self.n_ctx, self.ctx = 1, torch.zeros_like(tok)
        self.ctx = torch.where(self.alive, self.ctx, 0)
        self.flat = (self.ctx * vocab + tok).masked_fill(~self.alive, 0)  # (N, T) index into (n_ctx·V)
        self.n_prompts, self.n_responses = 1, tok.shape[0]
        self.n_params = self.features.shape[1] if parametrization == "linear" else self.n_ctx * vocab
        self._A = _counts(self.flat, self.alive, self.n_ctx * vocab)  # (N, n_ctx·V)
        self._B = _counts(self.ctx, self.alive, self.n_ctx)  # (N, n_ctx)
        self._At, self._Bt = self._A.t().coalesce() if self._A.is_sparse else self._A.t(), \
            self._B.t().coalesce() if self._B.is_sparse else self._B.t()

    # --- the linear logit map ------------------------------------------------------------------

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        """(R, d) -> (R, n_ctx, V)."""
        if self.parametrization == "linear":
            return (theta @ self.features.to(theta.dtype).T).unsqueeze(1)
        return theta.view(theta.shape[0], self.n_ctx, self.vocab)

    def logits_adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """(R, n_ctx, V) -> (R, d)."""
        if self.parametrization == "linear":
            return g.sum(1) @ self.features.to(g.dtype)
        return g.reshape(g.shape[0], -1)

    def _per_response(self, counts: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(N, K) counts times a (R, K) table: (R, N)."""
        counts = counts.to(table.dtype)
        return (counts @ table.T).T if counts.is_sparse else table @ counts.T

    def _per_entry(self, counts_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(K, N) transposed counts times per-response weights v (R, N): (R, K)."""
        counts_t = counts_t.to(v.dtype)
        return (counts_t @ v.T).T if counts_t.is_sparse else v @ counts_t.T

    # --- EnumerablePolicy ------------------------------------------------------------------------

    def logp(self, theta: torch.Tensor) -> torch.Tensor:
        logpi = torch.log_softmax(self.logits(theta), -1)
        return self._per_response(self._A, logpi.flatten(1)).unsqueeze(1)

    def logp_and_jvp(self, theta: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logpi = torch.log_softmax(self.logits(theta), -1)
        dl = self.logits(w)
        mean = (logpi.exp() * dl).sum(-1)  # (R, n_ctx)
        proj = self._per_response(self._A, dl.flatten(1)) - self._per_response(self._B, mean)
        return self._per_response(self._A, logpi.flatten(1)).unsqueeze(1), proj.unsqueeze(1)

    def curvature(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.logits(theta), -1)
        dl = self.logits(w)
        mean = (p * dl).sum(-1)
        var = (p * dl * dl).sum(-1) - mean**2
        return -self._per_response(self._B, var).unsqueeze(1)

    def vjp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.logits(theta), -1)  # (R, n_ctx, V)
        vv = v.sum(1)  # (R, N): every prompt shares π
        chosen = self._per_entry(self._At, vv).view(-1, self.n_ctx, self.vocab)
        visits = self._per_entry(self._Bt, vv)
        return self.logits_adjoint(chosen - p * visits.unsqueeze(-1))

    def lengths(self) -> torch.Tensor:
        return self._lengths

    def response_tokens(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[index], self.alive[index]

    def token_logp(self, theta: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        logpi = torch.log_softmax(self.logits(theta), -1).flatten(1)  # (R, n_ctx·V)
        flat = self.flat[index]  # (R, C, G, T)
        out = logpi.gather(1, flat.reshape(flat.shape[0], -1)).view(flat.shape)
        return out * self.alive[index].to(out.dtype)

    def constants(self) -> Constants:
        T = self.max_len
        if self.parametrization == "linear":
            # One shared softmax: a response's score sums up to T token scores in the same space.
            D = float(torch.cdist(self.features, self.features).max())
            return Constants(G_o=D * T, L_o=D * D / 4 * T, G_p=D, L_p=D * D / 4, T_inf=T)
        # Tabular: each step reads its own block of theta (a position or a prefix), so a response's
        # score is a sum of orthogonal token scores, ‖·‖² <= 2 per step, and its Hessian is block
        # diagonal with blocks -Cov_π of norm <= 1/2. Tighter than the proof's G_p·T, L_p·T.
        return Constants(G_o=math.sqrt(2.0 * T), L_o=0.5, G_p=math.sqrt(2.0), L_p=0.5, T_inf=T)

    def decode(self, index: int) -> tuple[int, ...]:
        """The token sequence of response ``index``."""
        return tuple(int(x) for x in self.tokens[index, : int(self._lengths[index])])
