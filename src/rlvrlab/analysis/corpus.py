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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlvrlab.analysis.stats import spearman, spearman_ci

__all__ = ["figure2_relation", "proxy_against_gap", "vanishing_gap_against_progress"]

Row = Mapping[str, float]


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
