"""Critical steps from a run's own statistics: where each prompt's exact log-odds gain turns negative.

A step θ -> θ + η·w changes prompt c's log-odds ℓ_c = log J_c − log(1 − J_c) by

    f_c(η) = ℓ_c(θ + η·w) − ℓ_c(θ),        f_c'(0) = Δμ_c  (eq. 14, Lemma 3)

so a prompt the direction helps (Δμ_c > 0) gains for small η. Its critical step is the first
η > 0 with f_c(η) <= 0 (App. F: the step past which the realized gain turns negative; the
second-order formula 2Δμ/(Var⁻ − Var⁺) only approximates it, and sees no threshold where
Var⁻ <= Var⁺, e.g. on every T = 32 instance of the controller experiment). Here it is found on
the exact function: a log-spaced scan, then bisection in log η (``prompt_critical_steps``).

With shared parameters, prompts compete: a step along the batch direction w can push one
prompt past its own threshold while the others still gain. Two uses of the per-prompt steps:

- ``cross_prompt_step_size``: a step-size rule for ``simulate`` that scales the whole step to
  ``fraction`` of the smallest critical step over the prompts of the batch, so that no prompt
  the step helps is pushed past its threshold (the cross-prompt controller, §7 at batch level).
- ``predict_critical_rate``: the critical learning rate of fixed-rate training, predicted from a
  short trajectory of that controller (a safe rate at every step): the run's own statistics,
  not a second-order expansion at the start. The prediction is the smallest per-prompt critical
  step over the prompts and the first K steps, or, tolerating some prompts pushed past their
  thresholds (a criterion on the mean J tolerates some lost prompts), the (tolerated + 1)-th
  smallest over the prompts (``smallest_critical_step``), minimized over the steps.

A third rule keeps the batch's exact objective in view instead of the smallest threshold:

- ``capped_line_step_size``: the step along w with the largest exact gain of the objective the
  update ascends (for GRPO Σ_c 2·arcsin(√J_c), not the mean J) among the steps that lower no
  prompt's log J_c by more than ``max_loss`` (a scan of the exact J_c along w). On the controller
  experiment it matches the best fixed rate per cell (final J and steps to the target) in 18 of the
  18 cells its setting was chosen on and 32 of 36 held out (results/controller-cross-prompt).

Prompts the direction does not help (Δμ_c <= 0) lose log-odds at every step size; they have no
threshold to stay below and are left out (nan in the per-prompt steps and the prediction's record).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from rlvrlab import _checks
from rlvrlab.gap import GapStats
from rlvrlab.policies.model import Model
from rlvrlab.updates import Direction, StepContext

__all__ = ["CriticalPrediction", "LINE_OBJECTIVES", "capped_line_step_size", "cross_prompt_step_size", "predict_critical_rate",
           "prompt_critical_steps", "smallest_critical_step"]


def _check_scan(eta_min: float, eta_max: float, points: int, bisection: int) -> None:
    if not (isinstance(eta_min, (int, float)) and isinstance(eta_max, (int, float)) and 0 < eta_min < eta_max < math.inf):
        _checks.fail("eta_min/eta_max", (eta_min, eta_max), "finite numbers with 0 < eta_min < eta_max")
    _checks.integer("points", points, 2)
    _checks.integer("bisection", bisection, 0)


def _masses_along(model: Model, theta: torch.Tensor, w: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log J_c and log(1 − J_c) at θ_r + η_i·w_r for every run r and step η_i of ``grid``: (R, n, C) each."""
    R, d = theta.shape
    at = theta.unsqueeze(1) + grid.view(1, -1, 1) * w.unsqueeze(1)  # (R, n, d)
    return tuple(t.view(R, len(grid), -1) for t in model.masses(at.reshape(-1, d)))


def _log_odds(model: Model, theta: torch.Tensor) -> torch.Tensor:
    log_J, log_1mJ = model.masses(theta)
    return log_J - log_1mJ


