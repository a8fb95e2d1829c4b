"""The Gradient Gap measured inside real training, from one extra forward pass (DESIGN.md).

Per-sample gradients of a language model are too expensive, but the theory only needs quantities
along the step actually taken. After the optimizer step (any optimizer), the log-ratio of every
sampled response, ΔL_i = log π_new(o_i) - log π_old(o_i), gives, per prompt and for the batch:

    Δμ·η ≈ mean+(ΔL) - mean-(ΔL)                         first order (Lemma 1)
    Δ log-odds ≈ log mean+(e^ΔL) - log mean-(e^ΔL)        Lemma 3, exact in expectation
    var± = Var±(ΔL) / η²                                   the spread along the step (App. F)
    ratio = η / η_crit = (Var-(ΔL) - Var+(ΔL)) / (2 (mean+ΔL - mean-ΔL))

with η = ‖θ_new - θ_old‖ and η_crit = 2Δμ/(var- - var+) the second-order critical step. The ratio
does not depend on how η is measured: above 1 the step is past the point where the second-order
log-odds gain turns negative. Per-prompt values need both correct and incorrect samples in the
group ("mixed" prompts); the batch values pool every sample (P+ and P- of Section 5).

A post-step pass may measure a stratified sample of the groups instead of all of them
(``measured_groups``): every group with both outcomes, every group the caller measures for
certain (the trainers: one completion repeated, ``repeated_groups``, which costs one row), and of
the other groups all right (all wrong) a random k of U, each counted U/k times (``group_weights``). The counts of each side are then the
batch's own, so each side's mean of ΔL (of e^ΔL) is unbiased for the full pass's, and the
standard errors add the variance of that sampling (``_sampling_variance``, unbiased from k = 2
on). The per-prompt values of the mixed groups are exact; the groups left out have no var±.

The paper's own proxy (§6.2) is reported too: g_GRPO ∝ sqrt(J(1-J))(g+ - g-)/T, so
Δμ ≈ ‖g_GRPO‖ · T / mean sqrt(J(1-J)) up to a constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from rlvrlab import _checks
from rlvrlab.gap import gap_stats_mc, realized_log_odds_change
from rlvrlab.theory import eta_crit_second_order

__all__ = ["PROMPT_COLUMNS", "GapAdaptiveRate", "critical_rate", "critical_ratio", "diagnostics", "group_weights", "measured_groups",
           "prompt_diagnostics", "repeated_groups", "step_diagnostics", "vocabulary"]


def _mean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else math.nan


def critical_ratio(delta_mu_eta: torch.Tensor, var_plus: torch.Tensor, var_minus: torch.Tensor) -> torch.Tensor:
    """ratio = η / η_crit from the log-ratio moments along the step taken.

    In log-ratio units (ΔL = η·s + O(η²)) the second-order critical step of rlvrlab.theory,
    η_crit = 2Δμ/(var- - var+), is η times c = eta_crit_second_order(Δμ·η, Var+ΔL, Var-ΔL), so
    the ratio is 1/c, with theory's convention carried over: no second-order threshold
    (var- <= var+, c = inf) gives 0, a step against the gap (Δμ·η <= 0, c = 0) gives inf (every
    step is past it), and an undefined Δμ (no mixed group) gives NaN.
    """
    c = torch.as_tensor(eta_crit_second_order(delta_mu_eta.nan_to_num(0.0), var_plus.nan_to_num(0.0),
                                              var_minus.nan_to_num(0.0)))
    ratio = torch.where(c > 0, 1 / c.where(c > 0, torch.ones_like(c)), torch.full_like(c, math.inf))
    return torch.where(torch.isnan(delta_mu_eta), torch.full_like(ratio, math.nan), ratio)


def repeated_groups(completion_ids: torch.Tensor, completion_mask: torch.Tensor, group: int) -> torch.Tensor:
    """(B,) bool: the groups whose G completions (N = B·G rows, groups consecutive) are one
    completion repeated, which a pass over distinct completions runs as one row."""
    ids = completion_ids.masked_fill(~completion_mask.to(torch.bool), -1)
    ids = ids.view(-1, group, ids.shape[-1])
    return (ids == ids[:, :1]).all(-1).all(-1)


def measured_groups(reward: torch.Tensor, fraction: float = 1.0, generator: torch.Generator | None = None, *,
                    always: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) bool: the groups a post-step pass measures, a stratified sample of the batch's groups.

    Every group with both outcomes ("mixed": the only ones that carry a prompt's own gap signal),
    every group ``always`` names (B,) bool (the trainers: a group that is one completion repeated,
    which costs the pass one row), and of the other U groups whose completions all succeeded a
    uniform random k = min(U, max(2, ⌈fraction·U⌉)) without replacement, and the same of those
    whose completions all failed (``group_weights`` counts each measured one U/k times). Two at
    least, so that the sample's own variance can be estimated (``_sampling_variance``).
    ``fraction`` 1 measures every group: the full pass, whose sums the sample's weighted sums
    estimate without bias.
    """
    if not 0 < fraction <= 1:
        _checks.fail("fraction", fraction, "a number in (0, 1]")
    success = reward.to(torch.bool)
    keep = success.any(-1) & ~success.all(-1)
    if fraction == 1:
        return torch.ones_like(keep)
    if always is not None:
        keep |= always.to(keep.device, torch.bool)
    for stratum in _strata(success, always):
        idx = stratum.nonzero().squeeze(1)
        k = min(idx.numel(), max(2, math.ceil(fraction * idx.numel())))
        order = torch.randperm(idx.numel(), generator=generator, device=generator.device if generator is not None else "cpu")
        keep[idx[order[:k].to(idx.device)]] = True
    return keep


