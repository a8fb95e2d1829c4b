"""Two statements of the main paper read on a corpus of language-model GRPO runs (the per-step
rows of rlvrlab's trainer, e.g. warning-bench's 216 runs).

- **The ‖g_GRPO‖ proxy (§6.2).** Figure 2's x-axis approximates the batch-average Gap Alignment
  E_q[Δμ_q] by the GRPO gradient's norm rescaled by √(J_q(1−J_q)) (``gap/grpo_norm_proxy``).
  ``proxy_against_gap`` compares it step by step with Δμ measured from completions the step never
  saw (``gap_fresh/delta_mu_eta`` / ``gap/eta``: unbiased, Lemma 3), and asks which cumulative
  alignment, Σ proxy·η, the unbiased M (``gap_fresh/M``) or the in-sample one (``gap/M``), orders
  held-out accuracy better over many runs pooled (Figure 2's relation).
- **A vanishing gap stalls learning (§3.2.1).** With all G completions of a prompt right or all
  wrong, GRPO's advantage is 0 and the prompt gives no gradient: the more of a batch is such
  groups, the less progress. ``vanishing_gap_against_progress`` relates, between consecutive
  held-out evaluations, the mean share of groups without reward variance
  (``frac_reward_zero_std``) to the change of held-out accuracy, over runs that did not collapse
  (a collapse makes every group all-wrong: there the share is an effect, not a cause).
- **Figure 2 interval by interval** (``alignment_against_progress``): the alignment gained between
  two evaluations against the accuracy gained, also at the same point of training.
- **The critical step shrinks with the success rate (§4, eq. 18)**, prompt by prompt
  (``prompt_success_scaling``, on the trainer's per-prompt table, ``prompt_table``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlvrlab.analysis.stats import SlopeFit, loglog_exponents, loglog_slope, spearman, spearman_ci

__all__ = ["MIN_INTERVALS", "alignment_against_progress", "figure2_relation", "prompt_success_scaling", "proxy_against_gap",
           "vanishing_gap_against_progress"]

Row = Mapping[str, float]
MIN_INTERVALS = 20  # fewer evaluation intervals than this cannot decide Figure 2's interval check (lm-grpo's quick run has 15)
_NO_FIT = SlopeFit(math.nan, math.nan, math.nan, 0, math.nan)


def _col(rows: Sequence[Row], key: str) -> np.ndarray:
    return np.asarray([float(r.get(key, math.nan)) for r in rows], float)


def proxy_against_gap(runs: Mapping[str, Sequence[Row]], groups: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The proxy against the unbiased Δμ over every step of every run, and Figure 2's relation
    with each (``figure2``: ``figure2_relation``). Returns: ``steps`` compared;
    ``spearman_pooled`` (over all steps) with its 95% CI; ``spearman_median_per_run`` (runs with
    at least 10 such steps); ``ratio_median`` (proxy / Δμ over steps with Δμ > 0)."""
    xs, ys, per_run, ratios = [], [], [], []
    for rows in runs.values():
        proxy, fresh = _col(rows, "gap/grpo_norm_proxy"), _delta_mu_fresh(rows)
        ok = np.isfinite(proxy) & np.isfinite(fresh)
        xs.append(proxy[ok])
        ys.append(fresh[ok])
        if ok.sum() >= 10:
            per_run.append(spearman(proxy[ok], fresh[ok]))
        pos = ok & (fresh > 0)
        ratios.append(proxy[pos] / fresh[pos])
    x, y = np.concatenate(xs), np.concatenate(ys)
    return {
        "steps": int(len(x)), "spearman_pooled": spearman(x, y), "spearman_pooled_ci": list(spearman_ci(x, y)),
        "spearman_median_per_run": float(np.nanmedian(per_run)) if per_run else math.nan,
        "ratio_median": float(np.median(np.concatenate(ratios))) if sum(map(len, ratios)) else math.nan,
        "figure2": figure2_relation(runs, groups),
    }


