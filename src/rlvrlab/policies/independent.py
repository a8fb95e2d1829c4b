"""Token-level policies with independent positions, in closed form for any length T.

A response is T tokens drawn independently, o_t ~ softmax(h_t) over V tokens, with logits linear
in theta: tabular per position and shared by all prompts (θ of shape (T, V)), or explicit features
φ[c, t, v] (shape (C, T, V, d)) that may depend on the prompt. The reward counts the positions
where the response matches the prompt's target sequence:

    r(o | c) = 1{ #{t : o_t = target[c, t]} >= m }        (m = T: the whole sequence is right)

The response space has V^T elements (3^32 ≈ 2e15 for the experiments), but everything the theory
needs is a sum over the count of matches, so a dynamic program over positions computes it
exactly: with S = Σ_t s_t(o_t), s_t(v) = w·∇log π_t(v) the projected token score,

    M0[k] = P(count = k),  M1[k] = E[S 1{count = k}],  M2[k] = E[S² 1{count = k}]

and J = Σ_{k >= m} M0[k], E+[S] = Σ_{k >= m} M1[k] / J, E+[S²] = Σ_{k >= m} M2[k] / J (the
incorrect side over k < m, summed directly so that 1 - J stays exact as J -> 1). Gradients are
autograd through the same program. Every response has length T, so the second-order curvature
term of App. F is the same for all responses and cancels, and the psi_1 norm of the length is
T / log 2. Tests hold all of it against enumeration for small T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from rlvrlab import _checks
from rlvrlab.gap import GapStats
from rlvrlab.policies.base import Constants, init_theta
from rlvrlab.policies.model import Batch, Model

__all__ = ["CountModel", "CountReward", "IndependentSoftmax"]


@dataclass(frozen=True)
class CountReward:
    """Pass when at least ``threshold`` positions match the prompt's target: targets (C, T) long."""

    targets: torch.Tensor
    threshold: int


