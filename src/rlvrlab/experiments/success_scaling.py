"""The critical step against the success rate: does it shrink like (1 - J), as eq. (17)-(18) say?

On the contextual token bandit: the one-step critical step of REINFORCE, Dr. GRPO and GRPO along
their exact expected updates (bisection on the exact log-odds change) at states spanning J, and
each preset's trajectory-level critical learning rate against J0; their exponents in 1 - J are
fitted and compared with those eq. (17)-(18) imply.

What the theory says (abstract; §4 eq. 17-18, single prompt; Theorem 5 carries it to the batch J
and batch Delta_mu). In the paper's parametrization θ <- θ + eta·w with w the unit Gradient-Gap
direction, condition (15a) with L_p << G_p² is the cap (18), eta <~ Delta_mu·(1 - J)/T_psi1: the
safe step along w falls like (1 - J)^1 whichever preset chose w, so eta_crit/Delta_mu has
exponent 1 in (1 - J). A preset at learning rate alpha moves θ by alpha·u, u its expected update,
so eta = alpha·‖u‖ and its critical learning rate is alpha_crit = eta_crit/‖u‖. By (9) and (17),
‖u‖ = J(1-J)·Delta_mu for REINFORCE (Dr. GRPO: divided by its constant normalizer) and
sqrt(J(1-J))·Delta_mu/T_psi1 for GRPO (its division by sigma = sqrt(J(1-J)) and by |o|). Hence

    REINFORCE, Dr. GRPO   alpha_crit ∝ (1-J)/(J(1-J)) = 1/J             (theory.critical_lr_drgrpo)
    GRPO                  alpha_crit ∝ (1-J)/sqrt(J(1-J)) = sqrt((1-J)/J) (theory.critical_lr_grpo)

with local log-log slopes against 1 - J of (1-J)/J -> 0 and 1/(2J) -> 1/2 as J -> 1: GRPO's
normalization takes 1/2 off the cap's exponent 1 (its update shrinks only like (1-J)^(1/2)), which
is why at a fixed rate its effective step outgrows the cap like sqrt(J/(1-J)), the stagnation of
§4, while REINFORCE's shrinks in step with it. Over a finite range of J the theory's slope is that
of these forms at the states measured, computed beside each fit. (18) is a sufficient condition:
the paper shows no matching lower bound in J (§4: the (1 - J) factor "affects the upper bound but
not the lower bound"), so whether the true critical step follows it is what is measured here.

What is measured, on the contextual token bandit (rlvrlab.simulate.instances.token_bandit: C
prompts sharing θ; with one prompt the exact update of these policies never lowers J, so there is
no critical step at all). At states spanning the J grid and for each preset's exact expected
update u (rlvrlab.policies.model.Model.expected_update), eta_crit is the first step along
w = u/‖u‖ at which the exact one-step change of the objective's log-odds,
logit J(θ + eta·w) - logit J(θ), is no longer positive: found on a log grid, then by bisection on
the exact function (``one_step_critical``), not from the second-order formula (App. F,
theory.eta_crit_second_order), which is reported beside it. Where no step up to ``eta_max`` lowers
the log-odds (the large-step limit, a deterministic policy, still beats J), eta_crit is infinite:
censored, left out of the fits and counted. Exponents are least-squares log-log slopes with a
95% t-interval (rlvrlab.analysis.loglog_slope). Two families of states:

    lean     θ = κ·β with κ set so that the mean J is the grid value (initial_theta: the states
             phase, stagnation and controller start from)
    trained  the states a run passes through: normalized Gradient-Gap steps of size ``flow_step``
             (REINFORCE's gradient flow, reparametrized) from J = J_grid[0]/2, the first state at
             or past each grid value

Then the trajectory level: for each preset and initial J0, runs of ``steps`` steps at every rate
of a log grid; a run converges when its odds J/(1-J) grow by ``odds_gain``; the critical rate is
the upper edge of the converging window, refined by bisection (rlvrlab.analysis.critical_rates).
By (17)-(18) the one-step alpha* falls along such a run, so the theory's trajectory rate is alpha*
at its end, J_end = σ(logit J0 + log odds_gain). Every exponent is a claim, reported either way;
the one exact identity (REINFORCE and Dr. GRPO take the same direction when every response has
length T) is a theorem check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rlvrlab import _checks, plotting, theory
from rlvrlab.analysis.stats import critical_rates, loglog_slope, spearman
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.gap import combine_prompts
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.simulate import simulate
from rlvrlab.simulate.instances import initial_theta, token_bandit
from rlvrlab.updates import PRESETS, get_preset, make_direction

__all__ = ["EXPERIMENT", "SuccessScalingConfig", "one_step_critical", "plot", "run", "theory_lr"]

FAMILIES = ("lean", "trained")
ETA_EXPONENT = 1.0  # cap (18): eta_crit/Delta_mu ∝ (1 - J)^1, every preset
STALL_STEPS, STALL_GAIN = 100, 1e-4  # the gap flow has stalled when J gained less than this in that many steps
# An exponent check is seen only if its 95% CI is at most this wide either side: half the gap (1/2)
# between the exponents the theory gives GRPO and REINFORCE, so that a seen check excludes the other's.
HALF_WIDTH = 0.25
PROXY_FACTOR = 2.0  # the proxy stands in for E_q[Delta_mu_q] on Figure 2's axis: within a factor 2 (stated, not tuned)
PROXY_SHARE = 0.9  # ... at this share of the states


@dataclass(frozen=True)
class SuccessScalingConfig:
    presets: tuple[str, ...] = setting(("reinforce", "dr-grpo", "grpo"), "update rules (exact expected updates; no token weighting)")
    J_grid: tuple[float, ...] = setting((0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99),
                                        "mean success rates of the states of the one-step measurement")
    length: int = setting(4, "response length T")
    prompts: int = setting(40, "prompts C sharing the parameters")
    dim: int = setting(5, "context dimension d")
    vocab: int = setting(4, "tokens V")
    rho: float = setting(0.5, "a response passes with at least ⌈ρT⌉ right tokens")
    seeds: int = setting(6, "random instances (contexts, β)")
    eta_min: float = setting(1e-3, "smallest step of the one-step scan (along the unit direction)")
    eta_max: float = setting(1e4, "largest step of the scan: no crossing below it means eta_crit = inf (censored)")
    eta_points: int = setting(141, "steps in the log-spaced scan before bisection")
    bisection: int = setting(40, "bisection steps refining each one-step critical step (geometric midpoints)")
    flow_step: float = setting(0.05, "step of the normalized gap flow that generates the trained states")
    flow_steps: int = setting(5000, "at most this many flow steps per instance")
    J0s: tuple[float, ...] = setting((0.7, 0.8, 0.9, 0.95, 0.98, 0.99),
                                     "initial mean success rates of the trajectory-level runs (below about 0.7 this family "
                                     "has no overshoot edge: every large rate still gains)")
    lr_min: float = setting(0.1, "smallest learning rate of the trajectory-level grid")
    lr_max: float = setting(1e5, "largest learning rate of the grid")
    lr_points: int = setting(13, "learning rates in the log-spaced grid")
    steps: int = setting(100, "steps of each trajectory-level run")
    odds_gain: float = setting(2.0, "a run converges when its odds J/(1-J) grow by this factor")
    lr_bisection: int = setting(4, "bisection steps refining each trajectory-level critical rate")

    def __post_init__(self) -> None:
        for name in ("length", "prompts", "dim", "seeds", "eta_points", "flow_steps", "lr_points", "steps"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("vocab", self.vocab, 2)
        check_positive_int("bisection", self.bisection, 0)
        check_positive_int("lr_bisection", self.lr_bisection, 0)
        check_positive_floats("eta_min/eta_max/flow_step/lr_min/lr_max", (self.eta_min, self.eta_max, self.flow_step,
                                                                          self.lr_min, self.lr_max))
        if self.eta_max <= self.eta_min:
            raise ValueError(f"eta_max: got {self.eta_max}; allowed: a number > eta_min = {self.eta_min}")
        if self.lr_max <= self.lr_min:
            raise ValueError(f"lr_max: got {self.lr_max}; allowed: a number > lr_min = {self.lr_min}")
        if not self.odds_gain > 1:
            raise ValueError(f"odds_gain: got {self.odds_gain}; allowed: a number > 1")
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho: got {self.rho}; allowed: a number in (0, 1]")
        for p in self.presets:
            _checks.choose("presets", p, PRESETS)
            if PRESETS[p].weighting != "none":
                raise ValueError(f"presets: got {p}; allowed: presets without a token weighting (their expected update is not computed)")
        for name in ("J_grid", "J0s"):
            values = getattr(self, name)
            if not values or any(not 0 < J < 1 for J in values) or list(values) != sorted(set(values)):
                raise ValueError(f"{name}: got {list(values)}; allowed: increasing, distinct numbers in (0, 1)")

    @classmethod
    def quick(cls) -> SuccessScalingConfig:
        return cls(J_grid=(0.1, 0.5, 0.8, 0.9, 0.95, 0.98), seeds=1, prompts=24, eta_points=57, bisection=20, flow_step=0.1,
                   J0s=(0.7, 0.9, 0.98), lr_points=7, steps=40, lr_bisection=2)


# --- one step --------------------------------------------------------------------------------


def one_step_critical(change: Callable[[torch.Tensor], torch.Tensor], *, eta_min: float, eta_max: float, points: int,
                      bisection: int) -> tuple[float, float, float]:
    """The first step eta at which a one-step change turns non-positive: (eta_crit, low, high).

    change: eta (n,) -> the exact change (n,) (e.g. of the log-odds) after a step eta; positive for
    small eta when the direction is aligned. It is evaluated on ``points`` log-spaced steps in
    [eta_min, eta_max]; the first non-positive (or nan) one and the step before it bracket the
    crossing, which ``bisection`` geometric midpoints narrow, keeping change(low) > 0 >= change(high).
    Returns (inf, eta_max, inf) when no step of the scan is non-positive, and (nan, 0, eta_min)
    when the first already is (the crossing lies below the scan, e.g. Delta_mu <= 0). A crossing
    between two scan points that turns positive again before the next one is not seen.
    """
    grid = torch.logspace(math.log10(eta_min), math.log10(eta_max), points, dtype=torch.float64)
    values = change(grid)
    bad = ~(values > 0)
    if not bool(bad.any()):
        return math.inf, eta_max, math.inf
    i = int(bad.nonzero()[0, 0])
    if i == 0:
        return math.nan, 0.0, eta_min
    lo, hi = float(grid[i - 1]), float(grid[i])
    for _ in range(bisection):
        mid = math.sqrt(lo * hi)
        if float(change(torch.tensor([mid], dtype=torch.float64))[0]) > 0:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi), lo, hi


def theory_lr(preset: str, J: np.ndarray) -> np.ndarray:
    """The J-dependence of a preset's critical learning rate by (17) vs (18), up to a constant:
    sqrt((1-J)/J) for the presets that divide by sigma (GRPO's "mean-std" advantage), 1/J otherwise."""
    J = np.asarray(J, dtype=float)
    if PRESETS[preset].advantage == "mean-std":
        return np.asarray(theory.critical_lr_grpo(torch.as_tensor(J)))
    return np.asarray(theory.critical_lr_drgrpo(torch.as_tensor(J)))


def _objective_log_odds(model, weights: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """theta (n, d) -> the objective's log-odds (n,): J = Σ_c weights_c J_c, from log-sum-exps."""
    logw = weights.log()

    def fn(theta: torch.Tensor) -> torch.Tensor:
        log_J, log_1mJ = model.masses(theta)
        return torch.logsumexp(logw + log_J, -1) - torch.logsumexp(logw + log_1mJ, -1)

    return fn


def _states(model, policy, reward, beta: torch.Tensor, weights: torch.Tensor, config: SuccessScalingConfig) -> dict:
    """family -> list of (J, theta (1, d)), one per grid value reached."""
    lean = []
    for J in config.J_grid:
        theta = initial_theta(policy, reward, beta, J)
        lean.append((float(model.masses(theta)[0].exp().mean()), theta))
    trained, grid, history = [], list(config.J_grid), []
    theta = initial_theta(policy, reward, beta, config.J_grid[0] / 2)
    for k in range(config.flow_steps):
        J = float((weights * model.masses(theta)[0].exp()).sum())
        while grid and J >= grid[0]:
            trained.append((J, theta.clone()))
            grid.pop(0)
        history.append(J)
        if not grid or (k >= STALL_STEPS and J - history[k - STALL_STEPS] < STALL_GAIN):
            break  # every grid value reached, or the flow has stalled below the rest (a local maximum of J)
        g = model.gap_vector(theta, weights)
        theta = theta + config.flow_step * g / g.norm(dim=-1, keepdim=True)
    return {"lean": lean, "trained": trained}


def _one_step_rows(seed: int, config: SuccessScalingConfig, advance) -> list[dict]:
    policy, reward, beta = token_bandit(seed, config.length, prompts=config.prompts, dim=config.dim, vocab=config.vocab,
                                        rho=config.rho)
    model = policy.bind(reward)
    weights = torch.full((1, model.n_prompts), 1.0 / model.n_prompts, dtype=torch.float64)
    log_odds = _objective_log_odds(model, weights)
    rows = []
    for family, states in _states(model, policy, reward, beta, weights, config).items():
        for J, theta in states:
            lo0 = log_odds(theta)
            for preset in config.presets:
                u = model.expected_update(theta, weights, get_preset(preset))  # (1, d)
                u_norm = float(u.norm())
                w = u / u_norm
                per_prompt = model.along(theta, w)
                stats = combine_prompts(per_prompt, weights)
                eta, lo, hi = one_step_critical(lambda e: log_odds(theta + e[:, None] * w) - lo0, eta_min=config.eta_min,
                                                eta_max=config.eta_max, points=config.eta_points, bisection=config.bisection)
                dm = float(stats.delta_mu[0])
                rows.append({"family": family, "seed": seed, "preset": preset, "J": J, "one_minus_J": 1 - J,
                             "delta_mu": dm, "u_norm": u_norm, "eta_crit": eta, "eta_crit_low": lo, "eta_crit_high": hi,
                             "alpha_crit": eta / u_norm,
                             "eta_crit_second_order": float(theory.eta_crit_second_order(stats.delta_mu, stats.var_plus,
                                                                                          stats.var_minus)[0]),
                             "eta_cap_18": float(theory.theory_step_cap(dm, J, config.length)),
                             "w": w[0], **_proxy(model, theta, weights, per_prompt, u_norm, config.length)})
    advance(1)
    return rows


def _proxy(model, theta: torch.Tensor, weights: torch.Tensor, per_prompt, u_norm: float, T: int) -> dict[str, float]:
    """§6.2's proxy for the batch Gap Alignment, from this update's norm: T·‖u‖ / E_q[σ_q] with
    σ_q = √(J_q(1−J_q)) (the language-model monitor's gap/grpo_norm_proxy), beside what it stands
    for, E_q[Δμ_q] along w = u/‖u‖, and E_q[σ_q·Δμ_q]. For GRPO's expected update on responses of
    length T, eq. (5) with eq. (9) gives u = Σ_q w_q σ_q (g⁺_q − g⁻_q)/T, so w·u = ‖u‖ makes
    T·‖u‖ = E_q[σ_q·Δμ_q] exactly: the proxy errs by the covariance of σ_q and Δμ_q over prompts."""
    J = model.masses(theta)[0].exp()  # (1, C)
    sigma = (J * (1 - J)).sqrt()
    dm = per_prompt.delta_mu  # (1, C)
    return {"proxy": T * u_norm / float((weights * sigma).sum()), "delta_mu_prompt_mean": float((weights * dm).sum()),
            "sigma_delta_mu_mean": float((weights * sigma * dm).sum()), "T_u_norm": T * u_norm}


# --- trajectory level ------------------------------------------------------------------------


def _trajectory_rows(seed: int, preset: str, config: SuccessScalingConfig, advance) -> tuple[list[dict], pa.Table]:
    policy, reward, beta = token_bandit(seed, config.length, prompts=config.prompts, dim=config.dim, vocab=config.vocab,
                                        rho=config.rho)
    theta0 = torch.cat([initial_theta(policy, reward, beta, J0) for J0 in config.J0s])  # (n, d)
    lrs = np.geomspace(config.lr_min, config.lr_max, config.lr_points).tolist()
    n, L = len(config.J0s), len(lrs)
    direction = make_direction("expected", preset=preset)
    need = math.log(config.odds_gain)

    def train(cells: list[int], rates: list[float], measure: bool):
        every = max(1, config.steps // 25) if measure else config.steps
        return simulate(policy, reward, theta0[cells], steps=config.steps, direction=direction,
                        step_size=torch.tensor(rates, dtype=torch.float64), record_every=every, measure=measure)

    cells = [c for c in range(n) for _ in range(L)]
    traj = train(cells, lrs * n, True)
    lo = traj.metrics["log_odds"]
    converged = ((lo[-1] - lo[0]) >= need).view(n, L).numpy()

    def refine(which: list[int], rates: list[float]) -> list[bool]:
        lo = train(which, rates, False).metrics["log_odds"]
        return ((lo[-1] - lo[0]) >= need).tolist()

    crits = critical_rates(lrs, converged, refine, bisection=config.lr_bisection)
    advance(1)
    rows = [{"preset": preset, "seed": seed, "J0": J0, "J_end_theory": 1 / (1 + (1 - J0) / (J0 * config.odds_gain)),
             "lr_crit": c.rate, "lr_crit_low": c.low, "lr_crit_high": c.high,
             "converged_rates": int(converged[i].sum())} for i, (J0, c) in enumerate(zip(config.J0s, crits))]
    table = trajectory_table(traj, {"preset": [preset] * len(cells), "seed": [seed] * len(cells),
                                    "J0": [config.J0s[c] for c in cells], "lr": lrs * n,
                                    "converged": converged.reshape(-1).tolist()})
    return rows, table


# --- fits and checks ---------------------------------------------------------------------------


def _fit(x: np.ndarray, y: np.ndarray, theory_y: np.ndarray) -> dict:
    """Slope of log y on log x with its CI, and the theory's slope over the same (uncensored) points."""
    fit = loglog_slope(x, y)
    used = np.isfinite(y) & (y > 0)
    th = loglog_slope(x[used], theory_y[used]).slope if used.sum() >= 3 else math.nan
    return {"slope": fit.slope, "ci95": [fit.low, fit.high], "points": fit.n, "censored": int(len(y) - fit.n),
            "theory_slope": th, "intercept": fit.intercept}


def _slope_check(name: str, fit: dict, expected: float) -> Check:
    """Seen when the slope's 95% CI contains the theory's and is narrow enough (HALF_WIDTH) that it
    could have excluded a different exponent; a wide interval is reported as not seen."""
    lo, hi = fit["ci95"]
    ok = math.isfinite(fit["slope"]) and math.isfinite(expected) and lo <= expected <= hi and (hi - lo) / 2 <= HALF_WIDTH
    measured = (f"slope {fit['slope']:.2f} [{lo:.2f}, {hi:.2f}] from {fit['points']} states ({fit['censored']} censored)"
                if math.isfinite(fit["slope"]) else f"no fit: {fit['points']} uncensored states, {fit['censored']} censored")
    return Check(name, ok, measured, f"95% CI contains {expected:.2f} and is at most ±{HALF_WIDTH} wide", kind="claim")


def run(config: SuccessScalingConfig, progress: Progress, workdir: Path) -> Result:
    advance = progress.task("success-scaling: one-step critical steps, then critical rates",
                            config.seeds * (1 + len(config.presets)))
    rows = [r for seed in range(config.seeds) for r in _one_step_rows(seed, config, advance)]
    checks, summary = [], {"one_step": {}, "trajectory": {}}

    # REINFORCE and Dr. GRPO: u = ∇J and ∇J/norm when every response has length T, one direction.
    if {"reinforce", "dr-grpo"} <= set(config.presets):
        pairs = [(a, b) for a in rows if a["preset"] == "reinforce" for b in rows
                 if b["preset"] == "dr-grpo" and (b["family"], b["seed"], b["J"]) == (a["family"], a["seed"], a["J"])]
        dw = max(float((a["w"] - b["w"]).abs().max()) for a, b in pairs)
        de = max(abs(a["eta_crit"] - b["eta_crit"]) / a["eta_crit"] if math.isfinite(a["eta_crit"])
                 else float(math.isfinite(b["eta_crit"])) for a, b in pairs)
        checks.append(Check("REINFORCE and Dr. GRPO move along one direction when every response has length T: equal eta_crit",
                            dw < 1e-12 and de < 1e-9, f"max |w_RF - w_DrGRPO| = {dw:.1e}, max relative eta_crit difference {de:.1e}",
                            "< 1e-12 and < 1e-9"))
    # §6.2's proxy (issue 15, item 2), on GRPO's exact expected update at every state
    grpo = [r for r in rows if r["preset"] == "grpo"]
    if grpo:
        rel = max(abs(r["T_u_norm"] - r["sigma_delta_mu_mean"]) / abs(r["sigma_delta_mu_mean"]) for r in grpo)
        checks.append(Check("§6.2's proxy identity: T·‖u_GRPO‖ = E_q[σ_q·Delta_mu_q] along GRPO's own direction (eq. 5 with eq. 9)",
                            rel < 1e-6, f"max relative difference {rel:.1e} over {len(grpo)} states", "< 1e-6 (exact, but for the advantage's std_eps regularizer)"))
        ratio = np.array([r["proxy"] / r["delta_mu_prompt_mean"] for r in grpo])
        inside = float(np.mean((ratio >= 1 / PROXY_FACTOR) & (ratio <= PROXY_FACTOR)))
        q = np.quantile(ratio, [0.1, 0.5, 0.9])
        summary["proxy"] = {"states": len(grpo), "ratio_quantiles_10_50_90": q.tolist(), "within_factor": inside,
                            "spearman_proxy_vs_mean_delta_mu": spearman([r["proxy"] for r in grpo],
                                                                        [r["delta_mu_prompt_mean"] for r in grpo]),
                            "ratio_to_batch_delta_mu_median": float(np.median([r["proxy"] / r["delta_mu"] for r in grpo]))}
        checks.append(Check(f"§6.2's proxy T·‖g_GRPO‖/E_q[σ_q] is within a factor {PROXY_FACTOR:g} of E_q[Delta_mu_q]",
                            inside >= PROXY_SHARE, f"{inside:.0%} of {len(grpo)} states; proxy / E_q[Delta_mu_q] quantiles "
                            f"10/50/90%: {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}", f"at least {PROXY_SHARE:.0%} of the states",
                            kind="claim"))
    for r in rows:
        del r["w"]
    states = pa.Table.from_pylist(rows)

    for family in FAMILIES:
        for preset in config.presets:
            sel = [r for r in rows if r["family"] == family and r["preset"] == preset]
            x = np.array([r["one_minus_J"] for r in sel])
            J = 1 - x
            eta_rel = np.array([r["eta_crit"] / r["delta_mu"] if r["delta_mu"] > 0 else math.nan for r in sel])
            alpha = np.array([r["alpha_crit"] for r in sel])
            fit_eta = _fit(x, eta_rel, x)  # the cap's form, exponent 1 exactly
            fit_alpha = _fit(x, alpha, theory_lr(preset, J))
            second = np.array([r["eta_crit_second_order"] / r["delta_mu"] if r["delta_mu"] > 0 else math.nan for r in sel])
            summary["one_step"][f"{family} {preset}"] = {"eta_over_delta_mu": fit_eta, "alpha": fit_alpha,
                                                          "second_order_eta_over_delta_mu": _fit(x, second, x),
                                                          "J_range_uncensored": [float(J[np.isfinite(alpha)].min()),
                                                                                 float(J[np.isfinite(alpha)].max())]
                                                          if np.isfinite(alpha).any() else None}
            checks.append(_slope_check(f"one step, {family} states, {preset}: eta_crit/Delta_mu ∝ (1-J)^1 (cap 18)",
                                       fit_eta, ETA_EXPONENT))
            checks.append(_slope_check(f"one step, {family} states, {preset}: critical learning rate scales with 1-J as (17) meets (18)",
                                       fit_alpha, fit_alpha["theory_slope"]))

    crit_rows, tables = [], []
    for preset in config.presets:
        for seed in range(config.seeds):
            r, t = _trajectory_rows(seed, preset, config, advance)
            crit_rows += r
            tables.append(t)
    for preset in config.presets:
        sel = [r for r in crit_rows if r["preset"] == preset]
        J0 = np.array([r["J0"] for r in sel])
        J_end = np.array([r["J_end_theory"] for r in sel])
        fit = _fit(1 - J0, np.array([r["lr_crit"] for r in sel]), theory_lr(preset, J_end))
        summary["trajectory"][preset] = fit
        checks.append(_slope_check(f"trajectory, {preset}: critical learning rate scales with 1-J0 as (17) meets (18)",
                                   fit, fit["theory_slope"]))
    summary["criterion"] = f"a run converges when its odds J/(1-J) grow by {config.odds_gain:g} in {config.steps} steps"
    summary["censored_one_step"] = {f: sum(1 for r in rows if r["family"] == f and not math.isfinite(r["eta_crit"])) for f in FAMILIES}
    return Result({"metrics": pa.concat_tables(tables), "states": states, "critical": pa.Table.from_pylist(crit_rows)}, summary, checks)


def plot(out: Path) -> list[str]:
    s = read_table(out / "states.parquet")
    cs = columns(s, ("one_minus_J", "delta_mu", "eta_crit", "alpha_crit", "eta_crit_second_order"))
    family = np.asarray(s.column("family").to_pylist())
    preset = np.asarray(s.column("preset").to_pylist())
    c = read_table(out / "critical.parquet")
    cc = columns(c, ("J0", "J_end_theory", "lr_crit"))
    cpreset = np.asarray(c.column("preset").to_pylist())
    fig, (a1, a2, a3) = plotting.panels(3, width=4.6)
    markers = {"lean": "o", "trained": "^"}
    colors = {p: f"C{i}" for i, p in enumerate(dict.fromkeys(preset.tolist()))}
    for f in FAMILIES:
        for p in colors:
            sel = (family == f) & (preset == p) & np.isfinite(cs["eta_crit"])
            if not sel.any():
                continue
            x = cs["one_minus_J"][sel]
            a1.loglog(x, cs["eta_crit"][sel] / cs["delta_mu"][sel], markers[f], color=colors[p], alpha=0.6, label=f"{p}, {f}")
            a2.loglog(x, cs["alpha_crit"][sel], markers[f], color=colors[p], alpha=0.6, label=f"{p}, {f}")
            xs = np.sort(x)
            th = theory_lr(p, 1 - xs)
            scale = np.exp(np.mean(np.log(cs["alpha_crit"][sel])) - np.mean(np.log(theory_lr(p, 1 - x))))
            a2.loglog(xs, scale * th, ":", color=colors[p], lw=1)
    xs = np.geomspace(max(np.nanmin(cs["one_minus_J"]), 1e-4), 1, 50)
    finite = np.isfinite(cs["eta_crit"])
    if finite.any():
        mid = np.exp(np.mean(np.log(cs["eta_crit"][finite] / np.abs(cs["delta_mu"][finite]))))
        a1.loglog(xs, mid * xs / np.exp(np.mean(np.log(cs["one_minus_J"][finite]))), "k:", lw=1, label="slope 1 (cap 18)")
    for p in colors:
        sel = (cpreset == p) & np.isfinite(cc["lr_crit"])
        if sel.any():
            x = 1 - cc["J0"][sel]
            a3.loglog(x, cc["lr_crit"][sel], "s", color=colors[p], alpha=0.6, label=p)
            order = np.argsort(x)
            th = theory_lr(p, cc["J_end_theory"][sel])
            scale = np.exp(np.mean(np.log(cc["lr_crit"][sel])) - np.mean(np.log(th)))
            a3.loglog(x[order], scale * th[order], ":", color=colors[p], lw=1)
    a1.set_xlabel("1 - J (objective)")
    a1.set_ylabel("one-step eta_crit / Δμ (unit direction)")
    a2.set_xlabel("1 - J (objective)")
    a2.set_ylabel("one-step critical learning rate α_crit")
    a3.set_xlabel("1 - J0")
    a3.set_ylabel("trajectory critical learning rate")
    for ax in (a1, a2, a3):
        ax.legend(fontsize=6)
    fig.suptitle("Critical step vs success rate (○ lean, △ trained states; dotted: theory's form (17)-(18), scaled to the data)")
    return [plotting.save(fig, out / "success_scaling.png")]


EXPERIMENT = Experiment(
    name="success-scaling",
    title="Critical step vs success rate: eq. (17)-(18), one step and trajectory",
    description=__doc__.split("\n\n")[1],
    config=SuccessScalingConfig,
    run=run,
    plot=plot,
)