def _delta_mu_fresh(rows: Sequence[Row]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return _col(rows, "gap_fresh/delta_mu_eta") / _col(rows, "gap/eta")


def figure2_relation(runs: Mapping[str, Sequence[Row]], groups: Mapping[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Per group of runs (``groups``: run → group, e.g. its task; one group "all" by default)
    Spearman's ρ of held-out accuracy against each cumulative alignment over all the group's
    evaluations pooled: Σ[proxy·η]₊ (``spearman_proxy``), the unbiased gap_fresh/M
    (``spearman_unbiased``) and the in-sample gap/M (``spearman_in_sample``). Within one run any
    cumulative sum orders the evaluations by step, so only runs pooled can tell the three apart."""
    pooled: dict[str, dict[str, list[np.ndarray]]] = {}
    for name, rows in runs.items():
        acc = _col(rows, "eval/accuracy")
        ev = np.isfinite(acc)
        step_proxy = _col(rows, "gap/grpo_norm_proxy") * _col(rows, "gap/eta")
        cumulative = {"proxy": np.cumsum(np.where(np.isfinite(step_proxy), np.maximum(step_proxy, 0), 0.0)),
                      "unbiased": _col(rows, "gap_fresh/M"), "in_sample": _col(rows, "gap/M")}
        group = pooled.setdefault((groups or {}).get(name, "all"), {"accuracy": [], **{k: [] for k in cumulative}})
        group["accuracy"].append(acc[ev])
        for k, m in cumulative.items():
            group[k].append(m[ev])
    figure2 = {}
    for g, cols in pooled.items():
        acc = np.concatenate(cols["accuracy"])
        figure2[g] = {"evaluations": int(len(acc))}
        for k in ("proxy", "unbiased", "in_sample"):
            m = np.concatenate(cols[k])
            ok = np.isfinite(m)
            figure2[g][f"spearman_{k}"] = spearman(m[ok], acc[ok]) if ok.sum() >= 4 else math.nan
    return figure2


def alignment_against_progress(runs: Mapping[str, Sequence[Row]], collapsed: set[str] | frozenset[str] = frozenset(),
                               groups: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Figure 2 interval by interval: between consecutive held-out evaluations of the runs not in
    ``collapsed``, the alignment gained over the interval (ΔM, in-sample ``gap/M`` and unbiased
    ``gap_fresh/M``) against the change of held-out accuracy over it.

    Within one run M only grows, so ρ(M, accuracy) over its evaluations ranks them by step; the
    increments ask more: do the intervals whose steps aligned more gain more? Both are compared
    raw and ``at_same_step``: centred on the mean over the intervals that end at the same step in
    the same group (``groups``: run → group, e.g. its task), so that early intervals, which both
    align more and gain more, do not make the correlation alone. Returns per estimator of M the
    number of intervals, Spearman's ρ with its 95% CI, raw and at the same step."""
    keys = {"in_sample": "gap/M", "unbiased": "gap_fresh/M"}
    d_acc: list[float] = []
    d_m: dict[str, list[float]] = {k: [] for k in keys}
    strata: list[tuple[str, float]] = []
    for name, rows in runs.items():
        if name in collapsed:
            continue
        steps, acc = _col(rows, "step"), _col(rows, "eval/accuracy")
        M = {k: _col(rows, c) for k, c in keys.items()}
        ev = np.flatnonzero(np.isfinite(acc))
        for a, b in zip(ev[:-1], ev[1:]):
            d_acc.append(float(acc[b] - acc[a]))
            strata.append(((groups or {}).get(name, "all"), float(steps[b])))
            for k in keys:
                d_m[k].append(float(M[k][b] - M[k][a]))
    acc = np.asarray(d_acc)
    stratum = np.unique([f"{g}|{t}" for g, t in strata], return_inverse=True)[1] if strata else np.zeros(0, int)

    def centred(x: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes = np.bincount(stratum[ok], minlength=int(stratum.max(initial=-1)) + 1)
        means = np.bincount(stratum[ok], x[ok], minlength=len(sizes)) / np.maximum(sizes, 1)
        keep = ok & (sizes[stratum] >= 2)  # a stratum of one interval carries no comparison
        return x - means[stratum], keep

    out: dict[str, Any] = {"intervals": int(len(acc))}
    for k in keys:
        m = np.asarray(d_m[k])
        ok = np.isfinite(m) & np.isfinite(acc)
        res: dict[str, Any] = {"intervals": int(ok.sum())}
        if ok.sum() >= 4:
            res["spearman"], res["spearman_ci"] = spearman(m[ok], acc[ok]), list(spearman_ci(m[ok], acc[ok]))
            cm, keep = centred(m, ok)
            ca, _ = centred(acc, ok)
            res["intervals_at_same_step"] = int(keep.sum())
            if keep.sum() >= 4:
                res["spearman_at_same_step"] = spearman(cm[keep], ca[keep])
                res["spearman_at_same_step_ci"] = list(spearman_ci(cm[keep], ca[keep]))
        out[k] = res
    return out


def vanishing_gap_against_progress(runs: Mapping[str, Sequence[Row]], collapsed: set[str] | frozenset[str] = frozenset()
                                   ) -> dict[str, Any]:
    """Between consecutive held-out evaluations of the runs not in ``collapsed``: the mean share of
    groups without reward variance over the interval's steps against the change of held-out
    accuracy over it. Returns the number of intervals, Spearman's ρ with its 95% CI, and the mean
    accuracy change in the intervals with the lowest and the highest quarter of the share."""
    share, change = [], []
    for name, rows in runs.items():
        if name in collapsed:
            continue
        steps, acc, zero = _col(rows, "step"), _col(rows, "eval/accuracy"), _col(rows, "frac_reward_zero_std")
        ev = np.flatnonzero(np.isfinite(acc))
        for a, b in zip(ev[:-1], ev[1:]):
            inside = (steps > steps[a]) & (steps <= steps[b]) & np.isfinite(zero)
            if inside.any():
                share.append(float(zero[inside].mean()))
                change.append(float(acc[b] - acc[a]))
    s, c = np.asarray(share), np.asarray(change)
    if len(s) < 4:
        return {"intervals": int(len(s)), "spearman": math.nan, "spearman_ci": [math.nan, math.nan]}
    low, high = np.quantile(s, [0.25, 0.75])
    return {"intervals": int(len(s)), "spearman": spearman(s, c), "spearman_ci": list(spearman_ci(s, c)),
            "change_lowest_quarter": float(c[s <= low].mean()), "change_highest_quarter": float(c[s >= high].mean()),
            "share_quartiles": [float(low), float(high)]}


def prompt_success_scaling(J: Any, var_plus: Any, var_minus: Any, crit_ratio: Any, *, length: Any = None,
                           groups: Any = None, G: int | None = None) -> dict[str, Any]:
    """§4's success-rate scaling prompt by prompt, from a per-prompt diagnostics table (one row per
    mixed prompt and step: its group's J_q, var± = Var±(ΔL)/η² and ratio η/η_crit,q).

    Eq. (18) allows η ≲ Δμ_q(1−J_q)/T_ψ1: the second-order critical step per unit alignment,
    η_crit/Δμ = 2/(var− − var+), should grow like (1 − J)¹. A group of G completions estimates var±
    from its n+ and n− samples, unbiased but, at n = 2 or 3, so noisy that a median of per-prompt
    ratios is biased where one side is small (the sample variance's median lies below its mean),
    i.e. at both ends of J. So the primary estimate pools: per group label and value of J_q (k/G),
    η_crit/Δμ = 2/(mean var− − mean var+) over its prompts (∞ where the means give no threshold:
    censored), and the exponent is the least-squares slope of its log on log(1 − J) with a fixed
    effect per group label (``groups``, e.g. the task), with its 95% CI. Returns

    - ``exponent``: that slope, its CI and the (group, J) cells used / censored;
    - ``buckets``: per value of J (all groups), the prompts, the share without a threshold
      (var− ≤ var+), the pooled estimate, the median of the per-prompt ratios (∞ for censored
      rows; NaN where half or more are) and the median ratio η/η_crit (0 for censored rows);
    - ``exponent_prompt_level``: the slope over the uncensored rows one by one (fixed effect per
      group), and, with ``length``, ``exponent_with_length``: log mean completion length (T_ψ1)
      as a second regressor (pooled);
    - ``exponent_bucket_medians``: the slope of the log bucket medians;
    - ``ratio_spearman``: Spearman's ρ of the ratio against J (GRPO overshoots more as J → 1).
    """
    J, vp, vm, ratio = (np.asarray(v, float) for v in (J, var_plus, var_minus, crit_ratio))
    g = np.asarray(["all"] * len(J) if groups is None else groups).astype(str)
    ok = np.isfinite(J) & (J > 0) & (J < 1) & np.isfinite(vp) & np.isfinite(vm)

    def per_unit(minus: np.ndarray, plus: np.ndarray) -> np.ndarray:
        diff = np.asarray(minus - plus, float)
        return np.where(diff > 0, 2 / np.where(diff > 0, diff, 1.0), math.inf)

    row_value = per_unit(vm, vp)
    buckets = []
    for j in np.unique(J[ok]):
        sel = ok & (J == j)
        x, r = row_value[sel], ratio[sel]
        censored = float(np.mean(~np.isfinite(x)))
        buckets.append({"J": float(j), "prompts": int(sel.sum()), "censored": censored,
                        "pooled_eta_crit_per_delta_mu": float(per_unit(vm[sel].mean(), vp[sel].mean())),
                        "median_eta_crit_per_delta_mu": float(np.median(x)) if censored < 0.5 else math.nan,
                        "median_crit_ratio": float(np.median(np.where(np.isfinite(r), r, 0.0))) if np.isfinite(r).any() else math.nan})
    cells = []  # (group, J, pooled η_crit/Δμ) for every pair that has prompts
    for label in np.unique(g[ok]):
        for j in np.unique(J[ok & (g == label)]):
            sel = ok & (g == label) & (J == j)
            cells.append((label, j, float(per_unit(vm[sel].mean(), vp[sel].mean()))))
    cx = np.array([1 - j for _, j, _ in cells])
    cy = np.array([v for _, _, v in cells])
    pooled = loglog_slope(cx, cy, groups=[label for label, _, _ in cells]) if len(cells) >= 3 else _NO_FIT
    use = ok & np.isfinite(row_value)
    within = loglog_slope(np.where(use, 1 - J, 0.5), np.where(use, row_value, math.nan), groups=g)
    with_length = None
    if length is not None:
        L = np.asarray(length, float)
        use_l = use & np.isfinite(L) & (L > 0)
        fits = loglog_exponents(np.where(use_l, row_value, math.nan), one_minus_J=np.where(use_l, 1 - J, 0.5),
                                length=np.where(use_l, L, 1.0))
        e, el = fits["one_minus_J"], fits["length"]
        with_length = {"slope": e.slope, "ci95": [e.low, e.high], "length_slope": el.slope, "length_ci95": [el.low, el.high],
                       "points": e.n}
    xb = np.array([1 - b["J"] for b in buckets])
    yb = np.array([b["median_eta_crit_per_delta_mu"] for b in buckets])
    medians = loglog_slope(xb, yb) if len(buckets) >= 3 else _NO_FIT
    rok = ok & np.isfinite(ratio)
    return {
        "prompts": int(ok.sum()), "censored": float(np.mean(~np.isfinite(row_value[ok]))) if ok.any() else math.nan,
        "G": G, "buckets": buckets,
        "exponent": {"slope": pooled.slope, "ci95": [pooled.low, pooled.high], "cells": len(cells),
                     "censored_cells": int(np.sum(~np.isfinite(cy))), "fit": "pooled variances per (group, J), fixed effect per group"},
        "exponent_prompt_level": {"slope": within.slope, "ci95": [within.low, within.high], "points": within.n},
        "exponent_with_length": with_length,
        "exponent_bucket_medians": {"slope": medians.slope, "ci95": [medians.low, medians.high], "points": medians.n},
        "ratio_spearman": spearman(J[rok], ratio[rok]) if rok.sum() >= 4 else math.nan,
    }