def prompt_critical_steps(model: Model, theta: torch.Tensor, w: torch.Tensor, *, eta_min: float = 1e-3,
                          eta_max: float = 1e7, points: int = 41, bisection: int = 20) -> torch.Tensor:
    """Each prompt's exact critical step along w: the first η > 0 with ℓ_c(θ + η·w) <= ℓ_c(θ).

    model: C prompts; theta, w: (R, d). Returns (R, C):

        inf  no step of the scan up to eta_max lowers the prompt's log-odds
        nan  the direction does not help the prompt (Δμ_c <= 0, or J_c is exactly 0 or 1)
        η*   otherwise: f_c is positive on the scan's points below η* (``points`` log-spaced in
             [eta_min, eta_max]) and the crossing is narrowed by ``bisection`` geometric midpoints
             (arithmetic halvings towards 0 when it lies below eta_min); η* is the bracket's
             geometric centre (its upper end where the lower is 0)

    A crossing between two scan points that turns positive again before the next is not seen."""
    _check_scan(eta_min, eta_max, points, bisection)
    R, d = theta.shape
    if w.shape != (R, d):
        _checks.fail("w", f"shape {tuple(w.shape)}", f"the shape of theta, {(R, d)}")
    C = model.n_prompts
    base = _log_odds(model, theta)  # (R, C)
    delta_mu = model.along(theta, w).delta_mu  # (R, C): f_c'(0)
    grid = torch.logspace(math.log10(eta_min), math.log10(eta_max), points, dtype=theta.dtype)  # (n,)
    log_J, log_1mJ = _masses_along(model, theta, w, grid)
    change = (log_J - log_1mJ) - base.unsqueeze(1)  # (R, n, C)
    bad = ~(change > 0)
    found = bad.any(1)  # (R, C)
    first = torch.where(found, bad.to(torch.int8).argmax(1), torch.zeros_like(found, dtype=torch.long))  # (R, C)
    hi = torch.where(found, grid[first], torch.full_like(base, math.inf))
    lo = torch.where(found & (first > 0), grid[(first - 1).clamp(min=0)], torch.zeros_like(base))
    todo = found.clone()
    r_idx = torch.arange(R).repeat_interleave(C)
    for _ in range(bisection if bool(todo.any()) else 0):
        mid = torch.where(lo > 0, (lo * hi).sqrt(), hi / 2)
        mid = torch.where(todo, mid, torch.zeros_like(mid))
        # θ_r + mid_rc·w_r for every (r, c): row (r, c) is read at prompt c only
        at = theta[r_idx] + mid.reshape(-1, 1) * w[r_idx]  # (R·C, d)
        f = _log_odds(model, at).view(R, C, C)[:, torch.arange(C), torch.arange(C)] - base  # (R, C)
        gain = f > 0
        lo = torch.where(todo & gain, mid, lo)
        hi = torch.where(todo & ~gain, mid, hi)
    crit = torch.where(lo > 0, (lo * hi).sqrt(), hi)
    helped = torch.isfinite(base) & (delta_mu > 0)
    return torch.where(helped, crit, torch.full_like(crit, math.nan))


def smallest_critical_step(crit: torch.Tensor, weights: torch.Tensor, *, tolerated: int = 0) -> torch.Tensor:
    """The (tolerated + 1)-th smallest critical step (R,) over the prompts of the batch (weight > 0)
    that have one (not nan): the largest step that pushes at most ``tolerated`` of them past their
    thresholds (inf where fewer than tolerated + 1 prompts have a finite one). crit, weights: (R, C)."""
    _checks.integer("tolerated", tolerated, 0)
    usable = (weights > 0) & ~torch.isnan(crit)
    masked = torch.where(usable, crit, torch.full_like(crit, math.inf))
    if tolerated >= crit.shape[-1]:
        return torch.full(crit.shape[:-1], math.inf, dtype=crit.dtype)
    return masked.sort(-1).values[..., tolerated]


def cross_prompt_step_size(*, fraction: float = 0.5, eta_max: float = 1e5, eta_min: float = 1e-3, points: int = 41,
                           bisection: int = 12) -> Callable[[StepContext, GapStats, Direction], torch.Tensor]:
    """simulate's step-size rule: η_k = min(fraction · min_c η*_c, eta_max).

    η*_c is prompt c's exact critical step along the step's direction w (prompt_critical_steps,
    scanned over [eta_min, 10·eta_max]), the minimum over the prompts the step trains on
    (weight > 0) that it helps (Δμ_c > 0). With fraction < 1 every such prompt gains log-odds
    (up to a crossing the scan misses); fraction = 1/2 maximizes the second-order gain of the prompt
    at its threshold. Where no prompt has a threshold up to 10·eta_max the step is eta_max; where
    the direction helps no prompt, it is 0."""
    _check_fraction(fraction)
    _check_scan(eta_min, 10 * eta_max, points, bisection)

    def rule(ctx: StepContext, stats: GapStats, direction: Direction) -> torch.Tensor:
        crit = prompt_critical_steps(ctx.model, ctx.theta, direction.w, eta_min=eta_min, eta_max=10 * eta_max,
                                     points=points, bisection=bisection)
        return _controller_step(crit, ctx.weights, fraction, eta_max).to(ctx.theta.dtype)

    rule.__name__ = "cross-prompt"
    return rule