def _strata(success: torch.Tensor, always: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The groups sampled from: all succeeded, all failed (B,) bool each, without those ``always`` names."""
    right, wrong = success.all(-1), ~success.any(-1)
    if always is None:
        return right, wrong
    other = ~always.to(success.device, torch.bool)
    return right & other, wrong & other


def group_weights(reward: torch.Tensor, measured: torch.Tensor, always: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) frequency weights of ``measured_groups``' sample: 1 for a mixed group or one ``always``
    names, U/k for a measured one of a stratum (all succeeded, or all failed) of which k of U were
    measured, 0 for a group not measured. The weighted counts of successes and failures are the
    batch's own."""
    weight = measured.to(torch.float64)
    for stratum in _strata(reward.to(torch.bool), always):
        k = int((stratum & measured).sum())
        if k:
            weight = torch.where(stratum & measured, float(stratum.sum()) / k, weight)
    return weight


def _sampling_variance(y: torch.Tensor, stratum: torch.Tensor, side: torch.Tensor, measured: torch.Tensor, n: float) -> float:
    """The variance that measuring k of a stratum's U groups ((B,) bool, all on one side) adds to
    that side's weighted mean of y (y, side: (B, G)): U²(1 − k/U)·s²/k over n², with s² the sample
    variance of the measured groups' totals of y (sampling without replacement; its expectation over
    the samples is the variance the estimate has)."""
    U, k = int(stratum.sum()), int((stratum & measured).sum())
    if k >= U or k < 2:
        return 0.0
    totals = torch.where(side, y, 0.0)[stratum & measured].double().sum(-1)
    return U * U * (1 - k / U) * float(totals.var()) / k / (n * n)


PROMPT_COLUMNS = ("J", "delta_mu_eta", "log_odds_change", "var_plus", "var_minus", "crit_ratio")


def prompt_diagnostics(delta_logp: torch.Tensor, reward: torch.Tensor, *, eta: float,
                       measured: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per prompt (one group of G completions each), the quantities ``step_diagnostics`` averages:
    each a (B,) tensor, NaN where the group lacks what it needs.

    J               the group's success rate n+/G
    delta_mu_eta    mean+(ΔL) - mean-(ΔL), the first-order Δμ_q·η (both outcomes needed)
    log_odds_change Lemma 3's realized change of the prompt's log-odds
    var_plus/minus  Var±(ΔL)/η², the spread along the step in score units (2 samples of the side needed)
    crit_ratio      η/η_crit,q (``critical_ratio``), on mixed prompts only
    mixed           True where the group has both outcomes (bool)

    measured: (B,) bool, the groups whose ΔL was measured (``measured_groups``; None: all). A
    group left out has NaN var± (every mixed group is measured).

    §4's success-rate scaling (eq. 18) reads off these: η_crit,q/Δμ_q = 2/(var_minus - var_plus)
    should grow like 1 - J_q.
    """
    return diagnostics(delta_logp, reward, eta=eta, measured=measured)[1]


def step_diagnostics(delta_logp: torch.Tensor, reward: torch.Tensor, *, eta: float, grad_norm: float = math.nan,
                     mean_length: float = math.nan, measured: torch.Tensor | None = None,
                     always: torch.Tensor | None = None) -> dict[str, float]:
    """``gap/...`` diagnostics of one step from the post-step log-ratios.

    delta_logp: (B, G) log π_new(o) - log π_old(o) of each sampled completion
    reward:     (B, G) 0/1
    eta:        ‖θ_new - θ_old‖ (for the score-unit variances and eta_crit; NaN: not measured)
    grad_norm, mean_length: for the paper's ‖g_GRPO‖ proxy
    measured:   (B,) bool, the groups whose ΔL was measured (``measured_groups``), None: all. The
                pooled values then weight each measured group by ``group_weights`` (unbiased for
                the full pass's sums, with the same counts) and their standard errors add the
                variance of that sampling (``_sampling_variance``); ΔL of the groups left out is
                never read.
    always:     (B,) bool, the unmixed groups ``measured_groups`` measured for certain (weight 1,
                outside the strata sampled from), None: none.

    The critical step follows rlvrlab.theory's convention (see ``critical_ratio``): crit_ratio
    is 0 and eta_crit inf where there is no threshold, crit_ratio inf and eta_crit 0 after a step
    against the gap, NaN where no group has both outcomes. The per-prompt mean and max are over
    prompts with a finite ratio; ``prompts_past_crit`` counts every mixed prompt above 1.
    """
    return diagnostics(delta_logp, reward, eta=eta, grad_norm=grad_norm, mean_length=mean_length, measured=measured,
                       always=always)[0]


def diagnostics(delta_logp: torch.Tensor, reward: torch.Tensor, *, eta: float, grad_norm: float = math.nan,
                mean_length: float = math.nan, measured: torch.Tensor | None = None, always: torch.Tensor | None = None
                ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """``step_diagnostics`` and ``prompt_diagnostics`` of the same inputs at once (the monitor needs
    both, and the per-group values feed the step's prompt means): the groups (B, G) and the
    pooled batch (1, B·G), each in one call."""
    B, G = reward.shape
    weight = None if measured is None or bool(measured.all()) else group_weights(reward, measured, always)
    stats = gap_stats_mc(reward, proj=delta_logp)  # per group: delta_mu = first order Δμ·η, var± of ΔL
    realized, _ = realized_log_odds_change(delta_logp, reward)
    flat = None if weight is None else weight.repeat_interleave(G)[None]
    pooled = gap_stats_mc(reward.reshape(1, -1), proj=delta_logp.reshape(1, -1), weight=flat)  # the batch as one
    change, se_change = realized_log_odds_change(delta_logp.reshape(1, -1), reward.reshape(1, -1), weight=flat)
    mixed = stats.defined
    e2 = eta * eta if eta > 0 else math.nan
    seen = torch.ones_like(mixed) if measured is None else measured.to(torch.bool)
    per = {"J": reward.float().mean(-1), "delta_mu_eta": torch.where(mixed, stats.delta_mu, torch.nan),
           "log_odds_change": torch.where(mixed, realized, torch.nan),
           "var_plus": torch.where(seen, stats.var_plus / e2, torch.nan),
           "var_minus": torch.where(seen, stats.var_minus / e2, torch.nan),
           "crit_ratio": torch.where(mixed, critical_ratio(stats.delta_mu, stats.var_plus, stats.var_minus), torch.nan),
           "mixed": mixed}
    se_first, se_change = float(pooled.se_delta_mu[0]), float(se_change[0])
    if weight is not None:  # add what measuring a sample of the unmixed groups costs
        add_first = add_change = 0.0
        for side, stratum in zip((reward.to(torch.bool), ~reward.to(torch.bool)), _strata(reward.to(torch.bool), always)):
            ws = torch.where(side, weight[:, None], 0.0)  # 0 for a group not measured
            n = float(ws.sum())
            if n == 0:
                continue
            y = torch.where(ws > 0, delta_logp.double(), 0.0)
            add_first += _sampling_variance(y, stratum, side, measured, n)
            e = torch.where(ws > 0, torch.exp(y - float(y[ws > 0].max())), 0.0)  # the log-mean-exp's terms, shifted
            mean_e = float((ws * e).sum()) / n
            add_change += _sampling_variance(e, stratum, side, measured, n) / (mean_e * mean_e)
        se_first, se_change = math.sqrt(se_first**2 + add_first), math.sqrt(se_change**2 + add_change)
    ratio = per["crit_ratio"]
    finite = torch.isfinite(ratio)
    b_ratio = float(critical_ratio(pooled.delta_mu, pooled.var_plus, pooled.var_minus)[0])
    b_first, b_vp, b_vm = float(pooled.delta_mu[0]), float(pooled.var_plus[0]), float(pooled.var_minus[0])
    spread = torch.sqrt(per["J"] * (1 - per["J"]))
    proxy = grad_norm * mean_length / float(spread[mixed].mean()) if bool(mixed.any()) else math.nan
    return {
        "gap/J": float(reward.float().mean()),
        "gap/delta_mu_eta": b_first,
        "gap/se_delta_mu_eta": se_first,
        "gap/log_odds_change": float(change[0]),
        "gap/se_log_odds_change": se_change,
        "gap/delta_mu_eta_prompt": _mean(per["delta_mu_eta"][mixed]),
        "gap/log_odds_change_prompt": _mean(per["log_odds_change"][mixed]),
        "gap/var_plus": b_vp / e2,
        "gap/var_minus": b_vm / e2,
        "gap/eta": eta,
        "gap/crit_ratio": b_ratio,
        "gap/eta_crit": critical_rate(eta, b_ratio),  # η/ratio, in the same convention as lr_crit
        "gap/crit_ratio_prompt_mean": _mean(ratio[finite]),
        "gap/crit_ratio_prompt_max": float(ratio[finite].max()) if bool(finite.any()) else math.nan,
        "gap/prompts_past_crit": float((ratio > 1).sum()),
        "gap/mixed_prompts": float(mixed.sum()),
        "gap/measured_groups": float(B if measured is None else measured.sum()),
        "gap/zero_variance_groups": float((~mixed).float().mean()),
        "gap/grpo_norm_proxy": proxy,
    }, per


def vocabulary(columns: Mapping[str, np.ndarray], prefix: str = "gap/") -> dict[str, np.ndarray]:
    """DESIGN.md's vocabulary columns of a run's metrics, from the trainer's ``gap/*`` columns:
    J, log_odds = log(J/(1-J)) (infinite where a batch is all right or all wrong), M, eta, and
    delta_mu = (Δμ·η)/η. Each column (n,) per step."""
    J, eta = np.asarray(columns[prefix + "J"], float), np.asarray(columns[prefix + "eta"], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"J": J, "log_odds": np.log(J / (1 - J)), "M": np.asarray(columns[prefix + "M"], float), "eta": eta,
                "delta_mu": np.asarray(columns[prefix + "delta_mu_eta"], float) / eta}


def critical_rate(lr: float, ratio: float) -> float:
    """The learning rate at which the step would reach the critical step, lr/ratio: inf where
    there is no threshold (ratio 0), 0 after a step against the gap (ratio inf), NaN undefined."""
    if math.isnan(ratio):
        return math.nan
    return math.inf if ratio == 0 else lr / ratio


@dataclass
class GapAdaptiveRate:
    """The gap-adaptive learning-rate rule, shared by rlvrlab's trainer and the TRL integration.

    After a step at rate lr with estimated ratio r = η/η_crit, lr/r estimates the critical rate.
    One batch's estimate is noisy, so the rule follows its geometric running mean (weight
    `smoothing` on the past, in `log_lr_crit`): the next rate is `fraction` of it, moving at most
    a factor 2 per step and kept in [lr_min, lr_max]. While no threshold is in sight (r undefined
    or ≤ 0) the rate grows by `growth`. A step at rate 0 (a warm-up's first) carries no
    information and leaves everything as it is.

    With `ratchet` the rule aims at the lowest running mean seen so far instead of the current
    one, once the mean has averaged about 1/(1 − smoothing) estimates (`estimates`): the critical
    rate falls as the success rate rises (eq. 17–18), so an estimate that rises during training
    (as `gap/lr_crit` does on the language models, 2–4.6e-4 early to 1.1–1.9e-3 late on add) is
    read as the estimate's drift, not as room for a larger step.

    `prior` starts the running mean at a critical rate measured before training (the probe's), so
    that the first rate is aimed, not grown; the prior is not counted among the ratchet's estimates.
    """

    fraction: float = 0.5
    smoothing: float = 0.8
    growth: float = 1.1
    lr_min: float = 1e-6
    lr_max: float = 1e-1
    ratchet: bool = False
    log_lr_crit: float = math.nan
    log_lr_crit_min: float = math.nan  # ratchet: the lowest running mean since the warm-up
    estimates: int = 0  # finite estimates folded into the running mean

    @staticmethod
    def check(fraction: float, smoothing: float, growth: float, *, prefix: str) -> None:
        """The rule's settings, as a config names them (``prefix`` + fraction / smoothing / growth)."""
        if not 0 < fraction <= 1:
            _checks.fail(f"{prefix}fraction", fraction, "a number in (0, 1]")
        if not 0 <= smoothing < 1:
            _checks.fail(f"{prefix}smoothing", smoothing, "a number in [0, 1)")
        if not 1 <= growth <= 2:
            _checks.fail(f"{prefix}growth", growth, "a number in [1, 2]")

    def prior(self, critical_rate: float) -> float:
        """Start the running critical rate at ``critical_rate`` (finite and > 0; anything else leaves
        the rule as it is) and return the rate the rule then aims at, ``fraction`` of it (NaN where
        the prior was not taken)."""
        if not (math.isfinite(critical_rate) and critical_rate > 0):
            return math.nan
        self.log_lr_crit = math.log(critical_rate)
        return self.fraction * critical_rate

    def __call__(self, ratio: float, lr: float) -> float:
        """The next rate after a step at rate ``lr`` whose estimated crit_ratio was ``ratio``."""
        if not lr > 0:
            return lr
        if math.isfinite(ratio) and ratio > 0:
            x = math.log(lr / ratio)
            a = self.smoothing
            self.log_lr_crit = x if math.isnan(self.log_lr_crit) else a * self.log_lr_crit + (1 - a) * x
            self.estimates += 1
            if self.ratchet and self.estimates >= round(1 / (1 - a)):
                self.log_lr_crit_min = min(self.log_lr_crit, self.log_lr_crit_min) if math.isfinite(self.log_lr_crit_min) \
                    else self.log_lr_crit
        if math.isnan(self.log_lr_crit):
            target = self.growth * lr
        else:
            aim = min(self.log_lr_crit, self.log_lr_crit_min) if math.isfinite(self.log_lr_crit_min) else self.log_lr_crit
            target = self.fraction * math.exp(aim)
        new = min(max(target, lr / 2), 2 * lr)
        return min(max(new, self.lr_min), self.lr_max)