class IndependentSoftmax:
    """T independent positions over V tokens; tabular logits θ (T, V) shared by all prompts, or
    features (C, T, V, d) with h[c, t, v] = φ[c, t, v]·θ."""

    def __init__(self, vocab: int, length: int, *, features: torch.Tensor | None = None, lead: int = 0):
        if not (isinstance(vocab, int) and vocab >= 2):
            _checks.fail("vocab", vocab, "an integer >= 2")
        if not (isinstance(length, int) and length >= 1):
            _checks.fail("length", length, "an integer >= 1")
        if not (isinstance(lead, int) and lead >= 0):
            _checks.fail("lead", lead, "an integer >= 0")
        self.vocab, self.length, self.lead = vocab, length, lead
        if features is not None:
            _checks.shape("features", features, (length, vocab, None), "(C, T, V, d)")
            self.features = features.to(torch.float64)
            self.n_params = features.shape[-1]
        else:
            self.features = None
            self.n_params = length * vocab
        self._flat = None

    def logits(self, theta: torch.Tensor) -> torch.Tensor:
        """(R, d) -> (R, C, T, V), C = 1 for the tabular parametrization."""
        if self.features is None:
            return theta.view(theta.shape[0], 1, self.length, self.vocab)
        # a matmul: ~10x faster than the equivalent einsum here
        return self.product(theta, self.flat_features(theta.dtype).T).view(theta.shape[0], *self.features.shape[:3])

    def product(self, x: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
        """x @ mat (R, ·), with ``lead`` rows of zeros before x's: MKL computes a row by a path that
        depends on its place in the matrix (rlvrlab.experiments.phase.TILE), and a policy with
        lead = L computes every run as it would after L other runs, without simulating them."""
        if not self.lead:
            return x @ mat
        return (torch.cat([x.new_zeros(self.lead, x.shape[1]), x]) @ mat)[self.lead :]

    def flat_features(self, dtype: torch.dtype) -> torch.Tensor:
        """φ as a contiguous (C·T·V, d) matrix, made once (features are often expanded over positions,
        and reshaping them copied them at every call)."""
        if self._flat is None or self._flat.dtype != dtype:
            self._flat = self.features.to(dtype).reshape(-1, self.n_params).contiguous()
        return self._flat

    def init(self, runs: int, *, scale: float = 0.0, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """theta0 (R, d): zeros, or N(0, scale²) entries."""
        return init_theta(runs, self.n_params, scale=scale, generator=generator, dtype=dtype)

    def constants(self) -> Constants:
        T = self.length
        if self.features is None:  # orthogonal blocks per position, as for TokenSoftmax
            return Constants(G_o=math.sqrt(2.0 * T), L_o=0.5, G_p=math.sqrt(2.0), L_p=0.5, T_inf=T)
        phi = self.features.flatten(0, 1)  # (C·T, V, d)
        D = float(torch.cdist(phi, phi).max())
        return Constants(G_o=D * T, L_o=D * D / 4 * T, G_p=D, L_p=D * D / 4, T_inf=T)

    def bind(self, reward: CountReward, *, dtype: torch.dtype = torch.float64) -> CountModel:
        return CountModel(self, reward)


def _dp(p_hit: torch.Tensor, p_miss: torch.Tensor, moments: tuple[torch.Tensor, ...] | None, T: int, *,
        history: bool = False) -> list[torch.Tensor]:
    """Distribution of the match count (and of S's first two moments per count) over T positions.

    p_hit, p_miss (..., T): probabilities that position t matches / does not (the miss mass is
    summed over the other tokens, not taken as 1 - p_hit). moments: per position (a1, a0, b1, b0),
    the expectations of s·1{hit}, s·1{miss}, s²·1{hit}, s²·1{miss}, each (..., T).
    Returns [M0] or [M0, M1, M2], each (..., T + 1); history (no moments): [M0 before position 0,
    ..., after position T - 1], the T + 1 states the gradient's backward pass reads.

    Every entry is the same sum of the same products, in the same order, as the plain recursion
    M_new = p0·M + shift(p1·M) (the shifted term added in place, not through a zero-padded copy,
    and M0, M1, M2 stacked so that one product serves the three): the results are bit for bit
    those of that recursion, which tests check, and which phase's exactness relies on.
    """
    shape = (*p_hit.shape[:-1], T + 1)
    if moments is None:
        M0 = torch.zeros(shape, dtype=p_hit.dtype)
        M0[..., 0] = 1.0
        states = [M0]
        for t in range(T):
            new = p_miss[..., t : t + 1] * M0
            new[..., 1:] += p_hit[..., t : t + 1] * M0[..., :-1]
            M0 = new
            if history:
                states.append(M0)
        return states if history else [M0]
    a1, a0, b1, b0 = moments
    A1, A0 = torch.stack([a1, 2 * a1]), torch.stack([a0, 2 * a0])  # (2, ..., T): the coefficients of M0 and M1
    M = torch.zeros((3, *shape), dtype=p_hit.dtype)  # M0, M1, M2
    M[0, ..., 0] = 1.0
    for t in range(T):
        p1, p0 = p_hit[..., t : t + 1], p_miss[..., t : t + 1]
        new = p0 * M  # p0 M0, p0 M1, p0 M2
        new[1:] += A0[..., t : t + 1] * M[:2]  # + a0 M0, + 2 a0 M1
        new[2] += b0[..., t : t + 1] * M[0]
        hit = p1 * M[..., :-1]  # the same for a hit, shifted by one count
        hit[1:] += A1[..., t : t + 1] * M[:2, ..., :-1]
        hit[2] += b1[..., t : t + 1] * M[0, ..., :-1]
        new[..., 1:] += hit
        M = new
    return [M[0], M[1], M[2]]


def _dp_backward(g: torch.Tensor, p_hit: torch.Tensor, p_miss: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The gradient of a function of _dp's final M0 with respect to p_hit and p_miss (..., T), given
    its gradient g (..., T + 1) with respect to M0 and _dp's history ``states``.

    Backward through M_new = p0·M + shift(p1·M): ∂/∂M = p0·g + p1·ĝ, ∂/∂p0 = Σ_k g·M,
    ∂/∂p1 = Σ_k ĝ·M with ĝ = g shifted down one count (its last entry 0). Each product and each sum
    over counts is the one autograd forms through _dp (the same operands, the same reductions
    over T + 1 counts), so the gradient is autograd's bit for bit (tests check), without its graph.
    """
    T = len(states) - 1
    pp = torch.stack([p_miss, p_hit])  # (2, ..., T)
    B = torch.zeros((2, *g.shape), dtype=g.dtype)  # g and ĝ
    B[0] = g
    grads = torch.empty_like(pp)  # (2, ..., T): ∂/∂p0, ∂/∂p1
    for t in reversed(range(T)):
        B[1, ..., :-1] = B[0, ..., 1:]
        grads[..., t] = (B * states[t]).sum(-1)
        P = B * pp[..., t : t + 1]
        torch.add(P[0], P[1], out=B[0])
    return grads[1], grads[0]


def _log_mass(mass: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """log of a probability whose complement is ``other``: log1p(-other) where mass is near 1
    (mass itself has rounded to 1 there), log(mass) elsewhere."""
    return torch.where(mass > 0.5, torch.log1p(-other), torch.log(mass))


class _State(NamedTuple):
    """What CountModel computes once per θ: π before (R, C', T, V) and after expanding over prompts
    (R, C, T, V), the hit and miss probabilities (R, C, T), and _dp's states (R, C, T + 1) each."""

    theta: torch.Tensor
    version: int
    p_raw: torch.Tensor
    p: torch.Tensor
    hit: torch.Tensor
    miss: torch.Tensor
    states: list[torch.Tensor]


class CountModel(Model):
    """IndependentSoftmax with a CountReward: the Model interface in closed form."""

    def __init__(self, policy: IndependentSoftmax, reward: CountReward):
        targets = torch.as_tensor(reward.targets, dtype=torch.long)
        if targets.dim() == 1:
            targets = targets.unsqueeze(0)
        T, V = policy.length, policy.vocab
        if targets.dim() != 2 or targets.shape[1] != T or bool(((targets < 0) | (targets >= V)).any()):
            _checks.fail("targets", f"shape {tuple(targets.shape)}", f"(C, T) token indices in [0, {V - 1}] with T = {T}")
        if policy.features is not None and policy.features.shape[0] not in (1, targets.shape[0]):
            _checks.fail("targets", f"{targets.shape[0]} prompts", f"{policy.features.shape[0]} prompts, as the features")
        if not (isinstance(reward.threshold, int) and 1 <= reward.threshold <= T):
            _checks.fail("threshold", reward.threshold, f"an integer in [1, {T}] (matches needed out of T)")
        self.policy, self.targets, self.m = policy, targets, reward.threshold
        self.n_params, self.n_prompts = policy.n_params, targets.shape[0]
        self.T = T
        self._cache: _State | None = None

    # --- the per-position pieces ---------------------------------------------------------------

    def _probs(self, theta: torch.Tensor) -> torch.Tensor:
        """π (R, C, T, V), expanded over prompts."""
        return self._state(theta).p

    def _state(self, theta: torch.Tensor) -> _State:
        """π, the hit and miss probabilities and the count DP's history at θ, computed once per θ:
        simulate asks for the objective, the update and the statistics along it at the same θ, and
        each used to recompute π (a softmax over V = 4 is slow per element) and the DP. Kept for the
        last θ only, while it is the same tensor unchanged (its version counter); a θ that requires
        grad is never cached, so that autograd through masses sees its graph."""
        cache = self._cache
        if cache is not None and cache.theta is theta and cache.version == theta._version:
            return cache
        p_raw = torch.softmax(self.policy.logits(theta), -1)  # (R, C', T, V)
        p = p_raw.expand(theta.shape[0], self.n_prompts, self.T, self.policy.vocab)
        hit, miss = self._hit(p)
        state = _State(theta, theta._version, p_raw, p, hit, miss, _dp(hit, miss, None, self.T, history=not theta.requires_grad))
        if not theta.requires_grad:
            self._cache = state
        return state

    def _hit(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probability of matching the target at each position, and of missing it: (R, C, T) each."""
        onehot = torch.nn.functional.one_hot(self.targets, self.policy.vocab).to(p.dtype)  # (C, T, V)
        return (p * onehot).sum(-1), (p * (1 - onehot)).sum(-1)

    def _split(self, M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums over counts >= m (correct) and < m (incorrect)."""
        return M[..., self.m :].sum(-1), M[..., : self.m].sum(-1)

    # --- Model ------------------------------------------------------------------------------------

    def masses(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        J, Jm = self._split(self._state(theta).states[-1])
        return _log_mass(J, Jm), _log_mass(Jm, J)

    def along(self, theta: torch.Tensor, w: torch.Tensor, *, curvature: bool = False) -> GapStats:
        st = self._state(theta)
        p, hit, miss = st.p, st.hit, st.miss
        dl = self.policy.logits(w).expand_as(p)
        s = dl - (p * dl).sum(-1, keepdim=True)  # projected token scores (R, C, T, V)
        onehot = torch.nn.functional.one_hot(self.targets, self.policy.vocab).to(p.dtype)
        a1, b1 = (p * s * onehot).sum(-1), (p * s * s * onehot).sum(-1)
        a0, b0 = (p * s * (1 - onehot)).sum(-1), (p * s * s * (1 - onehot)).sum(-1)
        var_t = b1 + b0  # Σ_v π s² per position (Σ_v π s = 0)
        M0, M1, M2 = _dp(hit, miss, (a1, a0, b1, b0), self.T)
        J, Jm = self._split(M0)
        S1p, S1m = self._split(M1)
        S2p, S2m = self._split(M2)
        mean_p, mean_m = S1p / J, S1m / Jm
        var_p = (S2p / J - mean_p**2).clamp(min=0)
        var_m = (S2m / Jm - mean_m**2).clamp(min=0)
        nan = torch.full_like(J, math.nan)
        stats = dict(
            log_J=_log_mass(J, Jm), log_1mJ=_log_mass(Jm, J),
            mean_plus=torch.where(J > 0, mean_p, nan), mean_minus=torch.where(Jm > 0, mean_m, nan),
            var_plus=torch.where(J > 0, var_p, nan), var_minus=torch.where(Jm > 0, var_m, nan),
        )
        if curvature:  # -Σ_t Var_π(h_w): the same for every response
            curv = -var_t.sum(-1)
            stats["curv_plus"], stats["curv_minus"] = curv, curv.clone()
        return GapStats(**stats)

    def _weighted_J_gradient(self, theta: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """∇_θ Σ_c coef_c J_c (R, d), differentiating J where J < 1/2 and -(1 - J) elsewhere,
        so that the result keeps its relative precision as J -> 0 or 1.

        The backward pass written out (_dp_backward, then softmax's and the logits' own backward
        functions) on the cached forward pass: autograd's gradient bit for bit (tests hold the two
        equal), at about half its cost."""
        if theta.requires_grad:
            return self._weighted_J_gradient_autograd(theta, coef)
        st = self._state(theta)
        J, Jm = self._split(st.states[-1])
        # the objective's gradient with respect to the final count distribution, as autograd forms it
        low = J < 0.5
        zero = torch.zeros((), dtype=coef.dtype)
        g = torch.zeros_like(st.states[-1])
        g[..., self.m :] = torch.where(low, coef, zero).unsqueeze(-1)
        g[..., : self.m] = (-torch.where(low, zero, coef)).unsqueeze(-1)
        g_hit, g_miss = _dp_backward(g, st.hit, st.miss, st.states)
        onehot = torch.nn.functional.one_hot(self.targets, self.policy.vocab).to(g.dtype)  # (C, T, V)
        g_p = g_hit.unsqueeze(-1) * onehot + g_miss.unsqueeze(-1) * (1 - onehot)  # (R, C, T, V)
        g_logits = torch._softmax_backward_data(g_p.sum_to_size(st.p_raw.shape), st.p_raw, -1, st.p_raw.dtype)
        if self.policy.features is None:
            return g_logits.reshape(theta.shape)
        return self.policy.product(g_logits.reshape(theta.shape[0], -1), self.policy.flat_features(theta.dtype))

    def _weighted_J_gradient_autograd(self, theta: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """_weighted_J_gradient through autograd: the reference its written-out backward is tested
        against, and the path for a θ that requires grad."""
        t = theta.detach().requires_grad_(True)
        (M0,) = _dp(*self._hit(torch.softmax(self.policy.logits(t), -1).expand(t.shape[0], self.n_prompts, self.T,
                                                                              self.policy.vocab)), None, self.T)
        J, Jm = self._split(M0)
        objective = torch.where(J.detach() < 0.5, J, -Jm)
        return torch.autograd.grad((coef * objective).sum(), t)[0]

    def grad_J(self, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self._weighted_J_gradient(theta, weights)

    def gap_vector(self, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        log_J, log_1mJ = self.masses(theta)
        J_b = (weights * log_J.exp()).sum(-1, keepdim=True)
        Jm_b = (weights * log_1mJ.exp()).sum(-1, keepdim=True)
        ok = (J_b > 0) & (Jm_b > 0)
        return self._weighted_J_gradient(theta, weights / (J_b * Jm_b).clamp(min=1e-300)) * ok

    def expected_update(self, theta: torch.Tensor, weights: torch.Tensor, preset) -> torch.Tensor:
        """Every response has length T: token sum n = 1, every other aggregation n = 1/T (or
        1/norm); E[(r - J)∇log π] = ∇J, so the update is ∇ Σ_c weights_c n J_c / sigma_c^{std}."""
        n = {"seq-mean-token-sum": 1.0, "seq-mean-token-sum-norm": 1.0 / (preset.norm or self.T)}.get(preset.aggregation, 1.0 / self.T)
        coef = weights * n
        if preset.advantage == "mean-std":
            log_J, log_1mJ = self.masses(theta)
            sigma = (log_J + log_1mJ).mul(0.5).exp()
            coef = torch.where(sigma > 0, coef / sigma.clamp(min=1e-300), torch.zeros_like(coef))
        return self._weighted_J_gradient(theta, coef)

    def sample(self, theta: torch.Tensor, G: int, generator: torch.Generator | None = None) -> Batch:
        p = self._probs(theta)  # (R, C, T, V)
        R, C, T, V = p.shape
        tokens = torch.multinomial(p.reshape(-1, V), G, replacement=True, generator=generator)
        tokens = tokens.view(R, C, T, G).permute(0, 1, 3, 2).contiguous()  # (R, C, G, T)
        matches = (tokens == self.targets.view(1, C, 1, T)).sum(-1)
        reward = (matches >= self.m).to(theta.dtype)
        return Batch(tokens, torch.ones_like(tokens, dtype=torch.bool), reward)

    def token_logp(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        logpi = torch.log_softmax(self.policy.logits(theta), -1)  # (R, C', T, V)
        R, C, G, T = batch.tokens.shape
        logpi = logpi.expand(R, C, T, self.policy.vocab)
        return logpi.unsqueeze(2).expand(R, C, G, T, -1).gather(-1, batch.tokens.unsqueeze(-1)).squeeze(-1)

    def length_psi1(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.full((theta.shape[0],), self.T / math.log(2), dtype=theta.dtype)

    def mean_length(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.full((theta.shape[0],), float(self.T), dtype=theta.dtype)

    def constants(self) -> Constants:
        return self.policy.constants()

    def initial_logit_for(self, J0: float) -> float:
        """The target-token logit a (others 0, the same at every position) giving J = J0 on the
        tabular policy: solves P(Binomial(T, q) >= m) = J0 with q = e^a / (e^a + V - 1)."""
        lo, hi = -60.0, 60.0
        for _ in range(200):
            mid = (lo + hi) / 2
            q = 1 / (1 + (self.policy.vocab - 1) * math.exp(-mid))
            hit = torch.full((1, self.T), q, dtype=torch.float64)
            (M0,) = _dp(hit, 1 - hit, None, self.T)
            J = float(M0[0, self.m :].sum())
            lo, hi = (mid, hi) if J < J0 else (lo, mid)
        return (lo + hi) / 2
