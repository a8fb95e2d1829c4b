"""The Gradient-Gap monitor (rlvrlab.lm.monitor): one definition of M with the simulators, the
critical step in rlvrlab.theory's convention, warnings once per kind, the adaptive rate, and a
state that survives a checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlvrlab import theory
from rlvrlab.gap import alignment_gain
from rlvrlab.lm.diagnostics import GapAdaptiveRate, critical_rate, critical_ratio, step_diagnostics
from rlvrlab.lm.monitor import GapMonitor


def test_alignment_gain_is_eq_12s_term_for_tensors_and_floats():
    dm = torch.tensor([0.3, -0.2, math.nan, 0.0])
    eta = torch.tensor([2.0, 2.0, 2.0, 2.0])
    assert alignment_gain(dm, eta).tolist() == pytest.approx([0.6, 0.0, 0.0, 0.0])
    assert alignment_gain(0.3, 2.0) == pytest.approx(0.6)
    assert alignment_gain(-0.1) == 0.0 and alignment_gain(math.nan) == 0.0


@pytest.mark.parametrize("dm, vp, vm, ratio", [
    (0.1, 0.0, 0.2, 1.0),        # 2·0.1 / 0.2: the step is exactly critical
    (0.1, 0.05, 0.45, 2.0),      # (0.45 - 0.05) / (2·0.1)
    (0.1, 0.3, 0.1, 0.0),        # var- <= var+: no second-order threshold
    (-0.1, 0.0, 0.2, math.inf),  # a step against the gap: every step is past its (zero) critical step
    (0.0, 0.0, 0.2, math.inf),
])
def test_critical_ratio_is_the_inverse_of_theorys_critical_step(dm, vp, vm, ratio):
    got = float(critical_ratio(torch.tensor([dm]), torch.tensor([vp]), torch.tensor([vm]))[0])
    assert got == pytest.approx(ratio)
    c = theory.eta_crit_second_order(dm, vp, vm)  # in units of the step: η_crit / η
    assert got == pytest.approx(1 / c if c > 0 else math.inf)
    assert critical_rate(1e-3, got) == pytest.approx(1e-3 * c)  # lr_crit = lr · η_crit / η
    assert math.isnan(float(critical_ratio(torch.tensor([math.nan]), torch.tensor([0.1]), torch.tensor([0.2]))[0]))


def test_step_diagnostics_carry_the_convention_through():
    r = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    against = step_diagnostics(torch.tensor([[-0.1, -0.1, 0.0, 0.0]]), r, eta=0.5)
    assert against["gap/crit_ratio"] == math.inf and against["gap/eta_crit"] == 0.0 and against["gap/prompts_past_crit"] == 1
    no_threshold = step_diagnostics(torch.tensor([[0.1, 0.1, 0.0, 0.0]]), r, eta=0.5)
    assert no_threshold["gap/crit_ratio"] == 0.0 and no_threshold["gap/eta_crit"] == math.inf
    undefined = step_diagnostics(torch.zeros(1, 4), torch.ones(1, 4), eta=0.5)
    assert math.isnan(undefined["gap/crit_ratio"]) and math.isnan(undefined["gap/eta_crit"])


def _step(monitor, step, delta, success, lr=1e-2, eta=0.1):
    row = {"step": step, "learning_rate": lr}
    row.update(monitor.measure(torch.tensor(delta), torch.tensor(success), eta=eta, lr=lr))
    return row, monitor.record(row)


def test_monitor_accumulates_M_and_lr_crit_per_prefix():
    m = GapMonitor(on_warning=lambda message: None)
    success = [[1.0, 1.0, 0.0, 0.0]]
    row, _ = _step(m, 1, [[0.2, 0.2, 0.0, 0.0]], success)
    assert row["gap/M"] == pytest.approx(0.2) and row["gap/lr_crit"] == math.inf  # no spread: no threshold
    fresh = m.measure(torch.tensor([[0.05, 0.05, 0.0, 0.0]]), torch.tensor(success), eta=0.1, lr=1e-2, prefix="gap_fresh/")
    assert fresh["gap_fresh/M"] == pytest.approx(0.05)
    spread = math.sqrt(0.1)
    row, _ = _step(m, 2, [[0.1, 0.1, spread, -spread]], success)  # ratio 1: lr_crit is the rate used
    assert row["gap/M"] == pytest.approx(0.3) and row["gap/crit_ratio"] == pytest.approx(1.0)
    assert row["gap/lr_crit"] == pytest.approx(1e-2)
    row, _ = _step(m, 3, [[-0.1, -0.1, 0.0, 0.0]], success)  # against the gap: M does not fall
    assert row["gap/M"] == pytest.approx(0.3) and m.M == {"gap/": pytest.approx(0.3), "gap_fresh/": pytest.approx(0.05)}


def test_warnings_come_once_per_kind_and_need_consecutive_measured_steps():
    said = []
    m = GapMonitor(patience=2, on_warning=said.append)
    over = [[-0.1, -0.1, 0.0, 0.0]]  # a negative log-odds change
    good = [[0.1, 0.1, 0.0, 0.0]]
    success = [[1.0, 1.0, 0.0, 0.0]]
    _step(m, 1, over, success)
    m.record({"step": 2, "eval/accuracy": 0.5})  # a row without gap values does not break the streak ...
    _step(m, 3, good, success)  # ... a good step does
    _step(m, 4, over, success)
    assert said == []
    _step(m, 5, over, success)
    assert len(said) == 1 and said[0].startswith("the step overshot for 2 consecutive steps (steps 4-5;")
    _step(m, 6, over, success)
    assert len(said) == 1  # once per kind
    flat = [[0.0, 0.0, 0.0, 0.0]]
    _step(m, 7, flat, [[0.0, 0.0, 0.0, 0.0]])
    _step(m, 8, flat, [[1.0, 1.0, 1.0, 1.0]])
    assert len(said) == 2 and said[1].startswith("more than half of the groups had no reward variance for 2")


def test_the_adaptive_rate_moves_from_the_rate_it_is_given():
    m = GapMonitor(adaptive=GapAdaptiveRate(0.5, 0.0, 1.1, 1e-6, 1.0), on_warning=lambda message: None)
    assert m.record({"step": 1, "learning_rate": 1e-2, "gap/crit_ratio": 0.5, "gap/zero_variance_groups": 0.0}) == pytest.approx(1e-2)
    # a schedule's peak of 4e-2 at a warm-up rate of 1e-2: the rule moves the peak
    assert m.record({"step": 2, "learning_rate": 1e-2, "gap/crit_ratio": 0.5, "gap/zero_variance_groups": 0.0},
                    rate=4e-2) == pytest.approx(4e-2)
    before = m.adaptive.log_lr_crit
    assert m.record({"step": 3, "learning_rate": 0.0, "gap/crit_ratio": 0.5, "gap/zero_variance_groups": 0.0}, rate=4e-2) == 4e-2
    assert m.adaptive.log_lr_crit == before  # a step at rate 0 carries no information
    assert GapMonitor().record({"step": 1, "learning_rate": 3e-3, "gap/crit_ratio": 9.0, "gap/zero_variance_groups": 0.0}) == 3e-3


def test_state_round_trips_through_json_with_nan_and_inf():
    m = GapMonitor(adaptive=GapAdaptiveRate(), on_warning=lambda message: None)
    success = [[1.0, 1.0, 0.0, 0.0]]
    for step in range(1, 5):
        _step(m, step, [[-0.1, -0.1, 0.0, 0.0]] if step > 1 else [[0.1, 0.1, 0.3, -0.3]], success)
    state = json.loads(json.dumps(m.state_dict()))  # what a checkpoint holds
    n = GapMonitor(adaptive=GapAdaptiveRate(), on_warning=lambda message: None)
    n.load_state_dict(state)
    assert n.M == m.M and n.warned == m.warned == {"crit"} and n.adaptive.log_lr_crit == m.adaptive.log_lr_crit
    assert json.dumps(n.history) == json.dumps(m.history) and any(r["gap/crit_ratio"] == math.inf for r in n.history)
    a = _step(m, 5, [[0.2, 0.1, 0.0, 0.1]], success)
    b = _step(n, 5, [[0.2, 0.1, 0.0, 0.1]], success)
    assert json.dumps(a) == json.dumps(b)  # the resumed monitor continues exactly


def test_the_ratchet_aims_at_the_lowest_running_critical_rate_after_its_warm_up():
    # smoothing 0: the running mean is the last estimate lr/ratio, warm-up 1 estimate; fraction 1/2
    plain, ratchet = GapAdaptiveRate(0.5, 0.0, 1.1, 1e-6, 1.0), GapAdaptiveRate(0.5, 0.0, 1.1, 1e-6, 1.0, ratchet=True)
    for rule in (plain, ratchet):
        assert rule(1.0, 1e-3) == pytest.approx(5e-4)  # critical 1e-3
    assert plain(0.25, 5e-4) == pytest.approx(1e-3)  # critical 2e-3: the plain rule follows it up, 2x a step at most
    assert ratchet(0.25, 5e-4) == pytest.approx(5e-4)  # the ratchet keeps aiming at half the lowest, 1e-3
    assert ratchet(2.0, 5e-4) == pytest.approx(2.5e-4)  # a lower estimate, 2.5e-4: half of it, within 2x a step
    assert math.exp(ratchet.log_lr_crit_min) == pytest.approx(2.5e-4) and ratchet.estimates == 3
    # with smoothing 0.8 the minimum starts after round(1 / 0.2) = 5 estimates: a first outlier does not lock in
    slow = GapAdaptiveRate(0.5, 0.8, 1.1, 1e-6, 1.0, ratchet=True)
    slow(100.0, 1e-3)  # one estimate of 1e-5
    assert math.isnan(slow.log_lr_crit_min)
    for _ in range(4):
        slow(1.0, 1e-3)
    x = math.log(1e-5)
    for _ in range(4):
        x = 0.8 * x + 0.2 * math.log(1e-3)
    assert slow.estimates == 5 and slow.log_lr_crit_min == pytest.approx(x)
    # the monitor's checkpoint carries the minimum and the count
    m = GapMonitor(adaptive=GapAdaptiveRate(0.5, 0.0, 1.1, 1e-6, 1.0, ratchet=True), on_warning=lambda message: None)
    for step, ratio in enumerate((1.0, 0.25), 1):
        m.record({"step": step, "learning_rate": 1e-3, "gap/crit_ratio": ratio, "gap/zero_variance_groups": 0.0})
    n = GapMonitor(adaptive=GapAdaptiveRate(0.5, 0.0, 1.1, 1e-6, 1.0, ratchet=True), on_warning=lambda message: None)
    n.load_state_dict(json.loads(json.dumps(m.state_dict())))
    assert n.adaptive.log_lr_crit_min == m.adaptive.log_lr_crit_min and n.adaptive.estimates == 2


def test_a_prior_starts_the_running_critical_rate_and_is_not_counted_as_an_estimate():
    rule = GapAdaptiveRate(0.5, 0.8, 1.1, 1e-6, 1.0, ratchet=True)
    for bad in (math.nan, math.inf, 0.0, -1e-3):
        assert math.isnan(rule.prior(bad)) and math.isnan(rule.log_lr_crit)  # nothing taken
    assert rule(math.nan, 1e-4) == pytest.approx(1.1e-4)  # without a prior: no estimate, the rate grows
    assert rule.prior(4e-3) == pytest.approx(2e-3)  # the aim: half the prior
    assert rule(math.nan, 1e-4) == pytest.approx(2e-4)  # aimed at 2e-3 now, 2x a step at most
    assert rule(1.0, 1e-3) == pytest.approx(0.5 * math.exp(0.8 * math.log(4e-3) + 0.2 * math.log(1e-3)))  # one estimate 1e-3
    assert rule.estimates == 1 and math.isnan(rule.log_lr_crit_min)  # the prior does not count toward the ratchet's warm-up


def test_bad_patience_is_refused():
    with pytest.raises(ValueError, match=r"^patience: got 0; allowed: an integer >= 1"):
        GapMonitor(patience=0)


def test_the_vocabulary_columns_of_a_runs_gap_metrics_by_hand():
    import numpy as np

    from rlvrlab.lm.diagnostics import vocabulary

    cols = {"gap/J": np.array([0.5, 0.8, 1.0]), "gap/M": np.array([0.0, 0.1, 0.3]), "gap/eta": np.array([2.0, 4.0, 1.0]),
            "gap/delta_mu_eta": np.array([0.2, -0.4, 0.0])}
    v = vocabulary(cols)
    assert v["log_odds"].tolist() == pytest.approx([0.0, np.log(4.0), np.inf])  # log(J/(1-J)); all right in a batch: infinite
    assert v["delta_mu"].tolist() == [0.1, -0.1, 0.0]
    assert v["M"].tolist() == [0.0, 0.1, 0.3] and v["eta"].tolist() == [2.0, 4.0, 1.0] and v["J"].tolist() == [0.5, 0.8, 1.0]
    assert vocabulary({"gap_fresh/" + k[4:]: x for k, x in cols.items()}, prefix="gap_fresh/")["delta_mu"].tolist() == [0.1, -0.1, 0.0]
