"""The quantities of the theory as pure functions of arrays (DESIGN.md, "The vocabulary").

Exact, over an enumerated response space: given log π of every response, their scores
∇_θ log π (or the scores projected on a direction w), the 0/1 rewards and w,

    J         = Σ_o π(o) r(o)                                      eq. (2)
    g_plus    = E_{π+}[∇ log π],  g_minus = E_{π-}[∇ log π]          eq. (6), (7)
    gap       = g_plus - g_minus,   ∇J = J (1 - J) · gap             eq. (8), (9)
    delta_mu  = w · gap                                               eq. (10)
    var_plus  = Var_{π+}(w · ∇ log π),  var_minus likewise            App. F
    log_odds  = log J - log(1 - J)                                    eq. (14)

where π+ and π- are π conditioned on correct / incorrect responses. Where J = 0 (no mass on a
correct response) π+ does not exist, and where J = 1 π- does not; those entries are NaN in the
tensors (log_odds is -inf / +inf there) and False in ``has_plus`` / ``has_minus``. Summaries average only where defined and say
how many entries that was: no NaN ever reaches a summary.

Monte Carlo, from G responses sampled from π per prompt: the same quantities with standard
errors (``gap_stats_mc``), and the estimators of the one-step log-odds change from log-ratios of
the sampled responses (``log_odds_change_mc``, Lemma 3), which is how rlvrlab measures the gap
inside real training.

Shapes: leading dimensions (...) are batch (runs R, prompts C, ...); N enumerated responses,
G sampled responses, d parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from rlvrlab import _checks

__all__ = [
    "GapStats",
    "GapStatsMC",
    "LogOddsChangeMC",
    "alignment_gain",
    "combine_prompts",
    "conditional_distributions",
    "gap_along",
    "gap_stats",
    "gap_stats_mc",
    "lemma3_log_odds_change",
    "log_odds_change_mc",
    "realized_log_odds_change",
    "log_odds_hessian",
    "score_covariance",
    "worst_second_order_penalty",
]

_NEG_INF = -math.inf


def alignment_gain(delta_mu, eta=1.0):
    """One step's term of the cumulative alignment M = Σ_k [Δμ_k]₊·η_k (eq. 12): [Δμ]₊·η.

    An undefined Δμ (NaN: a batch with no correct or no incorrect response carries no gap
    signal) adds 0. Takes tensors (the simulators, batched over runs) or floats (a trainer that
    measured Δμ·η directly passes it as ``delta_mu`` with eta = 1) and returns the same kind.
    """
    if isinstance(delta_mu, torch.Tensor):
        return delta_mu.nan_to_num(0.0).clamp(min=0) * eta
    return max(float(delta_mu), 0.0) * eta if math.isfinite(delta_mu) else 0.0


@dataclass(frozen=True)
class GapStats:
    """Exact Gradient-Gap statistics; every tensor has the batch shape (...) unless noted.

    mean_plus / mean_minus are E+[w·∇log π] and E-[w·∇log π] (delta_mu is their difference);
    curv_plus / curv_minus are E±[wᵀ∇²log π w] when curvature was supplied (else None);
    g_plus, g_minus, gap are (..., d) when full scores were supplied (else None).
    """

    log_J: torch.Tensor
    log_1mJ: torch.Tensor
    mean_plus: torch.Tensor
    mean_minus: torch.Tensor
    var_plus: torch.Tensor
    var_minus: torch.Tensor
    curv_plus: torch.Tensor | None = None
    curv_minus: torch.Tensor | None = None
    g_plus: torch.Tensor | None = None
    g_minus: torch.Tensor | None = None

    @property
    def J(self) -> torch.Tensor:
        return self.log_J.exp().clamp(max=1.0)  # a log-sum-exp can round a hair above 0

    def map(self, fn) -> GapStats:
        """Apply ``fn`` to every tensor field (e.g. select a prompt: ``s.map(lambda t: t[..., 0])``)."""
        return GapStats(**{f.name: None if (v := getattr(self, f.name)) is None else fn(v) for f in fields(self)})

    @property
    def log_odds(self) -> torch.Tensor:
        return self.log_J - self.log_1mJ

    @property
    def delta_mu(self) -> torch.Tensor:
        return self.mean_plus - self.mean_minus

    @property
    def gap(self) -> torch.Tensor | None:
        return None if self.g_plus is None else self.g_plus - self.g_minus

    @property
    def has_plus(self) -> torch.Tensor:
        return self.log_J > _NEG_INF

    @property
    def has_minus(self) -> torch.Tensor:
        return self.log_1mJ > _NEG_INF

    @property
    def defined(self) -> torch.Tensor:
        """Where both π+ and π- exist, i.e. 0 < J < 1: the gap is defined."""
        return self.has_plus & self.has_minus

    def summary(self) -> dict[str, float]:
        """Means over the batch, taken only where each quantity is defined, with the counts."""
        ok = self.defined
        out = {"n": float(ok.numel()), "n_defined": float(ok.sum()), "J": float(self.J.mean())}
        for name in ("delta_mu", "var_plus", "var_minus", "log_odds"):
            v = getattr(self, name)
            out[name] = float(v[ok].mean()) if bool(ok.any()) else math.nan
        if not bool(ok.any()):
            out["note"] = "no entry has 0 < J < 1: the Gradient Gap is undefined everywhere"  # type: ignore[assignment]
        return out


def _conditional_log_weights(logp: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """log π+ and log π- over the N responses, and log J, log(1 - J), by log-sum-exp."""
    lp_plus = logp.masked_fill(~correct, _NEG_INF)
    lp_minus = logp.masked_fill(correct, _NEG_INF)
    log_J = torch.logsumexp(lp_plus, dim=-1)
    log_1mJ = torch.logsumexp(lp_minus, dim=-1)
    # (-inf) - (-inf) is NaN: the conditional distribution does not exist there (masked downstream).
    return lp_plus - log_J.unsqueeze(-1), lp_minus - log_1mJ.unsqueeze(-1), log_J, log_1mJ


def _cond_mean_var(w_log: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = w_log.exp()
    mean = (w * s).sum(-1)
    var = (w * (s - mean.unsqueeze(-1)) ** 2).sum(-1)
    return mean, var


def _check_enumerated(logp: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    if not logp.is_floating_point():
        _checks.fail("logp", f"dtype {logp.dtype}", "a floating-point tensor of log-probabilities")
    _checks.binary("reward", reward)
    try:
        torch.broadcast_shapes(logp.shape, reward.shape)
    except RuntimeError:
        _checks.fail("reward", f"shape {tuple(reward.shape)}", f"a shape broadcastable with logp {tuple(logp.shape)} (..., N)")
    total = torch.logsumexp(logp, dim=-1)
    tol = torch.finfo(logp.dtype).eps ** 0.5 * max(1.0, math.log(logp.shape[-1]))
    if not bool((total.abs() <= tol).all()):
        worst = float(total.abs().max())
        _checks.fail(
            "logp",
            f"log-probabilities whose total mass differs from 1 (|log Σ π| up to {worst:.3g})",
            "the log π of every response of an enumerated response space, so that Σ_o π(o) = 1",
        )
    return reward.to(torch.bool)


def gap_along(
    logp: torch.Tensor, proj: torch.Tensor, reward: torch.Tensor, curv: torch.Tensor | None = None
) -> GapStats:
    """Exact statistics along one direction w from projected scores.

    logp:   (..., N) log π of every enumerated response (Σ π = 1 along N)
    proj:   (..., N) w·∇_θ log π(o) for each response
    reward: (..., N) 0/1
    curv:   (..., N) optional wᵀ∇²log π(o) w (second-order term, App. F)
    """
    correct = _check_enumerated(logp, reward)
    _checks.shape("proj", proj, (logp.shape[-1],), "(..., N) like logp")
    if curv is not None:
        _checks.shape("curv", curv, (logp.shape[-1],), "(..., N) like logp")
    return _along(logp, proj, correct, curv)


def _along(logp: torch.Tensor, proj: torch.Tensor, correct: torch.Tensor, curv: torch.Tensor | None = None) -> GapStats:
    """gap_along without input checks (the simulator's inner loop); ``correct`` is boolean."""
    wp, wm, log_J, log_1mJ = _conditional_log_weights(logp, correct)
    mean_p, var_p = _cond_mean_var(wp, proj)
    mean_m, var_m = _cond_mean_var(wm, proj)
    cp = cm = None
    if curv is not None:
        cp = (wp.exp() * curv).sum(-1)
        cm = (wm.exp() * curv).sum(-1)
    return GapStats(log_J, log_1mJ, mean_p, mean_m, var_p, var_m, cp, cm)


def gap_stats(logp: torch.Tensor, scores: torch.Tensor, reward: torch.Tensor, direction: torch.Tensor) -> GapStats:
    """Exact Gradient Gap, Gap Alignment and conditional variances over an enumerated response space.

    logp:      (..., N) log π of every response
    scores:    (..., N, d) ∇_θ log π(o)
    reward:    (..., N) in {0, 1}
    direction: (..., d) the update direction w
    """
    correct = _check_enumerated(logp, reward)
    _checks.shape("scores", scores, (logp.shape[-1], None), "(..., N, d)")
    d = scores.shape[-1]
    _checks.shape("direction", direction, (d,), "(..., d) matching the last dimension of scores")
    wp, wm, log_J, log_1mJ = _conditional_log_weights(logp, correct)
    g_plus = (wp.exp().unsqueeze(-1) * scores).sum(-2)
    g_minus = (wm.exp().unsqueeze(-1) * scores).sum(-2)
    proj = (scores * direction.unsqueeze(-2)).sum(-1)
    mean_p, var_p = _cond_mean_var(wp, proj)
    mean_m, var_m = _cond_mean_var(wm, proj)
    return GapStats(log_J, log_1mJ, mean_p, mean_m, var_p, var_m, g_plus=g_plus, g_minus=g_minus)


def conditional_distributions(logp: torch.Tensor, reward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """π+ and π- (..., N): π conditioned on correct / incorrect responses; all zeros where a side has no mass.

    logp (..., N) log π of every response, reward (..., N) 0/1.
    """
    correct = _check_enumerated(logp, reward)
    wp, wm, _, _ = _conditional_log_weights(logp, correct.expand_as(logp))
    return wp.exp().nan_to_num(0.0), wm.exp().nan_to_num(0.0)


def _covariance(weights: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Cov of scores (..., N, d) under weights (..., N) summing to 1: (..., d, d)."""
    mean = (weights.unsqueeze(-1) * scores).sum(-2, keepdim=True)
    centred = scores - mean
    return (centred * weights.unsqueeze(-1)).transpose(-1, -2) @ centred


def score_covariance(logp: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Cov_π(∇log π) (..., d, d), the Fisher information: its top eigenvalue is the largest
    Var_π(w·∇log π) over unit w, the variance whose log-MGF eq. (46b) bounds by G_p² T_psi1 η².

    logp (..., N), scores (..., N, d).
    """
    _checks.shape("scores", scores, (logp.shape[-1], None), "(..., N, d)")
    return _covariance(logp.exp(), scores)


def log_odds_hessian(logp: torch.Tensor, scores: torch.Tensor, reward: torch.Tensor,
                     hess_plus: torch.Tensor, hess_minus: torch.Tensor) -> torch.Tensor:
    """∇²_θ log(J / (1 - J)) over an enumerated response space, exactly: (..., d, d).

        ∇² log J = Cov_{π+}(∇log π) + E_{π+}[∇²log π]     (and 1 - J likewise over π-), so
        Q := ∇² log-odds = Cov+ - Cov- + E+[∇²log π] - E-[∇²log π]

    Along a unit w the log-odds change of a step is Δμ·η + ½ wᵀQw·η² + O(η³) (App. F's expansion
    with its factor ½, see theory.log_odds_change_second_order): -½ wᵀQw is the second-order
    penalty that Lemma 2 bounds by L_p T_inf + G_p² T_psi1 / (1 - J).

    logp (..., N), scores (..., N, d) = ∇log π, reward (..., N) 0/1,
    hess_plus, hess_minus (..., d, d) = E±[∇²log π] (EnumerablePolicy.expected_hessian with v = π±).
    """
    _checks.shape("scores", scores, (logp.shape[-1], None), "(..., N, d)")
    d = scores.shape[-1]
    _checks.shape("hess_plus", hess_plus, (d, d), "(..., d, d) matching scores")
    _checks.shape("hess_minus", hess_minus, (d, d), "(..., d, d) matching scores")
    plus, minus = conditional_distributions(logp, reward)
    return _covariance(plus, scores) - _covariance(minus, scores) + hess_plus - hess_minus


def worst_second_order_penalty(hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest second-order penalty over unit directions, and a direction attaining it.

        sup_{‖w‖ <= 1} lim_{η -> 0} (Δμ·η - Δ log-odds) / η² = ½ max(λ_max(-Q), 0)

    hessian: (..., d, d) Q, the log-odds Hessian (``log_odds_hessian``).
    Returns the coefficient (...,) and the unit eigenvector of -Q's largest eigenvalue (..., d).
    """
    _checks.shape("hessian", hessian, (hessian.shape[-1], hessian.shape[-1]) if hessian.dim() >= 2 else (0, 0), "(..., d, d)")
    vals, vecs = torch.linalg.eigh(-(hessian + hessian.transpose(-1, -2)) / 2)
    return (vals[..., -1] / 2).clamp(min=0), vecs[..., :, -1]


def combine_prompts(stats: GapStats, weights: torch.Tensor) -> GapStats:
    """Batch-level statistics over prompts (Section 5) from per-prompt ones.

    stats:   per-prompt GapStats with batch shape (..., C)
    weights: (..., C) prompt distribution P_Q (non-negative, summing to 1 along C)

    Uses P+(q, o) ∝ P_Q(q) π(o|q) r(q, o): J = Σ_q P_Q J_q, E+[s] = Σ_q P_Q J_q E+_q[s] / J,
    and the law of total variance for var_plus (likewise for the incorrect side). The batch
    gap satisfies ∇J = J (1 - J)(g+ - g-) (Lemma 8), tested against autograd.
    """
    logw = torch.log(weights)
    out = {}
    for side, log_mass in (("plus", stats.log_J), ("minus", stats.log_1mJ)):
        lw = logw + log_mass  # log P_Q(q) + log P(side | q)
        total = torch.logsumexp(lw, dim=-1)
        cw = (lw - total.unsqueeze(-1)).exp()  # P(q | side); NaN-free where total > -inf
        present = log_mass > _NEG_INF
        mean_q = torch.where(present, getattr(stats, f"mean_{side}"), 0.0)
        var_q = torch.where(present, getattr(stats, f"var_{side}"), 0.0)
        cw = torch.where(present, cw, 0.0)
        mean = (cw * mean_q).sum(-1)
        var = (cw * (var_q + (mean_q - mean.unsqueeze(-1)) ** 2)).sum(-1)
        nan = torch.full_like(mean, math.nan)
        out[f"log_{'J' if side == 'plus' else '1mJ'}"] = total
        out[f"mean_{side}"] = torch.where(total > _NEG_INF, mean, nan)
        out[f"var_{side}"] = torch.where(total > _NEG_INF, var, nan)
        curv = getattr(stats, f"curv_{side}")
        if curv is not None:
            curv_mean = (cw * torch.where(present, curv, 0.0)).sum(-1)
            out[f"curv_{side}"] = torch.where(total > _NEG_INF, curv_mean, nan)
    return GapStats(**out)


def lemma3_log_odds_change(logp_old: torch.Tensor, logp_new: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """The right-hand side of Lemma 3 (34), computed exactly over an enumerated response space:

        log E_{π_old+}[exp ΔL] - log E_{π_old-}[exp ΔL],   ΔL = log π_new - log π_old

    It equals the realized change of log-odds exactly; tests check the identity.
    logp_old, logp_new, reward: (..., N). Returns (...).
    """
    correct = _check_enumerated(logp_old, reward)
    _checks.shape("logp_new", logp_new, (logp_old.shape[-1],), "(..., N) like logp_old")
    wp, wm, _, _ = _conditional_log_weights(logp_old, correct)
    dL = logp_new - logp_old
    return torch.logsumexp(wp + dL, -1) - torch.logsumexp(wm + dL, -1)


# --- Monte Carlo -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapStatsMC:
    """Estimates from G sampled responses per batch entry, each with its standard error (se_*).

    The standard errors of delta_mu and J are calibrated (tests: z-scores over repeated draws);
    those of var_plus / var_minus use the normal-theory formula with the sample fourth moment and
    understate the spread for small groups from skewed distributions.

    n_plus / n_minus count the correct / incorrect samples. Means need one sample on their side,
    variances and standard errors two; elsewhere the entry is NaN and the count says why.
    g_plus, g_minus (and their se) are (..., d) when full scores were given.
    """

    n_plus: torch.Tensor
    n_minus: torch.Tensor
    J: torch.Tensor
    se_J: torch.Tensor
    log_odds: torch.Tensor
    se_log_odds: torch.Tensor
    delta_mu: torch.Tensor
    se_delta_mu: torch.Tensor
    var_plus: torch.Tensor
    se_var_plus: torch.Tensor
    var_minus: torch.Tensor
    se_var_minus: torch.Tensor
    g_plus: torch.Tensor | None = None
    se_g_plus: torch.Tensor | None = None
    g_minus: torch.Tensor | None = None
    se_g_minus: torch.Tensor | None = None

    @property
    def defined(self) -> torch.Tensor:
        return (self.n_plus >= 1) & (self.n_minus >= 1)

    def summary(self) -> dict[str, float]:
        ok = self.defined
        out: dict[str, float] = {"n": float(ok.numel()), "n_defined": float(ok.sum())}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or v.dim() != ok.dim() or f.name in ("n_plus", "n_minus"):
                continue
            good = ok & torch.isfinite(v)
            out[f.name] = float(v[good].mean()) if bool(good.any()) else math.nan
        return out


def _side_moments(x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Count, mean, unbiased variance, se of the mean and se of the variance over masked samples.

    x: (..., G) or (..., G, d) with mask (..., G); returns n (...) and the rest (...) or (..., d).
    Var(s²) ≈ (m4 - s⁴ (n-3)/(n-1)) / n. Means need n >= 1, the others n >= 2 (else NaN).
    weight: (..., G) frequency weights (a sample of weight w counts as w copies of itself; a
    sample of weight 0 is left out like a masked one), None: 1 each.
    """
    vector = x.dim() > mask.dim()
    w = mask.to(x.dtype) if weight is None else torch.where(mask.to(torch.bool), weight.to(x.dtype), 0.0)
    n = w.sum(-1)
    m, w, nn, dim = (w.unsqueeze(-1) > 0, w.unsqueeze(-1), n.unsqueeze(-1), -2) if vector else (w > 0, w, n, -1)
    x = torch.where(m, x, 0.0)  # a left-out value (NaN, inf) must not reach the sums: 0·NaN = NaN
    n1, n2 = nn.clamp(min=1), (nn - 1).clamp(min=1)
    mean = (w * x).sum(dim) / n1
    dev2 = torch.where(m, x - mean.unsqueeze(dim), 0.0).square()
    var = (w * dev2).sum(dim) / n2
    var_of_var = ((w * dev2.square()).sum(dim) / n1 - var.square() * (nn - 3) / n2) / n1
    two = nn >= 2
    mean = torch.where(nn >= 1, mean, math.nan)
    var = torch.where(two, var, math.nan)
    se_var = torch.where(two, var_of_var.clamp(min=0).sqrt(), math.nan)
    se_mean = (var / n1).sqrt()  # NaN with var
    return n, mean, var, se_mean, se_var


def _log_mean_exp(x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log of the masked mean of exp(x) and its delta-method standard error, stable for large |x|
    (``weight``: frequency weights, as `_side_moments`)."""
    if weight is not None:
        mask = mask & (weight > 0)
    shift = x.masked_fill(~mask, -math.inf).amax(-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    # Mask before exponentiating: a sample of the other side may lie far above this side's shift,
    # and its exp would overflow to inf (then inf·0 = NaN in the masked sums).
    n, mean, _, se, _ = _side_moments(torch.exp((x - shift).masked_fill(~mask, -math.inf)), mask, weight)
    return torch.log(mean) + shift.squeeze(-1), se / mean


def gap_stats_mc(
    reward: torch.Tensor,
    *,
    proj: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    direction: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> GapStatsMC:
    """Monte Carlo Gap statistics from responses sampled from π.

    reward:    (..., G) 0/1 of the sampled responses
    proj:      (..., G) w·∇log π of each sample, or
    scores:    (..., G, d) full scores with direction (..., d); then g_plus / g_minus are estimated too.
    mask:      (..., G) optional, False for samples to leave out (e.g. prompts not trained on)
    weight:    (..., G) optional frequency weights of proj's samples (a sample of weight w counts
               as w copies; rlvrlab.lm.diagnostics' stratified pass), None: 1 each

    delta_mu = mean+(s) - mean-(s) with se = sqrt(s+²/n+ + s-²/n-); J = n+/G with the binomial se;
    log_odds = log(n+/n-) with the delta-method se sqrt(1/n+ + 1/n-).
    """
    _checks.binary("reward", reward)
    if (proj is None) == (scores is None):
        _checks.fail("proj/scores", "both or neither", "exactly one of proj (..., G) or scores (..., G, d)")
    keep = torch.ones_like(reward, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    correct, incorrect = reward.to(torch.bool) & keep, ~reward.to(torch.bool) & keep
    g_plus = g_minus = se_gp = se_gm = None
    if scores is not None:
        _checks.shape("scores", scores, (reward.shape[-1], None), "(..., G, d)")
        if direction is None:
            _checks.fail("direction", None, "a (..., d) direction when scores are given")
        _checks.shape("direction", direction, (scores.shape[-1],), "(..., d)")
        proj = (scores * direction.unsqueeze(-2)).sum(-1)
        _, g_plus, _, se_gp, _ = _side_moments(scores, correct)
        _, g_minus, _, se_gm, _ = _side_moments(scores, incorrect)
    assert proj is not None
    _checks.shape("proj", proj, (reward.shape[-1],), "(..., G) like reward")
    proj = proj.to(torch.promote_types(proj.dtype, torch.float32))
    n_p, mean_p, var_p, se_mp, se_vp = _side_moments(proj, correct, weight)
    n_m, mean_m, var_m, se_mm, se_vm = _side_moments(proj, incorrect, weight)
    G = n_p + n_m  # the kept samples (their total weight)
    J = torch.where(G > 0, n_p / G.clamp(min=1), math.nan)  # no kept sample: no estimate
    nan = torch.full_like(J, math.nan)
    both = (n_p >= 1) & (n_m >= 1)
    log_odds = torch.where(both, torch.log(n_p.clamp(min=1)) - torch.log(n_m.clamp(min=1)), nan)
    se_lo = torch.where(both, (1 / n_p.clamp(min=1) + 1 / n_m.clamp(min=1)).sqrt(), nan)
    return GapStatsMC(
        n_plus=n_p,
        n_minus=n_m,
        J=J,
        se_J=(J * (1 - J) / G.clamp(min=1)).sqrt(),
        log_odds=log_odds,
        se_log_odds=se_lo,
        delta_mu=torch.where(both, mean_p - mean_m, nan),
        se_delta_mu=(se_mp**2 + se_mm**2).sqrt(),
        var_plus=var_p,
        se_var_plus=se_vp,
        var_minus=var_m,
        se_var_minus=se_vm,
        g_plus=g_plus,
        se_g_plus=se_gp,
        g_minus=g_minus,
        se_g_minus=se_gm,
    )


@dataclass(frozen=True)
class LogOddsChangeMC:
    """Post-step estimates from the log-ratios ΔL_i = log π_new(o_i) - log π_old(o_i) of samples
    drawn from π_old (DESIGN.md, "Measuring the gap inside real training").

    first_order: mean+(ΔL) - mean-(ΔL), an estimate of Delta_mu·eta (Lemma 1 to first order)
    realized:    log mean+(exp ΔL) - log mean-(exp ΔL), Lemma 3's plug-in estimate of the exact
                 change of log-odds (consistent; its bias is O(1/n))
    each with a delta-method standard error.
    """

    first_order: torch.Tensor
    se_first_order: torch.Tensor
    realized: torch.Tensor
    se_realized: torch.Tensor
    n_plus: torch.Tensor
    n_minus: torch.Tensor


def realized_log_odds_change(delta_logp: torch.Tensor, reward: torch.Tensor, *,
                             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_odds_change_mc``'s realized change and its standard error alone (the same values,
    without the first-order estimate's moments)."""
    _checks.binary("reward", reward)
    _checks.shape("delta_logp", delta_logp, (reward.shape[-1],), "(..., G) like reward")
    correct = reward.to(torch.bool)
    x = delta_logp.to(torch.promote_types(delta_logp.dtype, torch.float32))
    lme_p, se_lp = _log_mean_exp(x, correct, weight)
    lme_m, se_lm = _log_mean_exp(x, ~correct, weight)
    return lme_p - lme_m, (se_lp**2 + se_lm**2).sqrt()


def log_odds_change_mc(delta_logp: torch.Tensor, reward: torch.Tensor, *, weight: torch.Tensor | None = None) -> LogOddsChangeMC:
    """Estimate Delta_mu·eta and the realized log-odds change from post-step log-ratios.

    delta_logp: (..., G) log π_new(o_i) - log π_old(o_i) for o_i ~ π_old
    reward:     (..., G) 0/1
    weight:     (..., G) optional frequency weights (as gap_stats_mc's)
    """
    realized, se_realized = realized_log_odds_change(delta_logp, reward, weight=weight)  # checks the inputs
    correct = reward.to(torch.bool)
    x = delta_logp.to(torch.promote_types(delta_logp.dtype, torch.float32))
    n_p, mean_p, _, se_p, _ = _side_moments(x, correct, weight)
    n_m, mean_m, _, se_m, _ = _side_moments(x, ~correct, weight)
    return LogOddsChangeMC(mean_p - mean_m, (se_p**2 + se_m**2).sqrt(), realized, se_realized, n_p, n_m)
