"""lr-oracle's reading of a cell: the best fixed rate and the measured critical rate, worked by hand."""

from __future__ import annotations

import math

import pytest

from rlvrlab.experiments.lr_oracle import _evals, measure_cell


def test_the_critical_rate_is_bracketed_by_the_last_rate_that_does_not_fall_and_the_first_that_does():
    # n = 100 completions per evaluation, 2 seeds, start 0.5: a fall is a seed-mean below 0.5 - 2·sqrt(2·0.25/200) = 0.4
    curves = {
        1.0: [{0: 0.5, 5: 0.52, 10: 0.58}, {0: 0.5, 5: 0.50, 10: 0.62}],  # rises slowly: final (0.55 + 0.56) / 2
        2.0: [{0: 0.5, 5: 0.60, 10: 0.80}, {0: 0.5, 5: 0.64, 10: 0.70}],  # the best
        4.0: [{0: 0.5, 5: 0.41, 10: 0.60}, {0: 0.5, 5: 0.40, 10: 0.60}],  # dips to 0.405: not significantly below the start
        8.0: [{0: 0.5, 5: 0.30, 10: 0.00}, {0: 0.5, 5: 0.50, 10: 0.10}],  # falls (0.40 at step 5 is not below 0.4; 0.05 is)
    }
    m = measure_cell([1.0, 2.0, 4.0, 8.0], curves, n_eval=100)
    assert m["best_lr"] == 2.0
    assert m["best_accuracy"] == pytest.approx(((0.60 + 0.80) / 2 + (0.64 + 0.70) / 2) / 2)
    assert (m["critical_low"], m["critical_high"]) == (4.0, 8.0)
    assert m["critical_rate"] == pytest.approx(math.sqrt(32.0))
    rates = {r["lr"]: r for r in m["per_rate"]}
    assert [rates[lr]["falls"] for lr in (1.0, 2.0, 4.0, 8.0)] == [False, False, False, True]
    assert rates[1.0]["accuracy_final"] == pytest.approx(((0.52 + 0.58) / 2 + (0.50 + 0.62) / 2) / 2)
    assert rates[2.0]["accuracy_final_se"] == pytest.approx(abs(0.70 - 0.67) / 2)  # two seeds: |a - b| / 2


def test_every_rate_falling_or_none_censors_the_critical_rate():
    flat = {lr: [{0: 0.5, 5: 0.5}, {0: 0.5, 5: 0.5}] for lr in (1.0, 2.0, 4.0)}
    m = measure_cell([1.0, 2.0, 4.0], flat, n_eval=100)
    assert m["critical_low"] == 4.0 and m["critical_high"] == math.inf  # the edge lies above the grid
    fall = {lr: [{0: 0.5, 5: 0.0}, {0: 0.5, 5: 0.0}] for lr in (1.0, 2.0, 4.0)}
    assert math.isnan(measure_cell([1.0, 2.0, 4.0], fall, n_eval=100)["critical_rate"])


def test_a_diverged_run_scores_zero_at_every_evaluation_it_did_not_reach():
    rows = [{"step": 0.0, "eval/accuracy": 0.5}, {"step": 1.0}, {"step": 5.0, "eval/accuracy": 0.4}, {"step": 6.0}]
    assert _evals(rows, "diverged", 15) == {0: 0.5, 5: 0.4, 10: 0.0, 15: 0.0}
    assert _evals(rows, "finished", 15) == {0: 0.5, 5: 0.4}


@pytest.mark.parametrize("setting, message", [("probe_rescan=up", "probe_rescan.*any, lower"),
                                              ("adaptive_seeds=-1", "adaptive_seeds.*integers >= 0")])
def test_the_adaptive_rules_settings_are_refused_with_their_allowed_values(setting, message):
    from rlvrlab.experiments.runner import resolve_config

    with pytest.raises(ValueError, match=message):
        resolve_config("lr-oracle", settings=[setting])


def test_the_lists_whose_empty_value_means_something_take_none_and_others_refuse_it():
    from rlvrlab.experiments.runner import resolve_config

    c = resolve_config("lr-oracle", settings=["adaptive_starts=none", "adaptive_seeds="])
    assert c.adaptive_starts == () and c.adaptive_seeds == ()
    assert resolve_config("lr-oracle", settings=["adaptive_seeds=3,4"]).adaptive_seeds == (3, 4)
    with pytest.raises(ValueError, match="--set seeds: got 'none'; allowed: a comma-separated list of integers"):
        resolve_config("lr-oracle", settings=["seeds=none"])  # the grid's seeds have no empty meaning
