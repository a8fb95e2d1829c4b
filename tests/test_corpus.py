"""rlvrlab.analysis.corpus on hand-made runs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlvrlab.analysis.corpus import proxy_against_gap, vanishing_gap_against_progress


def _run(proxy, delta_mu, eta=0.5, acc=None):
    """Rows of one run: step 0 then one per value; gap_fresh/M the cumulative [Δμ·η]₊."""
    rows, M = [{"step": 0.0, "eval/accuracy": 0.5 if acc is None else acc[0], "gap_fresh/M": 0.0, "gap/M": 0.0}], 0.0
    for t, (p, d) in enumerate(zip(proxy, delta_mu), 1):
        M += max(d * eta, 0.0)
        row = {"step": float(t), "gap/grpo_norm_proxy": p, "gap/eta": eta, "gap_fresh/delta_mu_eta": d * eta,
               "gap_fresh/M": M, "gap/M": 2 * M}
        if acc is not None and t < len(acc):
            row["eval/accuracy"] = acc[t]
        rows.append(row)
    return rows


def test_a_proxy_proportional_to_the_gap_ranks_every_step_alike():
    rng = np.random.default_rng(0)
    runs = {f"r{i}": _run(3 * (d := rng.uniform(0.1, 1, 20)), d) for i in range(3)}
    out = proxy_against_gap(runs)
    assert out["steps"] == 60 and out["spearman_pooled"] == pytest.approx(1.0)
    assert out["spearman_median_per_run"] == pytest.approx(1.0) and out["ratio_median"] == pytest.approx(3.0)


def test_figure2_pools_runs_and_tells_the_cumulative_alignments_apart():
    # run a gains accuracy with little alignment, run b loses it with much: pooled, accuracy falls with M
    a = _run([0.1] * 4, [0.1] * 4, acc=[0.5, 0.6, 0.7, 0.8])
    b = _run([1.0] * 4, [1.0] * 4, acc=[0.5, 0.4, 0.3, 0.2])
    fig = proxy_against_gap({"a": a, "b": b}, {"a": "t", "b": "t"})["figure2"]["t"]
    assert fig["evaluations"] == 8
    # M at the evaluations: a 0, .05, .1, .15; b 0, .5, 1, 1.5 (both cumulative sums), accuracy .5 .6 .7 .8 / .5 .4 .3 .2;
    # their ranks by hand (ties averaged), and Spearman's ρ as the Pearson correlation of the ranks
    rank_m = [1.5, 3, 4, 5, 1.5, 6, 7, 8]
    rank_acc = [4.5, 6, 7, 8, 4.5, 3, 2, 1]
    rho = np.corrcoef(rank_m, rank_acc)[0, 1]
    assert rho < 0
    assert fig["spearman_unbiased"] == pytest.approx(rho) and fig["spearman_proxy"] == pytest.approx(rho)
    assert fig["spearman_in_sample"] == pytest.approx(rho)  # gap/M = 2 gap_fresh/M: the same ranks


def test_more_groups_without_variance_less_progress_and_collapsed_runs_left_out():
    def run(zero_by_interval, gains):
        rows, acc, step = [{"step": 0.0, "eval/accuracy": 0.3}], 0.3, 0
        for z, g in zip(zero_by_interval, gains):
            for k in range(5):
                step += 1
                rows.append({"step": float(step), "frac_reward_zero_std": z})
            acc += g
            rows[-1]["eval/accuracy"] = acc
        return rows

    runs = {"a": run([0.1, 0.3, 0.5, 0.7, 0.9], [0.2, 0.1, 0.05, 0.0, -0.05]),
            "x": run([0.9, 0.9, 0.9, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5, 0.5])}  # collapsed: left out
    out = vanishing_gap_against_progress(runs, {"x"})
    assert out["intervals"] == 5 and out["spearman"] == pytest.approx(-1.0)
    assert out["change_lowest_quarter"] == pytest.approx(np.mean([0.2, 0.1])) and out["change_highest_quarter"] == pytest.approx(
        np.mean([0.0, -0.05]))
    assert math.isnan(vanishing_gap_against_progress({"a": runs["a"]}, {"a"})["spearman"])
