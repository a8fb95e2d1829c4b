"""rlvrlab.analysis.corpus on hand-made runs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rlvrlab.analysis.corpus import alignment_against_progress, prompt_success_scaling, proxy_against_gap, vanishing_gap_against_progress


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


def test_alignment_against_progress_interval_by_interval_and_at_the_same_step():
    # four runs evaluated at every step; per interval, accuracy gains exactly the alignment gained (ΔM = Δacc, in-sample
    # twice the unbiased), while early intervals gain more in every run: raw and at-the-same-step ρ are both 1
    rng = np.random.default_rng(1)
    runs = {}
    for i in range(4):
        d = rng.uniform(0.05, 0.1, 6) * np.linspace(2, 1, 6)  # Δμ per step, falling along the run
        acc = np.concatenate([[0.3], 0.3 + np.cumsum(d * 0.5)])  # Δacc = Δμ·η = unbiased ΔM (η = 0.5)
        runs[f"r{i}"] = _run([1.0] * 6, d, acc=list(acc) + [0.0])
    out = alignment_against_progress(runs, groups={n: "t" for n in runs})
    assert out["intervals"] == 24
    for k in ("unbiased", "in_sample"):
        assert out[k]["intervals"] == 24 and out[k]["spearman"] == pytest.approx(1.0)
        assert out[k]["intervals_at_same_step"] == 24 and out[k]["spearman_at_same_step"] == pytest.approx(1.0)
    # a collapsed run is left out; an accuracy unrelated to the increments at the same step reads no correlation there
    shuffled = {n: [dict(r) for r in rows] for n, rows in runs.items()}
    for i, rows in enumerate(shuffled.values()):  # the same accuracy path in every run: nothing to tell them apart
        for t, r in enumerate(rows[:7]):
            r["eval/accuracy"] = 0.3 + 0.02 * t
    flat = alignment_against_progress(shuffled | {"gone": runs["r0"]}, collapsed={"gone"})
    assert flat["intervals"] == 24
    assert math.isnan(flat["unbiased"]["spearman_at_same_step"])  # centred accuracy is 0 everywhere: no ranking


def test_prompt_success_scaling_reads_the_exponent_of_one_minus_J():
    # two groups (tasks) with var- - var+ = 4c/(1 - J) on average over each (group, J) pair of rows (c = 1, 2), the rows
    # ±5 around it: the pooled η_crit/Δμ = 2/(mean var- - mean var+) = (1 - J)/(2c) exactly, slope 1 with an intercept per
    # group; one row (group a, J = 1/8, where 4/(1 - J) = 4.57 < 5) has var- < var+: no threshold, censored
    Js = np.array([1 / 8, 2 / 8, 4 / 8, 6 / 8, 7 / 8])
    J = np.repeat(Js, 4)
    g = np.tile(["a", "a", "b", "b"], 5)
    c = np.where(g == "a", 1.0, 2.0)
    vp = np.full(J.shape, 1.0)
    vm = vp + 4 * c / (1 - J) + np.tile([5.0, -5.0], 10)
    ratio = np.where(vm > vp, 0.1 / (1 - J), 0.0)
    out = prompt_success_scaling(J, vp, vm, ratio, groups=g)
    assert out["prompts"] == 20 and out["censored"] == pytest.approx(1 / 20)
    assert out["exponent"]["slope"] == pytest.approx(1.0) and out["exponent"]["cells"] == 10
    assert out["exponent"]["censored_cells"] == 0
    b = {round(x["J"], 3): x for x in out["buckets"]}
    assert b[0.125]["censored"] == pytest.approx(0.25) and b[0.5]["prompts"] == 4
    assert b[0.5]["pooled_eta_crit_per_delta_mu"] == pytest.approx(2 / ((8 + 16) / 2))  # groups pooled: mean of 8 and 16
    assert b[0.5]["median_eta_crit_per_delta_mu"] == pytest.approx(np.median(2 / np.array([13.0, 3.0, 21.0, 11.0])))
    # the ratio grows with J where there is a threshold and is 0 where there is none: scipy's ρ over all 20 rows
    assert out["ratio_spearman"] == pytest.approx(stats.spearmanr(J, ratio).statistic)
    # without the ±5 spread every row is exact: the row-level fit and the length-controlled one read slope 1 as well
    exact = prompt_success_scaling(J, vp, vp + 4 * c / (1 - J), ratio, groups=g, length=np.tile([10.0, 20.0, 30.0, 40.0], 5))
    assert exact["exponent_prompt_level"]["slope"] == pytest.approx(1.0) and exact["exponent_prompt_level"]["points"] == 20
    assert exact["exponent_with_length"]["slope"] == pytest.approx(1.0)  # every J meets the same lengths: orthogonal to it
    assert exact["exponent_bucket_medians"]["slope"] == pytest.approx(1.0)
