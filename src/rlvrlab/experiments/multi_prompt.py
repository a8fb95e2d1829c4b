"""The multi-prompt token level (§5): Theorem 5, Lemma 7, GRPO's direction and dynamic sampling.

Instances with many prompts at the token level: the contextual token bandit (C prompts sharing θ,
T tokens, prompt-dependent features; rlvrlab.simulate.instances.token_bandit, exact in closed form)
at several lengths, and a token policy with EOS (variable lengths, linear features, enumerated)
shared by C prompts that differ in which responses pass. The population objective is
J = E_q J_q with P_Q uniform, and every batch quantity is the paper's (§5): Δμ(k) = w·(g+ − g−)
with g± the scores averaged over the joint P±(q, o) (gap.combine_prompts, Model.gap_vector).

Checked (theorem checks, with each instance's constants of Assumptions 2-3 from
rlvrlab.policies: G_p, L_p, T_inf; T_psi1 = T_inf/log 2, valid for every policy, and the current
policy's ψ1 norm of the length, all that the proof of (46b) uses):
- Lemma 7 (65): Δ batch log-odds >= Δμ(k)·η − (L_p T_inf + G_p² T_psi1/(1 − J(k)))·η² at every
  step with η <= 1/sqrt(2 G_p² T_psi1) (64), on runs at fixed step sizes spread over two decades
  below (64)'s cap and up to 4× above it, along the normalized batch gap, GRPO's normalized
  expected update and a random unit direction; steps inside and outside (15a) counted apart;
- Theorem 5 (21): with η_k inside (15a) computed from the BATCH Δμ(k) and J(k), the population
  J(K) >= J(0)/(J(0) + (1 − J(0))·exp(−M(K)/2)) at every K, M the batch cumulative alignment;
- their premises on every run: Assumption 2 at every visited state (max token score <= G_p,
  max eigenvalue of the token-feature covariance <= L_p), current T_psi1 <= T_inf/log 2,
  ‖w‖ <= 1, J(0) > 0, and the Theorem-5 steps inside (15a) (recomputed from the records);
- the identity behind §5's comparison (from g_q+ = (1 − J_q)·gap_q, g_q− = −J_q·gap_q and
  Lemma 5's P±): Δμ = Σ_q P_Q(q)·J_q(1 − J_q)/(J(1 − J))·Δμ_q, against combine_prompts.

Measured over the states the runs pass through (claim checks, reported either way):
- the angle between GRPO's exact expected update (eq. 5: per-prompt σ_q normalization, 1/|o|)
  and the batch Gradient Gap (§5: "not exactly proportional"); REINFORCE's (∇J = J(1−J)·gap,
  Lemma 8) and Dr. GRPO's (a constant normalizer) are parallel to it exactly (a theorem check);
- dynamic sampling: the ratio E_q[Δμ_q]/Δμ along the update direction (the batch gap's, i.e.
  REINFORCE's and Dr. GRPO's, and GRPO's), over all prompts and over the prompts kept by the
  filter J_q ∈ [ε, 1 − ε] (the batch, its P_Q and the direction then restricted to them, as DAPO
  trains only on them); §5 says the filtered ratio is of order 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rlvrlab import _checks, plotting, theory
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_int, setting
from rlvrlab.gap import GapStats, combine_prompts
from rlvrlab.io import columns, read_table, rows_table, trajectory_table
from rlvrlab.policies import TokenSoftmax
from rlvrlab.policies.model import Enumerated, Model
from rlvrlab.simulate import initial_theta, simulate, token_bandit
from rlvrlab.updates import Direction, get_preset, make_direction, make_step_size
from rlvrlab.updates.directions import unit_rows

__all__ = ["EXPERIMENT", "MultiPromptConfig", "alignment_ratio", "batch_alignment_from_prompts", "cosine",
           "dynamic_sampling_weights", "plot", "run"]

DIRECTIONS = ("gap", "grpo", "random")  # fixed-step runs; Theorem 5's runs take the first two
PRESETS = ("reinforce", "dr-grpo", "grpo")
EOS_VOCAB, EOS_LENGTH, EOS_FEATURES = 4, 5, 3  # the EOS instance: 364 responses of length 1..5
ROUNDING = 1e-12  # slack of an inequality for float64 rounding
PARALLEL = 1e-9  # 1 - cos below this: parallel up to rounding
ANGLE_DEG = 1.0  # the claim: GRPO's direction is at least this far from the batch gap at the median state
THIN = 5  # metrics.parquet keeps every THIN-th step (the checks read every step)


@dataclass(frozen=True)
class MultiPromptConfig:
    lengths: tuple[int, ...] = setting((2, 4, 8), "response lengths T of the token-bandit instances")
    seeds: int = setting(3, "token-bandit instances (contexts, β) per length")
    eos_instances: int = setting(3, "instances of the EOS token policy shared by the prompts (V=4, T_inf=5, linear features)")
    prompts: int = setting(12, "prompts C (uniform P_Q)")
    dim: int = setting(4, "context dimension d of the token bandit")
    vocab: int = setting(4, "tokens V of the token bandit")
    rho: float = setting(0.5, "a token-bandit response passes with at least ⌈ρT⌉ right tokens")
    J0s: tuple[float, ...] = setting((0.1, 0.5), "initial mean success rates of the token-bandit runs (the EOS runs start "
                                                 "from as many random θ0)")
    eta_points: int = setting(6, "fixed step sizes per direction, log-spaced over [10^-eta_decades, eta_over] × (64)'s cap")
    eta_decades: float = setting(2.0, "decades of fixed step sizes below (64)'s cap")
    eta_over: float = setting(4.0, "largest fixed step as a multiple of (64)'s cap (steps beyond it are outside Lemma 7)")
    steps: int = setting(150, "steps of each fixed-step run")
    condition_steps: int = setting(300, "steps of each run inside (15a) (Theorem 5)")
    state_every: int = setting(10, "keep the state θ_k every this many steps for the angle and ratio measurements")
    eps: float = setting(0.05, "dynamic sampling keeps the prompts with J_q in [eps, 1 - eps]; the band it guarantees "
                               "E_q[Δμ_q]/Δμ where no Δμ_q < 0 is [1/B, B], B = 1/(4 eps (1 - eps))")
    share: float = setting(0.9, "the claims: E_q[Δμ_q]/Δμ within [1/B, B] at this share of the states")
    seed: int = setting(0, "EOS instances, random directions and θ0")

    def __post_init__(self) -> None:
        for name in ("seeds", "prompts", "dim", "eta_points", "steps", "condition_steps", "state_every"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("eos_instances", self.eos_instances, 0)
        check_positive_int("vocab", self.vocab, 2)
        check_positive_int("seed", self.seed, 0)
        if not self.lengths or any(isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= 32 for T in self.lengths):
            _checks.fail("lengths", self.lengths, "integers in [1, 32]")
        if not self.J0s or any(not 0 < J < 1 for J in self.J0s):
            _checks.fail("J0s", self.J0s, "numbers in (0, 1)")
        if not 0 < self.rho <= 1:
            _checks.fail("rho", self.rho, "a number in (0, 1]")
        if not (self.eta_decades > 0 and self.eta_over > 0):
            _checks.fail("eta_decades/eta_over", (self.eta_decades, self.eta_over), "numbers > 0")
        if not 0 < self.eps < 0.5:
            _checks.fail("eps", self.eps, "a number in (0, 0.5)")
        if not 0 < self.share <= 1:
            _checks.fail("share", self.share, "a number in (0, 1]")

    @classmethod
    def quick(cls) -> MultiPromptConfig:
        return cls(lengths=(2, 4), seeds=1, eos_instances=1, prompts=8, eta_points=4, steps=60, condition_steps=100)


# --- the quantities of §5 as functions ------------------------------------------------------------


def batch_alignment_from_prompts(J_q: torch.Tensor, delta_mu_q: torch.Tensor, weights: torch.Tensor,
                                  one_minus_J_q: torch.Tensor | None = None) -> torch.Tensor:
    """The batch Gap Alignment from the per-prompt ones, (..., C) -> (...):

        Δμ = Σ_q P_Q(q) · J_q(1 − J_q) / (J(1 − J)) · Δμ_q,    J = Σ_q P_Q(q) J_q

    since E_{π_q}[∇log π] = 0 gives g_q+ = (1 − J_q)·gap_q and g_q− = −J_q·gap_q, and
    g± = Σ_q P(q | ±) g_q± with P(q | +) = P_Q J_q / J, P(q | −) = P_Q (1 − J_q)/(1 − J) (Lemma 5's P±).
    Prompts with J_q ∈ {0, 1} (Δμ_q undefined) carry weight 0. Pass ``one_minus_J_q`` (e.g. from
    log(1 − J_q)) where J_q may be within rounding of 1: 1 − J_q then loses its relative precision.
    """
    Jm_q = 1 - J_q if one_minus_J_q is None else one_minus_J_q
    J, Jm = (weights * J_q).sum(-1, keepdim=True), (weights * Jm_q).sum(-1, keepdim=True)
    c = weights * J_q * Jm_q / (J * Jm)
    return (c * delta_mu_q.nan_to_num(0.0)).sum(-1)


def dynamic_sampling_weights(J_q: torch.Tensor, weights: torch.Tensor, eps: float) -> torch.Tensor:
    """P_Q restricted to the prompts with eps <= J_q <= 1 − eps and renormalized, (..., C); rows
    where no prompt is kept are all 0. (DAPO's dynamic sampling drops groups whose G rewards are
    all equal; a prompt with J_q < eps or > 1 − eps does so with probability >= (1 − eps)^G.)"""
    keep = (J_q >= eps) & (J_q <= 1 - eps)
    w = weights * keep
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / total.clamp(min=1e-300), torch.zeros_like(w))


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """cos of the angle between the rows of u and v (R, d) -> (R,); NaN where either is 0."""
    norm = u.norm(dim=-1) * v.norm(dim=-1)
    return torch.where(norm > 0, (u * v).sum(-1) / norm.clamp(min=1e-300), torch.full_like(norm, math.nan))


def alignment_ratio(model: Model, theta: torch.Tensor, weights: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Along w (R, d), with P_Q = weights (R, C): the per-prompt Δμ_q (R, C), their mean
    E_q[Δμ_q] over the prompts where it is defined (P_Q renormalized over them), the batch Δμ (R,)
    and ratio = E_q[Δμ_q]/Δμ (NaN where Δμ <= 0: no alignment to compare with); also J_q and 1 − J_q (R, C)."""
    per = model.along(theta, w)
    batch = combine_prompts(per, weights)
    defined = per.defined & (weights > 0)
    wd = weights * defined
    mean_q = (wd * per.delta_mu.nan_to_num(0.0)).sum(-1) / wd.sum(-1)
    dm = batch.delta_mu
    ratio = torch.where(dm > 0, mean_q / dm, torch.full_like(dm, math.nan))
    return {"delta_mu_q": per.delta_mu, "J_q": per.J, "one_minus_J_q": per.log_1mJ.exp(), "mean_q": mean_q, "delta_mu": dm,
            "ratio": ratio}


# --- instances ------------------------------------------------------------------------------------


@dataclass
class _Instance:
    name: str
    family: str  # "token bandit" or "EOS, shared"
    model: Model
    theta0: torch.Tensor  # (S, d): one start per J0
    features: torch.Tensor  # token features, (..., V, d): Assumption 2 is checked on them


def _instances(config: MultiPromptConfig, gen: torch.Generator) -> list[_Instance]:
    out = []
    for T in config.lengths:
        for seed in range(config.seeds):
            policy, reward, beta = token_bandit(seed, T, prompts=config.prompts, dim=config.dim, vocab=config.vocab, rho=config.rho)
            model = policy.bind(reward)
            theta0 = torch.cat([initial_theta(policy, reward, beta, J0) for J0 in config.J0s])
            out.append(_Instance(f"token bandit T={T} seed={seed}", "token bandit", model, theta0, policy.features))
    for i in range(config.eos_instances):
        feats = torch.randn(EOS_VOCAB, EOS_FEATURES, generator=gen, dtype=torch.float64)
        policy = TokenSoftmax(EOS_VOCAB, EOS_LENGTH, eos=0, parametrization="linear", features=feats)
        reward = (torch.rand(config.prompts, policy.n_responses, generator=gen) < 0.4).to(torch.float64)
        for c in range(config.prompts):  # both outcomes present for every prompt
            pick = torch.randperm(policy.n_responses, generator=gen)[:2]
            reward[c, pick[0]], reward[c, pick[1]] = 1.0, 0.0
        theta0 = policy.init(len(config.J0s), scale=1.0, generator=gen)
        out.append(_Instance(f"EOS T_inf={EOS_LENGTH} #{i}", "EOS, shared", Enumerated(policy, reward), theta0, feats))
    return out


def _grpo_unit(ctx) -> Direction:
    """GRPO's exact expected update (eq. 5), normalized: ‖w‖ = 1 as Lemma 7's proof needs."""
    return Direction(unit_rows(ctx.model.expected_update(ctx.theta, ctx.weights, get_preset("grpo"))))


def _random_unit(gen: torch.Generator):
    def fn(ctx) -> Direction:
        return Direction(unit_rows(torch.randn(ctx.theta.shape, generator=gen, dtype=ctx.theta.dtype)))

    return fn


def _direction(name: str, gen: torch.Generator):
    return {"gap": lambda: make_direction("gap"), "grpo": lambda: _grpo_unit, "random": lambda: _random_unit(gen)}[name]()


class _Tap:
    """A step-size rule that applies ``rule`` and keeps the current ψ1 norm of the length at every
    step and θ_k every ``every`` steps (the states of the angle and ratio measurements)."""

    def __init__(self, rule, every: int):
        self.rule, self.every = rule, every
        self.psi1: list[torch.Tensor] = []
        self.thetas: list[torch.Tensor] = []
        self.__name__ = "tap"

    def __call__(self, ctx, stats, direction):
        self.psi1.append(ctx.model.length_psi1(ctx.theta))
        if ctx.k % self.every == 0:
            self.thetas.append(ctx.theta.clone())
        return self.rule(ctx, stats, direction)


def _assumption2(model: Model, features: torch.Tensor, theta: torch.Tensor) -> tuple[float, float]:
    """At the states theta (S, d): the largest token score ‖φ_v − E_π φ‖ and the largest eigenvalue
    of Cov_π(φ) (the norm of -∇² log π(token), logits linear in θ) over contexts and tokens."""
    p = torch.softmax(model.policy.logits(theta), -1)  # (S, ..., V)
    phi = features.to(theta.dtype)  # (..., V, d)
    mean = torch.einsum("...v,...vd->...d", p, phi)
    score = (phi - mean.unsqueeze(-2)).norm(dim=-1)
    second = torch.einsum("...v,...vd,...ve->...de", p, phi, phi) - mean.unsqueeze(-1) * mean.unsqueeze(-2)
    return float(score.max()), float(torch.linalg.eigvalsh(second)[..., -1].max())


# --- the runs -------------------------------------------------------------------------------------


def _lemma7(traj, psi1: torch.Tensor, c, tally: dict, used: dict) -> dict[str, torch.Tensor]:
    """Lemma 7 at every step of the runs of ``traj`` (K steps, R runs), with T_psi1 uniform and current;
    returns per-step columns for the table."""
    m = traj.metrics
    J, dm, e, change, wn = (m[k][:-1] for k in ("J", "delta_mu", "eta", "log_odds_change", "w_norm"))
    ok = torch.isfinite(change) & torch.isfinite(dm) & (J > 0) & (J < 1) & (wn <= 1 + ROUNDING)
    Jc = J.clamp(min=1e-300, max=1 - 1e-16)
    uniform = torch.full_like(J, c.T_inf / math.log(2))
    inside_15a = e <= theory.step_condition_token(dm.nan_to_num(0.0), Jc, c.L_p, c.G_p, c.T_inf, uniform) * (1 + 1e-9)
    out = {}
    for mode, tpsi in (("uniform", uniform), ("current", psi1)):
        premise = ok & (e <= theory.lemma2_step_cap(c.G_p, tpsi))
        penalty = theory.lemma2_penalty(e, Jc, c.L_p, c.G_p, c.T_inf, tpsi)
        lower = dm * e - penalty
        held = change >= lower - ROUNDING
        for region, mask in (("inside (15a)", premise & inside_15a), ("inside (64), outside (15a)", premise & ~inside_15a),
                             ("outside (64)", ok & ~premise)):
            t = tally[mode].setdefault(region, [0, 0])
            t[0] += int(mask.sum())
            t[1] += int((mask & held).sum())
        frac = ((dm * e - change) / penalty)[premise & (penalty > 0)]
        if frac.numel():
            used[mode] = max(used[mode], float(frac.max()))
        out[f"lemma7_lower_{mode}"] = torch.where(ok, lower, math.nan)
    out["inside_64"] = (ok & (e <= theory.lemma2_step_cap(c.G_p, uniform))).to(J.dtype)
    out["inside_15a"] = (ok & inside_15a).to(J.dtype)
    out["T_psi1"] = psi1
    return out


def _append_step_columns(traj, cols: dict[str, torch.Tensor]) -> None:
    nan = torch.full_like(traj.metrics["J"][-1:], math.nan)
    for k, v in cols.items():
        traj.metrics[k] = torch.cat([v, nan])


def _measure_states(model: Model, theta: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """At the states theta (S, d), P_Q uniform: cos between each preset's exact expected update and
    the batch Gradient Gap; E_q[Δμ_q]/Δμ along the batch gap and along GRPO's update, over all
    prompts and over those kept by dynamic sampling (batch, P_Q and direction restricted to them)."""
    S, C = theta.shape[0], model.n_prompts
    weights = torch.full((S, C), 1.0 / C, dtype=theta.dtype)
    log_J, log_1mJ = model.masses(theta)
    J_q, Jm_q = log_J.exp(), log_1mJ.exp()
    out: dict[str, torch.Tensor] = {"J": J_q.mean(-1), "J_q_min": J_q.min(-1).values, "J_q_max": J_q.max(-1).values}
    for tag, wts in (("all", weights), ("filtered", dynamic_sampling_weights(J_q, weights, eps))):
        gap = model.gap_vector(theta, wts)
        grpo = model.expected_update(theta, wts, get_preset("grpo"))
        if tag == "all":
            for p in PRESETS:
                u = grpo if p == "grpo" else model.expected_update(theta, wts, get_preset(p))
                out[f"cos_{p}"] = cosine(u, gap)
        else:
            out["cos_grpo_filtered"] = cosine(grpo, gap)
            kept = wts > 0
            out["kept"] = kept.to(theta.dtype).sum(-1)
            Jf = (wts * J_q).sum(-1, keepdim=True)
            ratio_q = torch.where(kept, J_q / Jf, math.nan)
            out["kept_J_q_over_J_min"] = ratio_q.nan_to_num(math.inf).min(-1).values
            out["kept_J_q_over_J_max"] = ratio_q.nan_to_num(-math.inf).max(-1).values
        Jb, Jmb = (wts * J_q).sum(-1, keepdim=True), (wts * Jm_q).sum(-1, keepdim=True)
        c = torch.where(wts > 0, J_q * Jm_q / (Jb * Jmb), math.nan)  # the weights of batch_alignment_from_prompts
        out[f"c_min_{tag}"] = c.nan_to_num(math.inf).min(-1).values
        out[f"c_max_{tag}"] = c.nan_to_num(-math.inf).max(-1).values
        for dname, w in (("gap", gap), ("grpo", grpo)):
            r = alignment_ratio(model, theta, wts, w)
            out[f"ratio_{tag}_{dname}"] = r["ratio"]
            out[f"negative_{tag}_{dname}"] = ((r["delta_mu_q"] < 0) & (wts > 0)).to(theta.dtype).sum(-1)
            if tag == "all" and dname == "gap":
                closed = batch_alignment_from_prompts(r["J_q"], r["delta_mu_q"], wts, r["one_minus_J_q"])
                scale = batch_alignment_from_prompts(r["J_q"], r["delta_mu_q"].abs(), wts, r["one_minus_J_q"])  # Σ of |terms|
                out["identity_error"] = (closed - r["delta_mu"]).abs() / scale.clamp(min=1e-300)
    return out


def _batch_log_odds(model: Model, theta: torch.Tensor) -> torch.Tensor:
    """log J − log(1 − J) of the population (P_Q uniform), (S, d) -> (S,), differentiable."""
    log_J, log_1mJ = model.masses(theta)
    return torch.logsumexp(log_J, -1) - torch.logsumexp(log_1mJ, -1)


WORST_MULTIPLES = (0.01, 0.1, 0.3, 1.0)  # one-step probes along the worst direction, × (64)'s cap


def _worst_direction(model: Model, theta: torch.Tensor, c, tally: dict, used: dict) -> dict[str, torch.Tensor]:
    """Lemma 7 where it is hardest: at each state (S, d), the unit direction w* of the largest
    eigenvalue of −∇² logit J (the largest second-order penalty, gap.worst_second_order_penalty),
    signed so that Δμ >= 0, and one exact step along it at WORST_MULTIPLES of (64)'s cap. Also the
    penalty's coefficient ½λ_max against the allowance's, L_p T_inf + G_p² T_psi1/(1 − J) (η -> 0)."""
    t = theta.detach().clone().requires_grad_(True)
    g = torch.autograd.grad(_batch_log_odds(model, t).sum(), t, create_graph=True)[0]  # rows are independent states
    H = torch.stack([torch.autograd.grad(g[:, j].sum(), t, retain_graph=True)[0] for j in range(t.shape[1])], 1)
    finite = torch.isfinite(H).all(-1).all(-1)  # not where J has rounded to 0 or 1
    vals, vecs = torch.linalg.eigh(torch.where(finite[:, None, None], -(H + H.transpose(1, 2)) / 2, 0.0))
    w = vecs[..., -1]
    S, C = theta.shape[0], model.n_prompts
    weights = torch.full((S, C), 1.0 / C, dtype=theta.dtype)
    w = w * torch.where((w * model.gap_vector(theta, weights)).sum(-1) < 0, -1.0, 1.0).unsqueeze(-1)
    batch = combine_prompts(model.along(theta, w), weights)
    J, dm = batch.J, batch.delta_mu
    lo0 = _batch_log_odds(model, theta)
    out = {"worst_coef": (vals[..., -1] / 2).clamp(min=0)}
    ok = (J > 0) & (J < 1) & torch.isfinite(dm) & finite
    Jc = J.clamp(min=1e-300, max=1 - 1e-16)
    for mode, tpsi in (("uniform", torch.full_like(J, c.T_inf / math.log(2))), ("current", model.length_psi1(theta))):
        coef = theory.lemma2_penalty(torch.ones_like(J), Jc, c.L_p, c.G_p, c.T_inf, tpsi)
        out[f"worst_coef_over_allowance_{mode}"] = torch.where(ok, out["worst_coef"] / coef, math.nan)
        cap = theory.lemma2_step_cap(c.G_p, tpsi)
        t = tally[mode].setdefault("worst direction, one step", [0, 0])
        for mult in WORST_MULTIPLES:
            eta = mult * cap
            change = _batch_log_odds(model, theta + eta.unsqueeze(-1) * w) - lo0
            penalty = coef * eta**2
            held = change >= dm * eta - penalty - ROUNDING
            good = ok & torch.isfinite(change)
            t[0] += int(good.sum())
            t[1] += int((good & held).sum())
            frac = ((dm * eta - change) / penalty)[good]
            if frac.numel():
                used[mode] = max(used[mode], float(frac.max()))
    return out


def _quantiles(x: np.ndarray, qs=(0.1, 0.5, 0.9)) -> list[float]:
    x = x[np.isfinite(x)]
    return [float(v) for v in np.quantile(x, qs)] if x.size else [math.nan] * len(qs)


def run(config: MultiPromptConfig, progress: Progress, workdir: Path) -> Result:
    gen = torch.Generator().manual_seed(config.seed)
    insts = _instances(config, gen)
    n0, P = len(config.J0s), config.eta_points
    advance = progress.task("multi-prompt: runs", len(insts) * (len(DIRECTIONS) * config.steps + 2 * config.condition_steps))
    tally = {"uniform": {}, "current": {}}
    used = {"uniform": -math.inf, "current": -math.inf}
    thm5 = {"runs": 0, "steps": 0, "held": 0}
    fixed21 = {"runs": 0, "held_every_K": 0}
    premise = {"runs": 0, "failed": [], "max_score_over_G_p": 0.0, "max_cov_over_L_p": 0.0, "max_psi1_over_uniform": 0.0}
    tables, state_rows, per_instance = [], [], []
    for inst in insts:
        c = inst.model.constants()
        uniform = c.T_inf / math.log(2)
        cap64 = float(theory.lemma2_step_cap(c.G_p, uniform))
        mult = torch.logspace(-config.eta_decades, math.log10(config.eta_over), P, dtype=torch.float64)
        eta = (cap64 * mult).repeat(n0)  # (n0·P,) run-major: start i, step size j
        theta_fixed = inst.theta0.repeat_interleave(P, 0)
        states, row = [], {"instance": inst.name, "G_p": c.G_p, "L_p": c.L_p, "T_inf": c.T_inf, "cap_64": cap64}
        arms = [(d, "fixed", theta_fixed, make_step_size("fixed", eta=eta), config.steps) for d in DIRECTIONS]
        arms += [(d, "inside (15a)", inst.theta0, make_step_size("condition-15a", T_psi1="uniform"), config.condition_steps)
                 for d in DIRECTIONS[:2]]
        for dname, arm, theta0, rule, steps in arms:
            tap = _Tap(rule, config.state_every)
            traj = simulate(inst.model, None, theta0, steps=steps, direction=_direction(dname, gen), step_size=tap,
                            per_prompt=False, fast=False, generator=gen, on_step=advance)
            psi1 = torch.stack(tap.psi1)  # (K, R)
            cols = _lemma7(traj, psi1, c, tally, used)
            m = traj.metrics
            J, M = m["J"], m["M"]
            bound = theory.logistic_lower_bound(J[0].expand_as(M), M)
            above = J >= bound * (1 - ROUNDING)
            # Premises, every run: Assumption 2 at the visited states, Assumption 3, ‖w‖ <= 1, J(0) > 0.
            thetas = torch.cat(tap.thetas + [traj.theta])
            score, cov = _assumption2(inst.model, inst.features, thetas)
            premise["max_score_over_G_p"] = max(premise["max_score_over_G_p"], score / c.G_p)
            premise["max_cov_over_L_p"] = max(premise["max_cov_over_L_p"], cov / c.L_p)
            premise["max_psi1_over_uniform"] = max(premise["max_psi1_over_uniform"], float(psi1.max()) / uniform)
            ok_runs = (m["w_norm"][:-1] <= 1 + ROUNDING).all(0) & (J[0] > 0)
            if score > c.G_p * (1 + ROUNDING) or cov > c.L_p * (1 + ROUNDING) or float(psi1.max()) > uniform * (1 + ROUNDING):
                ok_runs[:] = False
            if arm == "inside (15a)":
                inside = cols["inside_15a"].bool() | (m["eta"][:-1] == 0)
                ok_runs &= inside.all(0)
                thm5["runs"] += int(ok_runs.sum())
                thm5["steps"] += int(above[:, ok_runs].numel())
                thm5["held"] += int(above[:, ok_runs].sum())
                row[f"J_gain_inside_15a_{dname}"] = float((J[-1] - J[0]).mean())
                row[f"M_inside_15a_{dname}"] = float(M[-1].mean())
            else:
                fixed21["runs"] += int(ok_runs.sum())
                fixed21["held_every_K"] += int((above.all(0) & ok_runs).sum())
            premise["runs"] += J.shape[1]
            premise["failed"] += [f"{inst.name}, {dname}, {arm}, run {r}" for r in torch.nonzero(~ok_runs).flatten().tolist()]
            _append_step_columns(traj, cols)
            traj.metrics["bound_21"] = bound
            R = J.shape[1]
            start = torch.arange(R) // (P if arm == "fixed" else 1)  # which θ0 each run started from
            J0_target = [config.J0s[i] if inst.family == "token bandit" else math.nan for i in start.tolist()]
            run_eta = eta / cap64 if arm == "fixed" else torch.full((R,), math.nan, dtype=torch.float64)
            table = trajectory_table(traj, {"instance": [inst.name] * R, "family": [inst.family] * R, "direction": [dname] * R,
                                            "arm": [arm] * R, "eta_over_cap64": run_eta, "J0_target": J0_target})
            step = table["step"].to_numpy()
            keep = pa.array((step % THIN == 0) | (step == steps))
            tables.append(table.filter(keep))
            states.append((dname, arm, thetas))
        per_instance.append(row)
        for dname, arm, thetas in states:
            measured = _measure_states(inst.model, thetas, config.eps) | _worst_direction(inst.model, thetas, c, tally, used)
            for i in range(thetas.shape[0]):
                state_rows.append({"instance": inst.name, "family": inst.family, "direction": dname, "arm": arm,
                                   **{k: float(v[i]) for k, v in measured.items()}})

    states = rows_table(state_rows)
    checks, summary = _checks_and_summary(config, tally, used, thm5, fixed21, premise, states)
    summary["instances"] = per_instance
    metrics = pa.concat_tables(tables, promote_options="permissive")
    return Result({"metrics": metrics, "states": states}, summary, checks)


def _checks_and_summary(config, tally, used, thm5, fixed21, premise, states) -> tuple[list[Check], dict]:
    names = [f"{k}_{tag}_{d}" for k in ("ratio", "negative") for tag in ("all", "filtered") for d in ("gap", "grpo")]
    names += [f"c_{m}_{tag}" for m in ("min", "max") for tag in ("all", "filtered")]
    s = columns(states, ("J", "worst_coef_over_allowance_uniform", "worst_coef_over_allowance_current", "cos_reinforce",
                         "cos_dr-grpo", "cos_grpo", "cos_grpo_filtered", "identity_error", "kept", "kept_J_q_over_J_min",
                         "kept_J_q_over_J_max", *names))
    live = (s["J"] > 1e-6) & (s["J"] < 1 - 1e-6)  # states where the batch gap is resolved in float64
    checks = []

    def lemma7(mode: str, what: str) -> Check:
        inside = [tally[mode].get(r, [0, 0]) for r in ("inside (15a)", "inside (64), outside (15a)", "worst direction, one step")]
        n, held = sum(t[0] for t in inside), sum(t[1] for t in inside)
        (n1, h1), (n2, h2), (n3, h3) = inside
        coef = s[f"worst_coef_over_allowance_{mode}"][live]
        return Check(f"Lemma 7 (65) with {what}: every step within (64)", n > 0 and held == n,
                     f"{held} of {n} held (runs: {h1}/{n1} inside (15a), {h2}/{n2} outside it; worst direction: {h3}/{n3}); "
                     f"largest fraction of the allowance used {used[mode]:.3g}; worst second-order coefficient / the "
                     f"allowance's: {float(np.nanmax(coef)):.3g} at most", "all (and at least one checked)")

    checks.append(lemma7("uniform", "T_psi1 = T_inf/log 2"))
    checks.append(lemma7("current", "the current policy's T_psi1"))
    checks.append(Check("Theorem 5 (21): J(K) above the logistic bound with steps inside (15a) from the batch Delta_mu(k), J(k)",
                        thm5["steps"] > 0 and thm5["held"] == thm5["steps"],
                        f"{thm5['held']} of {thm5['steps']} steps held on {thm5['runs']} runs", "all (and at least one checked)"))
    nfail = len(premise["failed"])
    checks.append(Check("Premises of Lemma 7 and Theorem 5 on every run: Assumptions 2-3 at the visited states, ‖w‖ <= 1, "
                        "J(0) > 0, Theorem 5's steps inside (15a)", nfail == 0,
                        f"{premise['runs'] - nfail} of {premise['runs']} runs; max token score / G_p "
                        f"{premise['max_score_over_G_p']:.3f}, max Cov eigenvalue / L_p {premise['max_cov_over_L_p']:.3f}, "
                        f"max T_psi1 / (T_inf/log 2) {premise['max_psi1_over_uniform']:.3f}"
                        + (f"; FAILED: {'; '.join(premise['failed'][:5])}" if nfail else ""), "every run"))
    ident = s["identity_error"][live]
    checks.append(Check("Batch Delta_mu = Σ_q P_Q·J_q(1-J_q)/(J(1-J))·Delta_mu_q (g_q± and Lemma 5's P±)",
                        ident.size > 0 and float(np.nanmax(ident)) <= 1e-9,
                        f"largest error relative to the sum of |terms| {float(np.nanmax(ident)) if ident.size else math.nan:.2e} over {ident.size} states",
                        "<= 1e-9 at every state"))
    par = {p: 1 - s[f"cos_{p}"][live] for p in ("reinforce", "dr-grpo")}
    worst = max(float(np.nanmax(v)) for v in par.values())
    checks.append(Check("REINFORCE's and Dr. GRPO's exact expected updates are parallel to the batch Gradient Gap (Lemma 8)",
                        worst <= PARALLEL, f"largest 1 - cos {worst:.1e} over {int(live.sum())} states", f"<= {PARALLEL:g}"))
    angle = np.degrees(np.arccos(np.clip(s["cos_grpo"][live], -1, 1)))
    angle_f = np.degrees(np.arccos(np.clip(s["cos_grpo_filtered"][live], -1, 1)))
    qa, qf = _quantiles(angle), _quantiles(angle_f)
    checks.append(Check(f"GRPO's exact expected update is not parallel to the batch Gradient Gap (§5): median angle >= {ANGLE_DEG:g}°",
                        bool(qa[1] >= ANGLE_DEG),
                        f"angle quantiles 10/50/90%: {qa[0]:.2f}° / {qa[1]:.2f}° / {qa[2]:.2f}° over {angle.size} states, "
                        f"beyond 90° (lowers the population J to first order) at {float((angle > 90).mean()):.1%} "
                        f"(dynamic sampling: {qf[0]:.2f}° / {qf[1]:.2f}° / {qf[2]:.2f}°)", f"median >= {ANGLE_DEG:g}°", kind="claim"))
    B = 1 / (4 * config.eps * (1 - config.eps))
    # Where every prompt's Delta_mu_q >= 0, the identity puts the ratio in [1/c_max, 1/c_min], and
    # dynamic sampling bounds c_q = J_q(1-J_q)/(J(1-J)) in [1/B, B]; where signs mix, nothing does.
    sandwich = [0, 0]
    for tag in ("all", "filtered"):
        for d in ("gap", "grpo"):
            r = s[f"ratio_{tag}_{d}"]
            same = live & (s[f"negative_{tag}_{d}"] == 0) & np.isfinite(r)
            lo, hi = 1 / s[f"c_max_{tag}"], 1 / s[f"c_min_{tag}"]
            sandwich[0] += int(same.sum())
            sandwich[1] += int((same & (r >= lo * (1 - 1e-9)) & (r <= hi * (1 + 1e-9))).sum())
    checks.append(Check("Where no prompt's Delta_mu_q < 0: 1/max c_q <= E_q[Delta_mu_q]/Delta_mu <= 1/min c_q, "
                        "c_q = J_q(1-J_q)/(J(1-J))", sandwich[0] > 0 and sandwich[1] == sandwich[0],
                        f"{sandwich[1]} of {sandwich[0]} (state, batch, direction) cases", "all"))
    several = live & (s["kept"] >= 2)  # dynamic sampling leaves a batch of at least two prompts

    def band_stats(tag: str, d: str, where: np.ndarray) -> dict:
        x = s[f"ratio_{tag}_{d}"][where]
        inside = np.isfinite(x) & (x >= 1 / B) & (x <= B)
        mixed = s[f"negative_{tag}_{d}"][where] > 0
        return {"in_band": float(inside.mean()) if x.size else math.nan, "states": int(x.size),
                "within_factor_2": float((np.isfinite(x) & (x >= 0.5) & (x <= 2)).mean()) if x.size else math.nan,
                "mixed_signs": float(mixed.mean()) if x.size else math.nan,
                "in_band_where_signs_mix": float(inside[mixed].mean()) if mixed.any() else math.nan,
                "quantiles_1_10_50_90_99": _quantiles(x, (0.01, 0.1, 0.5, 0.9, 0.99))}

    # Filtered: the states where dynamic sampling leaves a batch of >= 2 prompts; all prompts: every
    # state, and (beside it) the same states as the filtered ones.
    family = np.asarray(states.column("family").to_pylist())
    ratio = {}
    for key, tag, where in (("filtered", "filtered", several), ("all", "all", live), ("all, same states", "all", several)):
        for d in ("gap", "grpo"):
            ratio[f"{key}_{d}"] = band_stats(tag, d, where)
            for fam in ("token bandit", "EOS, shared"):
                ratio[f"{key}_{d}"][f"in_band_{fam}"] = band_stats(tag, d, where & (family == fam))["in_band"]

    def describe(key: str) -> str:
        return "; ".join(f"{d}: {ratio[f'{key}_{d}']['in_band']:.1%} in band (median {ratio[f'{key}_{d}']['quantiles_1_10_50_90_99'][2]:.2f}, "
                         f"signs mix at {ratio[f'{key}_{d}']['mixed_signs']:.0%})" for d in ("gap", "grpo")) \
            + f" of {ratio[f'{key}_gap']['states']} states"

    f_ok = all(ratio[f"filtered_{d}"]["in_band"] >= config.share for d in ("gap", "grpo"))
    a_out = all(ratio[f"all_{d}"]["in_band"] < config.share for d in ("gap", "grpo"))
    checks.append(Check(f"Dynamic sampling (J_q in [{config.eps:g}, {1 - config.eps:g}]): E_q[Delta_mu_q]/Delta_mu within "
                        f"[1/B, B], B = 1/(4eps(1-eps)) = {B:.3g}", f_ok and several.any(), describe("filtered") + " with >= 2 kept prompts",
                        f">= {config.share:.0%} of the states, along the batch gap and along GRPO's update", kind="claim"))
    checks.append(Check("Without dynamic sampling E_q[Delta_mu_q]/Delta_mu leaves [1/B, B]", a_out and live.any(),
                        describe("all") + f" (the filtered states: {ratio['all, same states_gap']['in_band']:.1%} and "
                        f"{ratio['all, same states_grpo']['in_band']:.1%})",
                        f"< {config.share:.0%} of the states in the band, along both directions", kind="claim"))
    summary = {
        "lemma7": {mode: {region: {"steps": v[0], "held": v[1]} for region, v in tally[mode].items()} for mode in tally},
        "lemma7_largest_fraction_of_allowance_used": used,
        "lemma7_worst_coefficient_over_allowance_quantiles_50_90_max": {
            mode: _quantiles(s[f"worst_coef_over_allowance_{mode}"][live], (0.5, 0.9, 1.0)) for mode in ("uniform", "current")},
        "where_no_delta_mu_q_negative_ratio_in_[1/c_max,1/c_min]": {"cases": sandwich[0], "held": sandwich[1]},
        "theorem5": thm5,
        "bound_21_on_fixed_step_runs": fixed21,
        "premises": {k: v for k, v in premise.items() if k != "failed"} | {"failed": premise["failed"]},
        "states": {"total": int(len(s["J"])), "with_J_in_(1e-6, 1-1e-6)": int(live.sum())},
        "angle_grpo_deg_quantiles_10_50_90": qa,
        "angle_grpo_filtered_deg_quantiles_10_50_90": qf,
        "angle_grpo_beyond_90deg_share": {"all": float((angle > 90).mean()), "filtered": float((angle_f > 90).mean())},
        "one_minus_cos_max": {p: float(np.nanmax(v)) for p, v in par.items()},
        "ratio_E_q_delta_mu_q_over_delta_mu": ratio,
        "dynamic_sampling": {"eps": config.eps, "B": B, "states_with_2_or_more_kept": int(several.sum()),
                             "states_with_none_kept": int((live & (s["kept"] == 0)).sum()),
                             "states_with_one_kept": int((live & (s["kept"] == 1)).sum()),
                             "kept_prompts_quantiles_10_50_90": _quantiles(s["kept"][live]),
                             "c_range_filtered": [float(np.nanmin(s["c_min_filtered"][several])), float(np.nanmax(s["c_max_filtered"][several]))],
                             "c_range_all": [float(np.nanmin(s["c_min_all"][live])), float(np.nanmax(s["c_max_all"][live]))],
                             "kept_J_q_over_J_range": [float(np.nanmin(s["kept_J_q_over_J_min"][live & (s["kept"] > 0)])),
                                                       float(np.nanmax(s["kept_J_q_over_J_max"][live & (s["kept"] > 0)]))]},
    }
    return checks, summary


def plot(out: Path) -> list[str]:
    t = read_table(out / "metrics.parquet")
    c = columns(t, ("delta_mu", "eta", "log_odds_change", "lemma7_lower_uniform", "inside_64", "J", "bound_21"))
    arm = np.asarray(t.column("arm").to_pylist())
    s = columns(read_table(out / "states.parquet"), ("J", "cos_grpo", "cos_grpo_filtered", "ratio_all_gap", "ratio_filtered_gap",
                                                     "ratio_all_grpo", "ratio_filtered_grpo"))
    fig, (a1, a2, a3, a4) = plotting.panels(4, width=4.4)
    sel = (c["inside_64"] == 1) & np.isfinite(c["log_odds_change"])
    first = c["delta_mu"][sel] * c["eta"][sel]
    allowance = first - c["lemma7_lower_uniform"][sel]
    pos = allowance > 0
    realized = (first - c["log_odds_change"][sel])[pos]
    shown = realized > 0  # a step that gained more than Δμ·η has no penalty to show on a log scale
    a1.scatter(allowance[pos][shown], realized[shown], s=2, alpha=0.3, rasterized=True)
    lim = np.array([np.nanmin(allowance[pos]), np.nanmax(allowance[pos])])
    a1.plot(lim, lim, "k-", lw=0.8, label="the allowance")
    a1.plot(lim, lim / 100, "k:", lw=0.8, label="1% of it")
    a1.set(xscale="log", yscale="log", xlabel="allowance (L_p T_inf + G_p² T_psi1/(1-J))·η²", ylabel="Δμ·η − realized Δ log-odds")
    a1.legend(fontsize=7)
    a1.set_title(f"Lemma 7, runs within (64): realized penalty ({shown.sum()} of {pos.sum()} steps > 0)", fontsize=8)
    conv = arm == "inside (15a)"
    a2.scatter(c["bound_21"][conv], c["J"][conv], s=2, alpha=0.3, rasterized=True)
    a2.plot([0, 1], [0, 1], "k-", lw=0.8)
    a2.set(xlabel="logistic bound (21)", ylabel="population J(K)")
    a2.set_title("Theorem 5: steps inside (15a) with batch Δμ", fontsize=8)
    for key, label in (("cos_grpo", "all prompts"), ("cos_grpo_filtered", "dynamic sampling")):
        x = s[key][np.isfinite(s[key])]
        a3.hist(np.degrees(np.arccos(np.clip(x, -1, 1))), bins=40, histtype="step", label=label)
    a3.set(xlabel="angle between GRPO's update and g⁺ − g⁻ (degrees)", ylabel="states")
    a3.legend(fontsize=7)
    for key, label in (("ratio_all_gap", "all, gap"), ("ratio_filtered_gap", "filtered, gap"), ("ratio_all_grpo", "all, GRPO"),
                       ("ratio_filtered_grpo", "filtered, GRPO")):
        x = s[key][np.isfinite(s[key])]
        a4.hist(np.clip(x, -3, 6), bins=np.linspace(-3, 6, 91), histtype="step", label=label)
    a4.set(yscale="log", xlabel="E_q[Δμ_q] / Δμ (clipped to [-3, 6])", ylabel="states")
    a4.legend(fontsize=7)
    fig.suptitle("Multi-prompt token level (§5): Lemma 7, Theorem 5, GRPO's direction, dynamic sampling")
    return [plotting.save(fig, out / "multi_prompt.png")]


EXPERIMENT = Experiment(
    name="multi-prompt",
    title="§5 at the token level: Theorem 5, Lemma 7, GRPO's direction and dynamic sampling",
    description=__doc__.split("\n\n")[1],
    config=MultiPromptConfig,
    run=run,
    plot=plot,
)