LINE_OBJECTIVES = ("arcsin", "J")


def _line_objective(objective: str, log_J: torch.Tensor) -> torch.Tensor:
    """Per prompt, the objective a capped line search maximizes: 2·arcsin(√J_c) or J_c."""
    J = log_J.exp().clamp(max=1.0)
    return 2 * torch.arcsin(J.sqrt()) if objective == "arcsin" else J


def capped_line_step_size(*, objective: str = "arcsin", max_loss: float = 2.0, fraction: float = 1.0, eta_max: float = 3e3,
                          eta_min: float = 1e-2, points: int = 61) -> Callable[[StepContext, GapStats, Direction], torch.Tensor]:
    """simulate's step-size rule: the step along w with the largest exact gain of the objective the
    direction ascends, among the steps that lower no prompt's log-success log J_c by more than ``max_loss``.

    On ``points`` log-spaced steps η_1 < … < η_n of [eta_min, eta_max], with the batch's objective
    Φ_b(η) = Σ_c weights_c φ(J_c(θ + η·w)) and each prompt's change g_c(η) = log J_c(θ + η·w) − log J_c(θ):

        η_k = fraction · argmax { Φ_b(η_i) : i < i_cap },    i_cap = the first i with min_c g_c(η_i) < −max_loss

    over the prompts with weight > 0 (i_cap = n + 1 when no scan step breaks the cap); where even
    η_1 breaks it, the step is 0.

    φ = ``objective``: "arcsin", φ(J) = 2·arcsin(√J), is the objective GRPO's expected update
    ascends: with the exact σ_c, E[(r − J_c)/σ_c · ∇log π] = ∇J_c/σ_c = ∇ 2·arcsin(√J_c)
    (tested: on the token bandit GRPO's expected update is ∇Φ/T). "J", φ(J) = J, is what REINFORCE
    ascends. A line search on an objective the direction does not ascend can stall: on the
    controller experiment, maximizing the plain mean J along GRPO's direction took steps of eta_min
    for hundreds of steps at states where GRPO's 1/σ_c weight on a nearly lost prompt makes every
    step lower the mean J (final J 0.95 where the best fixed rate reaches 0.99).

    The cross-prompt controller (cross_prompt_step_size) keeps every prompt the step helps from
    losing anything and shrinks the whole step to the smallest such threshold; this one trades the
    batch's exact gain against a bounded loss per prompt and step, so a prompt the update does not
    help is pushed down by at most a factor e^max_loss of its J_c at a time instead of onto a wrong
    token in one step. The cap is on log J_c, not the log-odds: for a prompt near failure the two
    agree, while a nearly solved prompt may lose log-odds (J_c from 0.999 to 0.99) at almost no
    cost; capping its log-odds held the late steps small."""
    _checks.choose("objective", objective, LINE_OBJECTIVES)
    if not (isinstance(max_loss, (int, float)) and 0 < max_loss < math.inf):
        _checks.fail("max_loss", max_loss, "a finite number > 0")
    _check_fraction(fraction)
    _check_scan(eta_min, eta_max, points, 0)
    grid = torch.logspace(math.log10(eta_min), math.log10(eta_max), points, dtype=torch.float64)

    def rule(ctx: StepContext, stats: GapStats, direction: Direction) -> torch.Tensor:
        theta, weights = ctx.theta, ctx.weights
        g = grid.to(theta.dtype)
        log_J0 = ctx.model.masses(theta)[0]  # (R, C)
        log_J = _masses_along(ctx.model, theta, direction.w, g)[0]  # (R, n, C)
        change = log_J - log_J0.unsqueeze(1)
        in_batch = (weights > 0).unsqueeze(1)
        broken = (in_batch & ~(change >= -max_loss)).any(-1)  # (R, n); nan counts as broken
        allowed = (~broken).to(torch.int8).cumprod(1).bool()  # the scan's steps below the first broken one
        value = (weights.unsqueeze(1) * _line_objective(objective, log_J)).sum(-1)
        gain = torch.where(allowed, value, torch.full_like(value, -math.inf))
        eta = fraction * g[gain.argmax(1)]
        return torch.where(allowed[:, 0], eta, torch.zeros_like(eta))

    rule.__name__ = "capped-line"
    return rule


