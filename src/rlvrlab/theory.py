"""Closed forms of "On the Optimization Dynamics of RLVR: Gradient Gap and Step Size Thresholds".

Equation numbers refer to ../shared/papers/gradient-gap-step-size-thresholds.txt. Everything here
is a formula: no sampling, no policies. Arguments are Python numbers or tensors (broadcast
together); a function returns a float when every argument was a number, a float64 tensor otherwise.

Constants follow the paper: G_o, L_o bound the trajectory score and its Lipschitz constant
(Assumption 1); G_p, L_p the same per token (Assumption 2); T_inf and T_psi1 bound the response
length and its psi_1 (Orlicz) norm (Assumption 3).

Two places where this module departs from the printed text, both checked numerically in tests:
- Thm 1(a) prints the ceiling with exp(+(C0 + C0')); the proof (App. C.1.1) gives
  exp(-(C0 + C0')), the only sign under which it is a ceiling at all. We implement the proof.
- App. F prints the second-order term as (Var+ - Var-)·eta²; the Taylor expansion of the log-MGFs
  of Lemma 3 gives half of that (plus a curvature term that vanishes for softmax policies with
  logits linear in theta). We implement the expansion; see `log_odds_change_second_order`.
One place where the printed text is right but its proof does not show it: Theorem 6(b)'s constant
2·L_o (see `gradient_norm_sq_bound`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from rlvrlab import _checks

Number = float | torch.Tensor
_ROUNDING = 1e-12

__all__ = [
    "CollapseWindow",
    "bandit_delta_mu",
    "bandit_delta_mu_symmetric",
    "collapse_J",
    "collapse_alignment_bound",
    "collapse_delta",
    "collapse_window_token",
    "collapse_window_trajectory",
    "critical_lr_drgrpo",
    "critical_lr_grpo",
    "effective_step_drgrpo",
    "effective_step_grpo",
    "eta_crit_second_order",
    "gradient_norm_sq_bound",
    "grpo_plateau",
    "lemma1_band",
    "lemma2_penalty",
    "lemma2_step_cap",
    "linear_rate_error_bound",
    "linear_rate_step",
    "linear_rate_steps",
    "log_odds",
    "log_odds_change_second_order",
    "logistic_lower_bound",
    "psi1_norm",
    "second_order_penalty_bound",
    "smoothness_step_cap",
    "stagnation_ceiling",
    "step_condition_token",
    "step_condition_trajectory",
    "theorem6_alignment_floor",
    "theorem6_error_bound",
    "theorem6_gradient_term",
    "theorem6_gradient_term_proof",
    "theory_step_cap",
]


def _t(x: Number) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _out(value: torch.Tensor, *args: Number) -> Number:
    """A float when every input was a plain number, else the tensor."""
    if all(isinstance(a, (int, float)) for a in args):
        return float(value)
    return value


def _logit(J: torch.Tensor) -> torch.Tensor:
    return torch.log(J) - torch.log1p(-J)


def log_odds(J: Number) -> Number:
    """log(J / (1 - J)), the coordinate in which the theory is linear (eq. 14)."""
    _checks.probability("J", J)
    return _out(_logit(_t(J)), J)


# --- Convergence and stagnation (Theorem 1, Corollary 3.1, Theorem 3) -------------------------


def logistic_lower_bound(J0: Number, M: Number) -> Number:
    """Lower bound on J(K) given the cumulative Gap Alignment M(K) (eq. 13b, 15b, 21).

        J(K) >= J0 / (J0 + (1 - J0) * exp(-M / 2))

    Holds when every step size satisfied (13a) (trajectory level) or (15a) (token level).
    Computed as sigmoid(logit(J0) + M/2), exact at J0 in {0, 1}.
    """
    _checks.probability("J0", J0)
    return _out(torch.sigmoid(_logit(_t(J0)) + _t(M) / 2), J0, M)


def stagnation_ceiling(J0: Number, C0: Number, C0_prime: Number) -> Number:
    """Ceiling on J(K) when the alignment signal stays bounded (Theorem 1(a), proof in App. C.1.1).

    If sum_k Delta_mu(k)·eta_k <= C0 (in particular if M(K) <= C0) and
    (L_o + 8 G_o²)·sum_k eta_k² <= C0', then

        J(K) <= J0 / (J0 + (1 - J0) * exp(-(C0 + C0'))) < 1.

    The theorem's statement prints exp(+(C0 + C0')), which would put the ceiling below J0; the
    proof's telescoped inequality (28) gives the sign used here.
    """
    _checks.probability("J0", J0)
    return _out(torch.sigmoid(_logit(_t(J0)) + _t(C0) + _t(C0_prime)), J0, C0, C0_prime)


def smoothness_step_cap(L_o: Number) -> Number:
    """eta <= 1 / (2 sqrt(L_o)): the step-size premise of Lemma 1 and Theorem 1 (inf when L_o = 0)."""
    _checks.finite_nonneg("L_o", L_o)
    L = _t(L_o)
    return _out(torch.where(L > 0, 0.5 / torch.sqrt(L), torch.full_like(L, math.inf)), L_o)


def step_condition_trajectory(delta_mu: Number, L_o: Number, G_o: Number) -> Number:
    """Largest step allowed by (13a): eta_k <= [Delta_mu(k)]_+ / (2 (L_o + 8 G_o²))."""
    _checks.finite_nonneg("L_o", L_o)
    _checks.finite_nonneg("G_o", G_o)
    dm = _t(delta_mu).clamp(min=0)
    return _out(dm / (2 * (_t(L_o) + 8 * _t(G_o) ** 2)), delta_mu, L_o, G_o)


def linear_rate_step(delta_mu: Number, L_o: Number, G_o: Number) -> Number:
    """Fixed step of Corollary 3.1: min{Delta_mu / (2 (L_o + 8 G_o²)), 1 / (2 sqrt(L_o))}."""
    a = _t(step_condition_trajectory(delta_mu, L_o, G_o))
    b = _t(smoothness_step_cap(L_o))
    return _out(torch.minimum(a, b), delta_mu, L_o, G_o)


def linear_rate_error_bound(J0: Number, delta_mu: Number, eta: Number, K: Number) -> Number:
    """Corollary 3.1: 1 - J(K) <= (1 - J0)/J0 · exp(-Delta_mu·eta·K / 2) under a uniform gap."""
    _checks.probability("J0", J0)
    J0t = _t(J0)
    return _out((1 - J0t) / J0t * torch.exp(-_t(delta_mu) * _t(eta) * _t(K) / 2), J0, delta_mu, eta, K)


def step_condition_token(
    delta_mu: Number, J: Number, L_p: Number, G_p: Number, T_inf: Number, T_psi1: Number
) -> Number:
    """Largest step allowed by (15a), the token-level condition of Theorem 3:

        eta_k <= min{ ([Delta_mu]_+ / 2) / (L_p T_inf + G_p² min{T_psi1 / (1 - J), 8 T_inf²}),
                      1 / (2 sqrt(L_p T_inf + G_p² T_psi1)) }
    """
    _checks.probability("J", J)
    for name, v in (("L_p", L_p), ("G_p", G_p), ("T_inf", T_inf), ("T_psi1", T_psi1)):
        _checks.finite_nonneg(name, v)
    dm, Jt, Lp, Gp, Ti, Tp = map(_t, (delta_mu, J, L_p, G_p, T_inf, T_psi1))
    length_term = torch.minimum(Tp / (1 - Jt), 8 * Ti**2)  # 1/(1-J) = inf at J = 1: min picks 8 T²
    first = (dm.clamp(min=0) / 2) / (Lp * Ti + Gp**2 * length_term)
    second = 0.5 / torch.sqrt(Lp * Ti + Gp**2 * Tp)
    return _out(torch.minimum(first, second), delta_mu, J, L_p, G_p, T_inf, T_psi1)


def linear_rate_steps(J0: Number, delta_mu: Number, eta: Number, target: Number) -> Number:
    """Steps after which Corollary 3.1's bound guarantees J(K) >= target: the bound
    (1 - J0)/J0·exp(-Delta_mu·eta·K/2) <= 1 - target solved for K,

        K >= 2·log((1 - J0) / (J0·(1 - target))) / (Delta_mu·eta)

    (not rounded up; <= 0 when J0 >= target already).
    """
    _checks.probability("J0", J0)
    _checks.probability("target", target)
    J0t, tt = _t(J0), _t(target)
    K = 2 * torch.log((1 - J0t) / (J0t * (1 - tt))) / (_t(delta_mu) * _t(eta))
    return _out(K, J0, delta_mu, eta, target)


# --- One-step log-odds change (Lemmas 1 and 2) -----------------------------------------------


def lemma1_band(eta: Number, L_o: Number, G_o: Number) -> Number:
    """Half-width of Lemma 1's band (27), valid when eta <= 1/(2 sqrt(L_o)):

        |Δ log-odds - Delta_mu·eta| <= (L_o + 8 G_o²) eta²
    """
    _checks.finite_nonneg("eta", eta)
    return _out((_t(L_o) + 8 * _t(G_o) ** 2) * _t(eta) ** 2, eta, L_o, G_o)


def lemma2_step_cap(G_p: Number, T_psi1: Number) -> Number:
    """Premise (30a) of Lemma 2: eta <= 1 / sqrt(2 G_p² T_psi1)."""
    return _out(1 / torch.sqrt(2 * _t(G_p) ** 2 * _t(T_psi1)), G_p, T_psi1)


def lemma2_penalty(eta: Number, J: Number, L_p: Number, G_p: Number, T_inf: Number, T_psi1: Number) -> Number:
    """Second-order penalty of Lemma 2 (30b), the token-level inequality (19):

        Δ log-odds >= Delta_mu·eta - (L_p T_inf + G_p² T_psi1 / (1 - J)) eta²
    """
    _checks.finite_nonneg("eta", eta)
    _checks.probability("J", J)
    Jt = _t(J)
    coef = _t(L_p) * _t(T_inf) + _t(G_p) ** 2 * _t(T_psi1) / (1 - Jt)
    return _out(coef * _t(eta) ** 2, eta, J, L_p, G_p, T_inf, T_psi1)


# --- Collapse (Theorems 2 and 4) ---------------------------------------------------------------


class CollapseWindow(NamedTuple):
    """Step sizes [low, high] for which the paper's instance collapses; ``valid`` says whether the
    theorem's premise on Delta_mu holds (and so whether the window is a statement at all), up to a
    relative rounding tolerance of 1e-12 at the boundary."""

    low: float
    high: float
    valid: bool


def collapse_window_trajectory(delta_mu: float, L_o: float, G_o: float) -> CollapseWindow:
    """Theorem 2 (52): with 0 < Delta_mu <= sqrt(L_o + G_o²)/120 and G_o >= sqrt(L_o), every fixed
    eta in [60 Delta_mu / (L_o + G_o²), 1 / (2 sqrt(L_o + G_o²))] drives J to 0 on the App. F.1 instance."""
    s = L_o + G_o**2
    valid = 0 < delta_mu <= math.sqrt(s) / 120 * (1 + _ROUNDING) and G_o**2 >= L_o
    return CollapseWindow(60 * delta_mu / s, 1 / (2 * math.sqrt(s)), valid)


def collapse_window_token(delta_mu: float, L_p: float, G_p: float, T_inf: int) -> CollapseWindow:
    """Theorem 4 (16): with 0 < Delta_mu <= sqrt(L_p T^½ + G_p² T)/240 and G_p >= sqrt(L_p), every
    fixed eta in [120 Delta_mu / (L_p T^½ + G_p² T), 1 / (2 sqrt(L_p T^½ + G_p² T))] collapses the
    App. F.2 instance (T = T_inf)."""
    s = L_p * math.sqrt(T_inf) + G_p**2 * T_inf
    valid = 0 < delta_mu <= math.sqrt(s) / 240 * (1 + _ROUNDING) and G_p**2 >= L_p
    return CollapseWindow(120 * delta_mu / s, 1 / (2 * math.sqrt(s)), valid)


def collapse_delta(eta: Number, G: Number, T_inf: int | None = None) -> Number:
    """The drift delta of App. F's prescribed direction w_k = (1/3)((-1)^k·2, -delta):
    eta·G_o/15 on the trajectory-level instance (53, F.1: T_inf None), eta·G_p/10 on the
    token-level one (58, F.2)."""
    _checks.finite_nonneg("eta", eta)
    return _out(_t(eta) * _t(G) / (15 if T_inf is None else 10), eta, G)


def collapse_J(eta: Number, delta: Number, G: Number, k: Number, T_inf: int | None = None) -> Number:
    """J(k) on App. F's instance with theta_0 = (eta/3)(-1, 0) (51, 56), the direction (53)/(58)
    with drift delta and the fixed step eta (the proofs of Theorems 2 and 4):

        J(k) = (1 / (1 + (e^{eta G/6} + e^{-eta G/6})·e^{delta·eta·G·k/6}))^T

    with T = T_inf at the token level (F.2: the all-o1 response) and T = 1 at the trajectory level
    (F.1: T_inf None). Decreasing in k towards 0 whenever delta·eta > 0. Arguments broadcast.
    """
    _checks.finite_nonneg("eta", eta)
    a = _t(eta) * _t(G) / 6
    per_token = 1 / (1 + (torch.exp(a) + torch.exp(-a)) * torch.exp(_t(delta) * a * _t(k)))
    return _out(per_token ** (1 if T_inf is None else T_inf), eta, delta, G, k)


def collapse_alignment_bound(eta: Number, G: Number, T_inf: int | None = None) -> Number:
    """The proofs' lower bound on the Gap Alignment along App. F's direction at every step:
    eta·G_o²/30 (F.1, T_inf None) and T_inf·eta·G_p²/60 (F.2). With eta inside the window (52)/(16)
    it is >= the theorem's Delta_mu_q."""
    _checks.finite_nonneg("eta", eta)
    e, Gt = _t(eta), _t(G)
    bound = e * Gt**2 / 30 if T_inf is None else T_inf * e * Gt**2 / 60
    return _out(bound, eta, G)


# --- Theorem 6 and Remark 1 (App. G) ----------------------------------------------------------


def theorem6_alignment_floor(J0: Number, J: Number) -> Number:
    """The least cumulative alignment M(K) with which J(K) = J can be reached from J(0) = J0 under
    Theorem 6's step condition (61), from the first lines of its proof of (a):

        log-odds(K) - log-odds(0) <= Σ Delta_mu·eta + (L_o + 8 G_o²) Σ eta² <= (3/2)·M(K)

    (Lemma 1's upper side, then (L_o + 8 G_o²)·eta_k <= [Delta_mu]_+/2 by (61)), so

        M(K) >= (2/3)·(logit J - logit J0),

    which grows like (2/3)·log(1/(1 - J)) as J -> 1: J -> 1 forces M -> inf (Theorem 6(a)).
    """
    _checks.probability("J0", J0)
    _checks.probability("J", J)
    return _out(2 * (_logit(_t(J)) - _logit(_t(J0))) / 3, J0, J)


def theorem6_error_bound(J0: Number, M: Number) -> Number:
    """b(M) = (1 - J0) / (1 - J0 + J0·exp(M/2)), the bound on 1 - J(k) that (13b) gives after a
    cumulative alignment M = M(k), and the summand of Theorem 6(b). Computed as
    sigmoid(-(logit J0 + M/2)), so that it keeps its relative precision when it is tiny."""
    _checks.probability("J0", J0)
    return _out(torch.sigmoid(-(_logit(_t(J0)) + _t(M) / 2)), J0, M)


def theorem6_gradient_term(J0: Number, M: Number, L_o: Number) -> Number:
    """One term of Theorem 6(b)'s printed bound, 2·L_o·b(M(k)):

        Σ_k ‖∇J(θ_k)‖² < 2 L_o Σ_k (1 - J0) / (1 - J0 + J0·exp(M(k)/2))     under (61).

    The printed constant is right, though the printed proof does not show it (it shows
    ``theorem6_gradient_term_proof``); the step it misses is ``gradient_norm_sq_bound``.
    """
    _checks.finite_nonneg("L_o", L_o)
    return _out(2 * _t(L_o) * _t(theorem6_error_bound(J0, _t(M))), J0, M, L_o)


def theorem6_gradient_term_proof(J0: Number, M: Number, G_o: Number) -> Number:
    """What Theorem 6(b)'s printed proof gives per term: from (9) and ‖g±‖ <= G_o,
    ‖∇J‖ = J(1 - J)‖g+ - g-‖ <= 2 G_o (1 - J) <= 2 G_o·b(M(k)), hence the term 4 G_o²·b(M(k))².
    It does not imply the printed 2·L_o·b(M(k)) (for a softmax 4 G_o² = 16 L_o, so it is larger
    wherever b > 1/8); both sums are finite once M grows linearly."""
    _checks.finite_nonneg("G_o", G_o)
    return _out(4 * _t(G_o) ** 2 * _t(theorem6_error_bound(J0, _t(M))) ** 2, J0, M, G_o)


def gradient_norm_sq_bound(J: Number, L_o: Number) -> Number:
    """‖∇J‖² <= L_o·J(1 - J) for every policy under Assumption 1 (derived here; not in the paper).

    With s = ∇log π and u any unit vector, eq. (4) with the exact baseline gives
    u·∇J = Cov(r, u·s) <= sqrt(Var r · Var(u·s)) = sqrt(J(1 - J)·uᵀF u), F = E[s sᵀ] the Fisher
    information (E s = 0); the information identity F = -E[∇²log π] and the Lipschitz score of
    Assumption 1 (‖∇²log π‖ <= L_o) give uᵀF u <= L_o. Take u = ∇J/‖∇J‖.

    This is what Theorem 6(b)'s printed constant needs: under (61), 1 - J(k) <= b(M(k)) by (13b),
    so Σ‖∇J_k‖² <= L_o Σ J_k(1 - J_k) <= L_o Σ b(M(k)) < 2 L_o Σ b(M(k)). So the printed 2·L_o is
    not a typo (unlike Theorem 1(a)'s sign): it holds, with a factor 2 to spare. It is tight: on
    App. E's two-response softmax (L_o = 1/2, ‖∇J‖² = 2J²(1 - J)²) equality holds at J = 1/2.
    """
    _checks.probability("J", J)
    _checks.finite_nonneg("L_o", L_o)
    Jt = _t(J)
    return _out(_t(L_o) * Jt * (1 - Jt), J, L_o)


# --- GRPO and Dr. GRPO (Section 4, eq. 17-18) --------------------------------------------------


def effective_step_grpo(alpha: Number, delta_mu: Number, J: Number, T_psi1: Number) -> Number:
    """GRPO's effective step along the Gradient Gap, eq. (17): eta ≍ alpha·Delta_mu·sqrt(J(1-J))/T_psi1.

    The ≍ hides constants of order one; the form is what the theory compares with (18).
    """
    _checks.probability("J", J)
    Jt = _t(J)
    return _out(_t(alpha) * _t(delta_mu) * torch.sqrt(Jt * (1 - Jt)) / _t(T_psi1), alpha, delta_mu, J, T_psi1)


def effective_step_drgrpo(alpha: Number, delta_mu: Number, J: Number) -> Number:
    """Dr. GRPO's (and REINFORCE's) effective step, eq. (17): eta ≍ alpha·Delta_mu·J(1-J)."""
    _checks.probability("J", J)
    Jt = _t(J)
    return _out(_t(alpha) * _t(delta_mu) * Jt * (1 - Jt), alpha, delta_mu, J)


def theory_step_cap(delta_mu: Number, J: Number, T_psi1: Number) -> Number:
    """The theory's cap (18), condition (15a) with L_p << G_p²: eta ≲ Delta_mu·(1 - J)/T_psi1."""
    _checks.probability("J", J)
    return _out(_t(delta_mu) * (1 - _t(J)) / _t(T_psi1), delta_mu, J, T_psi1)


def grpo_plateau(alpha: Number, c: Number) -> Number:
    """Where GRPO at a fixed rate alpha stops improving, by eq. (17)-(18): its effective step
    alpha·Delta_mu·sqrt(J(1-J))/T exceeds c times the cap Delta_mu·(1-J)/T once
    alpha·sqrt(J/(1-J)) > c, i.e. above

        J* = 1 / (1 + (alpha/c)²).

    c absorbs the constants the ≍ of (17) and the ≲ of (18) hide (fitted: analysis.fit_plateau).
    """
    _checks.finite_nonneg("alpha", alpha)
    return _out(1 / (1 + (_t(alpha) / _t(c)) ** 2), alpha, c)


def critical_lr_grpo(J: Number) -> Number:
    """The learning rate at which GRPO's effective step (17), alpha·Delta_mu·sqrt(J(1-J))/T_psi1,
    meets the cap (18), Delta_mu·(1-J)/T_psi1, up to the constants (17)-(18) hide:

        alpha* = sqrt((1 - J)/J),

    which falls like (1 - J)^(1/2) as J -> 1 (log-log slope against 1 - J: 1/(2J)). The step along
    the unit direction, eta, has the cap's exponent 1 whatever the preset; GRPO's division by
    sigma = sqrt(J(1-J)) takes 1/2 of it back, since its update's norm falls only like (1-J)^(1/2).
    """
    _checks.probability("J", J)
    Jt = _t(J)
    return _out(torch.sqrt((1 - Jt) / Jt), J)


def critical_lr_drgrpo(J: Number, T_psi1: Number = 1.0) -> Number:
    """As ``critical_lr_grpo`` for Dr. GRPO and REINFORCE, whose effective step (17) is
    alpha·Delta_mu·J(1-J): alpha* = 1/(J·T_psi1), flat as J -> 1 (log-log slope (1 - J)/J -> 0):
    the update's norm falls like (1 - J), as fast as the cap."""
    _checks.probability("J", J)
    return _out(1 / (_t(J) * _t(T_psi1)), J, T_psi1)


# --- Response length (Assumption 3) ------------------------------------------------------------


def second_order_penalty_bound(L_p: Number, mean_length_plus: Number, J: Number) -> Number:
    """A bound on the η -> 0 penalty coefficient (Δμ·η - Δ log-odds)/η² over unit directions,
    derived here (not in the paper) for policies whose token log-probabilities have Hessians
    bounded by L_p (softmax with logits linear in θ):

        ½ L_p·E+|o| / (1 - J)

    From calculus, ∇² log-odds = ∇² log J / (1 - J) + J (g+ - g-)(g+ - g-)ᵀ, and by the Fisher
    identity -∇² log J = E+[-∇²log π] - Cov+(∇log π) ≼ L_p·E+|o|. The variance term that (46b)
    bounds with G_p² T_psi1 cancels at second order; what remains is the curvature of the
    correct responses, E+|o| their mean length. (Lemma 2's coefficient bounds it by
    L_p T_inf + G_p² T_psi1 / (1 - J).)
    """
    Jt = _t(J)
    return _out(_t(L_p) * _t(mean_length_plus) / (2 * (1 - Jt)), L_p, mean_length_plus, J)


def psi1_norm(lengths: torch.Tensor | list[float], weights: torch.Tensor | None = None) -> torch.Tensor:
    """The psi_1 (Orlicz) norm inf{a > 0 : E exp(|X| / a) <= 2} (Assumption 3, footnote 3).

    lengths: (..., n) a sample of response lengths, or the support of a distribution.
    weights: (..., n) probabilities of those values (summing to 1); None means the empirical
             distribution of the sample. Leading dimensions are batch.
    Returns (...,). Solved by bisection between the bounds E|X|/log 2 <= a <= max|X|/log 2
    (Jensen and the trivial bound), to float64 precision.
    """
    x = _t(lengths).abs()
    if x.dim() == 0 or x.shape[-1] == 0:
        _checks.fail("lengths", "an empty sample", "at least one length")
    if weights is None:
        logw = torch.full_like(x, -math.log(x.shape[-1]))
    else:
        w = _t(weights)
        _checks.shape("weights", w, tuple(x.shape), "(..., n) like lengths")
        if bool((w < 0).any()) or not torch.allclose(w.sum(-1), torch.ones(()).double(), atol=1e-9):
            _checks.fail("weights", "weights that are not probabilities", "non-negative weights summing to 1")
        logw = torch.log(w)
    mean = (logw.exp() * x).sum(-1)
    hi = x.amax(-1) / math.log(2)
    lo = mean / math.log(2)
    zero = hi == 0
    hi = torch.where(zero, torch.ones_like(hi), hi)
    lo = torch.where(zero, torch.ones_like(lo), lo).clamp(max=hi)

    def excess(a: torch.Tensor) -> torch.Tensor:  # log E exp(X/a) - log 2, decreasing in a
        return torch.logsumexp(logw + x / a.unsqueeze(-1), dim=-1) - math.log(2)

    for _ in range(200):
        mid = (lo + hi) / 2
        too_small = excess(mid) > 0
        lo = torch.where(too_small, mid, lo)
        hi = torch.where(too_small, hi, mid)
        if bool(((hi - lo) <= 1e-15 * hi).all()):
            break
    return torch.where(zero, torch.zeros_like(hi), hi)


# --- Second order (App. F) --------------------------------------------------------------------


def log_odds_change_second_order(
    eta: Number,
    delta_mu: Number,
    var_plus: Number,
    var_minus: Number,
    curv_plus: Number = 0.0,
    curv_minus: Number = 0.0,
) -> Number:
    """Second-order expansion of the one-step log-odds change (App. F, via Lemma 3).

    With s(o) = w·∇log π(o) and h(o) = wᵀ∇²log π(o) w, a step theta + eta·w changes
    log π(o) by eta·s + eta²·h/2 + O(eta³), and Lemma 3's log-MGFs expand as

        Δ log-odds = Delta_mu·eta + ½ (Var+ - Var- + E+[h] - E-[h]) eta² + O(eta³).

    The paper prints (Var+ - Var-)·eta² without the ½ and without the curvature term; the
    curvature term is exactly 0 when h does not depend on the response (softmax policies with
    logits linear in theta: bandits, the App. F instances, fixed-length token policies).
    curv_plus / curv_minus are E+[h] and E-[h].
    """
    e = _t(eta)
    c2 = (_t(var_plus) - _t(var_minus) + _t(curv_plus) - _t(curv_minus)) / 2
    return _out(_t(delta_mu) * e + c2 * e**2, eta, delta_mu, var_plus, var_minus, curv_plus, curv_minus)


def eta_crit_second_order(
    delta_mu: Number, var_plus: Number, var_minus: Number, curv_gap: Number = 0.0
) -> Number:
    """Step size at which the second-order log-odds change turns negative (App. F; DESIGN.md):

        eta_crit = 2·Delta_mu / (Var- - Var+ - (E+[h] - E-[h]))   when Delta_mu > 0 and the
                                                                  denominator is > 0,
        +inf  when Delta_mu > 0 and the denominator is <= 0 (no second-order threshold),
        0     when Delta_mu <= 0 (every small step already lowers the log-odds).

    curv_gap is E+[h] - E-[h] (0 for linear-logit softmax policies).
    """
    dm = _t(delta_mu)
    den = _t(var_minus) - _t(var_plus) - _t(curv_gap)
    dm, den = torch.broadcast_tensors(dm, den)
    crit = torch.where(den > 0, 2 * dm / den.where(den > 0, torch.ones_like(den)), torch.full_like(den, math.inf))
    crit = torch.where(dm > 0, crit, torch.zeros_like(crit))
    return _out(crit, delta_mu, var_plus, var_minus, curv_gap)


# --- Worked examples (App. I.1) ----------------------------------------------------------------


def bandit_delta_mu(pi: torch.Tensor, best: int) -> torch.Tensor:
    """App. I.1: the Gap Alignment of w = ∇J (exact REINFORCE, not normalized) on a tabular softmax
    bandit whose only rewarded arm is a* = ``best``, from eq. (9):

        Delta_mu = π*(1 - π*) + π*·Σ_{a≠a*} π_a² / (1 - π*)

    pi: (..., K) the arms' probabilities -> (...). Undefined (0/0) where π* = 1.
    """
    pi = _t(pi)
    K = pi.shape[-1]
    if isinstance(best, bool) or not isinstance(best, int) or not 0 <= best < K:
        _checks.fail("best", best, f"an arm index in [0, {K - 1}]")
    star = pi[..., best]
    others = torch.cat([pi[..., :best], pi[..., best + 1:]], dim=-1)
    return star * (1 - star) + star * (others**2).sum(-1) / (1 - star)


def bandit_delta_mu_symmetric(J: Number, K: int) -> Number:
    """``bandit_delta_mu`` when the K - 1 unrewarded arms are equally likely (constant initial
    logits keep them so under exact REINFORCE): π_a = (1 - J)/(K - 1) gives

        Delta_mu = J(1 - J)·K/(K - 1),

    App. I.1's "concave quadratic", largest (K/(4(K - 1))) at J = ½.
    """
    _checks.probability("J", J)
    _checks.integer("K", K, 2)
    Jt = _t(J)
    return _out(Jt * (1 - Jt) * K / (K - 1), J)