def _check_fraction(fraction: float) -> None:
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        _checks.fail("fraction", fraction, "a number in (0, 1]")


def _controller_step(crit: torch.Tensor, weights: torch.Tensor, fraction: float, eta_max: float) -> torch.Tensor:
    """cross_prompt_step_size's η (R,) from the per-prompt critical steps (R, C)."""
    helped = ((weights > 0) & ~torch.isnan(crit)).any(-1)
    eta = (fraction * smallest_critical_step(crit, weights)).clamp(max=eta_max)
    return torch.where(helped, eta, torch.zeros_like(eta))


class CriticalPrediction(NamedTuple):
    """predict_critical_rate's record of the safe trajectory, step k = 0 … K-1: each prompt's
    critical step ``thresholds`` (K, C) (nan: the update does not help the prompt, Δμ_c <= 0;
    inf: no threshold on the scan), the step taken ``eta`` (K,) and the objective J before it (K,)."""

    thresholds: torch.Tensor
    eta: torch.Tensor
    J: torch.Tensor

    def per_step(self, tolerated: int = 0) -> torch.Tensor:
        """m_k (K,): the (tolerated + 1)-th smallest critical step over the prompts at step k."""
        return smallest_critical_step(self.thresholds, torch.ones_like(self.thresholds), tolerated=tolerated)

    def rate(self, tolerated: int = 0) -> float:
        """The predicted critical rate min_k m_k (inf where no step shows enough thresholds)."""
        return float(self.per_step(tolerated).min())


def predict_critical_rate(model: Model, theta0: torch.Tensor, direction: Callable[[StepContext], Direction], *,
                          steps: int = 10, fraction: float = 0.5, eta_max: float = 1e5, eta_min: float = 1e-3,
                          points: int = 41, bisection: int = 12) -> CriticalPrediction:
    """The critical learning rate of fixed-rate training along ``direction``, from the run's own statistics.

    Along a safe trajectory θ_0, …, θ_{K-1} (K = ``steps``) — the cross-prompt controller's,
    θ_{k+1} = θ_k + η_k·w_k with η_k = min(fraction · m_k, eta_max) — record every prompt's exact
    critical step η*_c(θ_k, w_k) (prompt_critical_steps). The prediction (``.rate(tolerated)``) is

        η̂ = min_{k < K} m_k,    m_k = the (tolerated + 1)-th smallest η*_c(θ_k, w_k) over the prompts

    with tolerated = 0 the smallest step, over the prompts and the first K steps, at which some
    prompt's log-odds gain along the update turns negative. A fixed rate α moves θ by α·w_k, so η̂
    is in units of the rate: a fixed rate above η̂ pushes more than ``tolerated`` prompts past their
    thresholds at some state the safe run passes through. Not a guarantee of anything about the
    fixed-rate run: it passes through other states, and a prompt pushed back once may recover. On
    the contextual token bandit it ranks cells well but sits 3-200x below the measured critical
    rate (phase; results/phase-prediction): fixed-rate runs recover most prompts pushed past their
    thresholds in their first steps.

    model: C prompts, weighted equally; theta0: (1, d); direction: a rule of
    rlvrlab.updates.make_direction (an expected update makes the trajectory deterministic)."""
    _checks.integer("steps", steps)
    _check_fraction(fraction)
    _check_scan(eta_min, 10 * eta_max, points, bisection)
    if theta0.dim() != 2 or theta0.shape[0] != 1 or theta0.shape[1] != model.n_params:
        _checks.fail("theta0", f"shape {tuple(theta0.shape)}", f"(1, {model.n_params}): one run")
    C = model.n_prompts
    weights = torch.full((1, C), 1.0 / C, dtype=theta0.dtype)
    constants = model.constants()
    theta = theta0.clone()
    thresholds, etas, Js = [], [], []
    for k in range(steps):
        w = direction(StepContext(k, steps, theta, model, weights, constants)).w
        crit = prompt_critical_steps(model, theta, w, eta_min=eta_min, eta_max=10 * eta_max, points=points,
                                     bisection=bisection)  # (1, C)
        eta = _controller_step(crit, weights, fraction, eta_max)  # (1,)
        thresholds.append(crit[0])
        etas.append(eta[0])
        Js.append((weights * model.masses(theta)[0].exp()).sum())
        theta = theta + eta.unsqueeze(-1) * w
    return CriticalPrediction(torch.stack(thresholds), torch.stack(etas), torch.stack(Js))
