"""rlvrlab.analysis.alarms on values worked by hand: labels of hand-made accuracy curves, each
detector on a tiny row sequence, scores of hand-made label/alarm sets, the tuning order; and two
properties: no detector looks ahead (alarms on a truncated run are the full run's alarms so far),
and rlvrlab/current is the monitor's own "crit" rule (gap_warnings) on random rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlvrlab.analysis.alarms import (DETECTORS, GRIDS, LrCritBelow, RunLabel, ScoredRun, alarm_steps, detector,
                                     evals_from_rows, first_alarm, label_counts, label_run, meets_label_mix, param_grid,
                                     score, tune)
from rlvrlab.analysis.stats import bootstrap_ci
from rlvrlab.lm.monitor import gap_warnings

nan, inf = math.nan, math.inf


def _evals(*acc: float) -> list[tuple[int, float]]:
    return [(5 * i, a) for i, a in enumerate(acc)]  # an evaluation every 5 steps from step 0


# --- labels ------------------------------------------------------------------------------------


def test_a_clean_collapse_starts_at_the_first_evaluation_below_a0_minus_the_margin():
    lab = label_run(_evals(0.6, 0.6, 0.5, 0.2, 0.1, 0.0), margin=0.05)
    # 0.0 <= 0.6/2 = 0.3; from the 0.5 (step 10) on, every evaluation is < 0.6 - 0.05 = 0.55
    assert (lab.kind, lab.onset) == ("collapsed", 10)
    assert (lab.start, lab.last, lab.final, lab.margin) == (0.6, 0.0, pytest.approx(0.05), 0.05)


@pytest.mark.parametrize("acc, kind, onset", [
    ((0.6, 0.5, 0.1, 0.0, 0.3, 0.5), "stalled", None),   # fell below a0/2 and came back: final 0.4 < 0.65
    ((0.5, 0.4, 0.3, 0.25), "collapsed", 5),              # ends exactly at a0/2 = 0.25: collapsed; 0.4 < 0.45 from step 5
    ((0.5, 0.4, 0.3, 0.26), "stalled", None),             # ends just above a0/2
    ((0.0, 0.0, 0.0, 0.0), "stalled", None),              # starts at 0 (a0 <= margin): cannot collapse
    ((0.02, 0.0, 0.0), "stalled", None),                  # a0 = 0.02 <= margin: ~0 stays stalled
    ((0.3, 0.35, 0.4, 0.5, 0.55), "healthy", None),       # final 0.525 >= 0.35
    ((0.3, 0.3, 0.35), "stalled", None),                  # one good evaluation: final (0.3 + 0.35)/2 < 0.35
    ((0.6, 0.5, 0.4, 0.35, 0.35), "stalled", None),       # a partial drop: 0.35 > 0.3
    ((0.5, 0.47, 0.53, 0.49, 0.52, 0.51), "stalled", None),  # noisy flat: final 0.515 < 0.55
    ((0.08, 0.06, 0.035), "collapsed", 10),               # a0 − m = 0.03: no fall below it; onset by a0/2 = 0.04
])
def test_labels_of_hand_made_curves(acc, kind, onset):
    lab = label_run(_evals(*acc), margin=0.05)
    assert (lab.kind, lab.onset) == (kind, onset)


def test_healthy_needs_the_mean_of_the_last_two_evaluations_at_a0_plus_the_margin():
    assert label_run(_evals(0.25, 0.3, 0.25, 0.35), margin=0.05).kind == "healthy"  # (0.25 + 0.35)/2 = 0.3
    assert label_run(_evals(0.25, 0.5, 0.2, 0.35), margin=0.05).kind == "stalled"   # 0.275: one good evaluation is not enough


def test_labels_drop_missing_evaluations_and_refuse_bad_input():
    rows = [{"step": 0, "eval/accuracy": 0.6, "gap/M": 0.0}, {"step": 1, "reward": 0.5},
            {"step": 5, "eval/accuracy": nan}, {"step": 10, "eval/accuracy": 0.1}, {"step": 15, "eval/accuracy": None}]
    assert evals_from_rows(rows) == [(0, 0.6), (10, 0.1)]
    assert label_run([(0, 0.6), (5, nan), (10, 0.1)], margin=0.05).onset == 10
    with pytest.raises(ValueError, match="margin"):
        label_run(_evals(0.5, 0.1), margin=-0.1)
    with pytest.raises(ValueError, match="evals"):
        label_run([(0, 0.5)], margin=0.05)
    with pytest.raises(ValueError, match="increasing"):
        label_run([(0, 0.5), (10, 0.4), (5, 0.1)], margin=0.05)


def test_label_counts_and_the_required_mix():
    c, h, s = (RunLabel(k, None, 0.5, 0.5, 0.5, 0.05) for k in ("collapsed", "healthy", "stalled"))
    assert label_counts([c, h, s, s]) == {"collapsed": 1, "stalled": 2, "healthy": 1}
    assert meets_label_mix([c, h, s, s])           # 1/4 each
    assert not meets_label_mix([c, h, s, s, s])    # 1/5 < 1/4
    assert not meets_label_mix([c, c, s, s]) and not meets_label_mix([])


# --- detectors on hand-made rows ---------------------------------------------------------------


def _rows(**series) -> list[dict]:
    """Rows for steps 1..K from equal-length series (a None leaves the key out of that row)."""
    k = len(next(iter(series.values())))
    return [{"step": i + 1, **{key: v[i] for key, v in series.items() if v[i] is not None}} for i in range(k)]


def test_current_alarms_from_the_third_consecutive_overshoot():
    rows = _rows(**{"gap/crit_ratio": [0.5, 1.2, 0.8, None, 1.5, 0.3, 2.0, inf, nan],
                    "gap/log_odds_change": [0.1, 0.1, -0.1, None, 0.1, 0.1, 0.1, 0.1, -1.0],
                    "learning_rate": [1e-3] * 9})
    # overshoot: F T T (unmeasured: no change) T F T T T
    assert alarm_steps(detector("rlvrlab/current"), rows) == [5, 9]
    assert alarm_steps(detector("rlvrlab/current", patience=1), rows) == [2, 3, 5, 7, 8, 9]
    assert alarm_steps(detector("rlvrlab/fresh"), rows) == []  # no gap_fresh/ keys: never measured
    fresh = [{k.replace("gap/", "gap_fresh/"): v for k, v in r.items()} for r in rows]
    assert alarm_steps(detector("rlvrlab/fresh"), fresh) == [5, 9]


def test_lr_crit_warmup_suppresses_adams_early_alarm_and_smoothing_delays_the_late_one():
    lr_crit = [1e-4] * 3 + [1e-2] * 4 + [5e-4] * 4  # steps 1-3 (Adam's first steps), 4-7 fine, 8-11 past lr = 1e-3
    rows = _rows(**{"gap/lr_crit": lr_crit, "learning_rate": [1e-3] * 11})
    plain = dict(factor=1.0, patience=2, smoothing=0.0)
    assert alarm_steps(LrCritBelow(warmup=0, **plain), rows) == [2, 3, 9, 10, 11]
    assert alarm_steps(LrCritBelow(warmup=3, **plain), rows) == [9, 10, 11]
    # smoothing 0.5: geometric means sqrt(1e-2·5e-4) = 2.24e-3, then 1.06e-3 (both above 1e-3),
    # 7.27e-4 at step 10 and 6.03e-4 at step 11: the second step below is 11
    assert alarm_steps(LrCritBelow(warmup=3, factor=1.0, patience=2, smoothing=0.5), rows) == [11]
    # factor 2 (threshold 2e-3): 2.24e-3 at step 8 is above it, 1.06e-3 at step 9 the first below
    assert alarm_steps(LrCritBelow(warmup=3, factor=2.0, patience=2, smoothing=0.5), rows) == [10, 11]


def test_lr_crit_reads_inf_as_no_threshold_and_zero_as_a_step_against_the_gap():
    rows = _rows(**{"gap/lr_crit": [inf, 0.0, nan, 1e-2], "learning_rate": [1e-3, 1e-3, 1e-3, 1e-3]})
    assert alarm_steps(LrCritBelow(warmup=0, patience=1, smoothing=0.0), rows) == [2]
    # smoothing 0.5: logs clipped to lr·10^±3, so s = log 1, then log 1e-3 (the mean of 1 and 1e-6),
    # NaN skipped, then the mean of 1e-3 and 1e-2: 3.2e-3 >= 1e-3
    assert alarm_steps(LrCritBelow(warmup=0, patience=1, smoothing=0.5, factor=1.01), rows) == [2]
    assert alarm_steps(LrCritBelow(warmup=0, patience=1, smoothing=0.5, factor=0.99), rows) == []


def test_log_odds_trend_alarms_when_the_trailing_mean_turns_negative():
    rows = _rows(**{"gap/log_odds_change": [0.1, -0.05, -0.1, -0.2, 0.5]})
    # means of 3: step 3 (0.1 - 0.05 - 0.1)/3 < 0, step 4 -0.35/3 < 0, step 5 0.2/3 > 0
    assert alarm_steps(detector("rlvrlab/log_odds_trend", window=3), rows) == [3, 4]
    assert alarm_steps(detector("rlvrlab/log_odds_trend", window=3, warmup=1), rows) == [4]  # window full at step 4
    assert alarm_steps(detector("rlvrlab/log_odds_trend", window=3, prefix="gap_fresh/"), rows) == []
    # ±inf counts as ±log 10³ = ±6.9: (-6.9 + 1)/2 < 0 and (6.9 - 1)/2 > 0, each mean finite
    trend = detector("rlvrlab/log_odds_trend", window=2)
    assert alarm_steps(trend, _rows(**{"gap/log_odds_change": [-inf, 1.0]})) == [2]
    assert alarm_steps(trend, _rows(**{"gap/log_odds_change": [inf, -1.0]})) == []


def test_entropy_drop_compares_with_the_first_finite_entropy():
    rows = _rows(entropy=[nan, 2.0, 1.8, 1.2, 1.0, 0.9, 1.5])
    assert alarm_steps(detector("entropy_drop"), rows) == [6]  # 1.0 is not < 2.0/2


def test_grad_norm_spike_needs_a_full_trailing_window():
    base = [1.0, 3.0] * 5  # mean 2, population σ 1: threshold 2 + 3·1 = 5
    assert alarm_steps(detector("grad_norm_spike"), _rows(grad_norm=base + [5.5])) == [11]
    assert alarm_steps(detector("grad_norm_spike"), _rows(grad_norm=base + [4.9])) == []
    assert alarm_steps(detector("grad_norm_spike"), _rows(grad_norm=base + [inf])) == [11]
    assert alarm_steps(detector("grad_norm_spike"), _rows(grad_norm=base[:9] + [100.0])) == []  # 9 previous only
    assert alarm_steps(detector("grad_norm_spike"), _rows(grad_norm=base[:5] + [nan] + base[5:] + [5.5])) == [12]


def test_kl_spike_never_fires_without_kl():
    assert alarm_steps(detector("kl_spike"), _rows(kl=[0.01, 0.03] * 5 + [0.055])) == [11]
    assert alarm_steps(detector("kl_spike"), _rows(kl=[nan] * 12, grad_norm=[1.0] * 12)) == []
    assert alarm_steps(detector("kl_spike"), _rows(grad_norm=[1.0] * 10 + [100.0])) == []


def test_zero_std_and_reward_drop():
    assert alarm_steps(detector("zero_std"), _rows(frac_reward_zero_std=[0.2, 0.5, 0.6, nan, 0.9])) == [3, 5]
    rewards = [0.6, 0.6, 0.6, 0.5, 0.3, 0.2, 0.0]
    # first window mean 0.6, threshold 0.3; trailing means 0.6, 0.567, 0.467, 0.333, 0.167
    assert alarm_steps(detector("reward_drop", window=3), _rows(reward=rewards)) == [7]


def test_step_zero_is_skipped_and_first_alarm_is_the_first():
    rows = [{"step": 0, "eval/accuracy": 0.5, "gap/M": 0.0, "gap/crit_ratio": nan}]
    rows += _rows(**{"gap/crit_ratio": [2.0] * 4, "learning_rate": [1e-3] * 4})
    assert alarm_steps(detector("rlvrlab/current"), rows) == [3, 4]
    assert first_alarm(detector("rlvrlab/current"), rows) == 3
    assert first_alarm(detector("rlvrlab/current"), rows[:3]) is None


def test_unknown_detector_lists_the_valid_ones():
    with pytest.raises(ValueError, match="rlvrlab/lr_crit"):
        detector("rlvrlab/nope")
    assert set(GRIDS) == set(DETECTORS)
    for name, grid in GRIDS.items():  # every grid point builds
        for params in param_grid(grid):
            detector(name, **params)


# --- properties on random rows -----------------------------------------------------------------


def _random_rows(seed: int, k: int = 40) -> list[dict]:
    """A run's rows with NaN, inf, 0 and missing values sprinkled in."""
    rng = np.random.default_rng(seed)

    def value(scale: float, special=(nan, inf, 0.0)) -> float | None:
        u = rng.random()
        if u < 0.05:
            return None
        if u < 0.15:
            return float(rng.choice(special))
        return float(scale * rng.lognormal(0, 1))

    rows = [{"step": 0, "eval/accuracy": 0.5, "gap/M": 0.0}]
    for step in range(1, k + 1):
        row = {"step": step, "learning_rate": 1e-3, "grad_norm": value(1.0), "entropy": value(1.0),
               "reward": value(0.3), "frac_reward_zero_std": value(0.3), "kl": value(0.01),
               "gap/lr_crit": value(1e-3), "gap_fresh/lr_crit": value(1e-3),
               "gap/crit_ratio": value(1.0), "gap_fresh/crit_ratio": value(1.0),
               "gap/log_odds_change": None if (v := value(0.1)) is None else v - 0.15,
               "gap_fresh/log_odds_change": None if (v := value(0.1)) is None else v - 0.15}
        rows.append({key: v for key, v in row.items() if v is not None})
    return rows


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_no_detector_looks_ahead(name):
    grid = param_grid(GRIDS[name])
    for params in [{}, grid[0], grid[-1], grid[len(grid) // 2]]:
        det = detector(name, **params)
        for seed in range(4):
            rows = _random_rows(seed)
            full = alarm_steps(det, rows)
            for k in range(len(rows) + 1):
                last = rows[k - 1]["step"] if k else -1
                assert alarm_steps(det, rows[:k]) == [s for s in full if s <= last], (params, seed, k)


@pytest.mark.parametrize("patience", [1, 2, 3, 5])
def test_current_is_the_monitors_crit_rule(patience):
    det = detector("rlvrlab/current", patience=patience)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        rows = []
        for step in range(1, 31):
            row = {"step": step, "learning_rate": 1e-3, "charts/lr": 1e-3, "grad_norm": 1.0}
            if rng.random() < 0.85:  # a measured step
                row.update({"gap/crit_ratio": float(rng.choice([0.5, 1.5, inf, nan, 0.0, 1.0])),
                            "gap/log_odds_change": float(rng.choice([0.1, -0.1, nan, 0.0])),
                            "gap/lr_crit": 1e-3, "gap/zero_variance_groups": 0.0})
            rows.append(row)
        alarms = set(alarm_steps(det, rows))
        measured = [r for r in rows if "gap/crit_ratio" in r]
        for j, r in enumerate(measured):  # GapMonitor.record's window: the last `patience` measured rows
            assert (r["step"] in alarms) == ("crit" in gap_warnings(measured[max(0, j - patience + 1): j + 1], patience))
        first = next((r["step"] for k, r in enumerate(rows) if "crit" in gap_warnings(rows[: k + 1], patience)), None)
        assert first_alarm(det, rows) == first


# --- scores ------------------------------------------------------------------------------------


def _lab(kind: str, onset: int | None = None) -> RunLabel:
    return RunLabel(kind, onset, 0.5, 0.5, 0.5, 0.05)


def _hand_made_runs() -> list[ScoredRun]:
    return [ScoredRun(_lab("collapsed", 10), (5, 12)),   # lead 10 - 5 = 5
            ScoredRun(_lab("collapsed", 20), (25,)),     # late: lead -5
            ScoredRun(_lab("collapsed", 30), ()),        # missed
            ScoredRun(_lab("collapsed", 40), (30, 31)),  # lead 10
            ScoredRun(_lab("healthy"), (7,)),            # a false alarm
            ScoredRun(_lab("healthy"), ()),
            ScoredRun(_lab("healthy"), ()),
            ScoredRun(_lab("stalled"), (3,)),
            ScoredRun(_lab("stalled"), ())]


def test_score_counts_rates_and_leads_by_hand():
    s = score(_hand_made_runs())
    assert (s.n_collapsed, s.n_healthy, s.n_stalled, s.tp, s.fn, s.fp) == (4, 3, 2, 3, 1, 1)
    assert s.recall == 0.75 and s.false_alarm_rate == pytest.approx(1 / 3) and s.precision == 0.75
    assert s.f1 == pytest.approx(6 / 8)  # 2·3 / (2·3 + 1 + 1)
    assert s.stalled_alarm_rate == 0.5  # stalled runs count in none of the above
    assert s.leads == (5.0, -5.0, 10.0)
    assert (s.lead_q25, s.lead_median, s.lead_q75) == (0.0, 5.0, 7.5)  # sorted -5, 5, 10: linear percentiles
    for name in ("recall", "false_alarm", "precision", "f1", "lead_median"):
        low, high = getattr(s, name + "_ci")
        point = getattr(s, {"false_alarm": "false_alarm_rate"}.get(name, name))
        assert low <= point <= high, name
    # the recall interval is the bootstrap of the collapsed runs' alarm flags, with the fixed seed
    assert s.recall_ci == bootstrap_ci(np.mean, np.array([1.0, 1.0, 0.0, 1.0]))
    assert score(_hand_made_runs()) == s  # fixed seed: the same intervals again
    row = s.row()
    assert row["recall"] == 0.75 and row["recall_low"] == s.recall_ci[0] and "leads" not in row


def test_score_undefined_and_degenerate_cases():
    s = score([ScoredRun(_lab("collapsed", 10)), ScoredRun(_lab("collapsed", 20)), ScoredRun(_lab("healthy"))])
    assert (s.recall, s.f1, s.false_alarm_rate) == (0.0, 0.0, 0.0)
    assert math.isnan(s.precision) and math.isnan(s.lead_median) and math.isnan(s.lead_q25)
    assert s.recall_ci == (0.0, 0.0)                      # no collapsed run alarmed: nothing to resample
    assert all(math.isnan(v) for v in s.false_alarm_ci)   # one healthy run
    assert all(math.isnan(v) for v in s.lead_median_ci + s.precision_ci)
    empty = score([])
    assert math.isnan(empty.recall) and math.isnan(empty.f1) and math.isnan(empty.stalled_alarm_rate)
    assert score([ScoredRun(_lab("collapsed", 10), (20,))]).leads == (-10.0,)  # an alarm after the onset: late


def test_tune_prefers_f1_then_lead_then_fewer_false_alarms():
    """A scripted detector alarms at the steps its plan lists for the run named in the rows."""

    class Scripted:
        name = "scripted"

        def __init__(self, *, plan: str):
            self.plan = PLANS[plan]

        def reset(self):
            pass

        def update(self, row):
            return row["step"] in self.plan[row["run"]]

    labels = [_lab("collapsed", 10), _lab("collapsed", 10), _lab("healthy"), _lab("healthy")]
    runs_rows = [[{"step": s, "run": i, "learning_rate": 1e-3} for s in range(1, 21)] for i in range(4)]
    PLANS = {"quiet": [(), (), (), ()],                  # F1 0
             "late": [(15,), (15,), (), ()],             # F1 1, lead -5
             "early": [(5,), (5,), (), ()],              # F1 1, lead 5
             "noisy": [(5,), (), (3,), ()],              # F1 2/4 = 0.5
             "half": [(5,), (), (), ()],                 # F1 2/3, lead 5, no false alarm
             "half_fa": [(5,), (5,), (3,), (4,)]}        # F1 4/6 = 2/3, lead 5, false alarms 2/2
    assert tune(Scripted, {"plan": ["quiet", "late", "early", "noisy"]}, runs_rows, labels) == {"plan": "early"}
    assert tune(Scripted, {"plan": ["late", "noisy"]}, runs_rows, labels) == {"plan": "late"}
    assert tune(Scripted, {"plan": ["half_fa", "half"]}, runs_rows, labels) == {"plan": "half"}
    assert tune(Scripted, {"plan": ["half", "half_fa"]}, runs_rows, labels) == {"plan": "half"}


def test_tune_finds_the_zero_std_threshold_that_separates_the_runs():
    collapsed = [0.2, 0.4, 0.52, 0.6, 0.8, 0.9]  # onset at step 4 (the 0.6)
    healthy = [0.1, 0.3, 0.45, 0.4, 0.2, 0.1]
    runs_rows = [_rows(frac_reward_zero_std=collapsed)] * 3 + [_rows(frac_reward_zero_std=healthy)] * 3
    labels = [_lab("collapsed", 4)] * 3 + [_lab("healthy")] * 3
    # 0.3: false alarms on every healthy run; 0.7: alarms at step 5 (lead -1); 0.5 and 0.55 catch every
    # collapse with no false alarm, 0.5 at step 3 (lead 1), 0.55 at step 4 (lead 0)
    best = tune(DETECTORS["zero_std"], {"threshold": [0.3, 0.55, 0.7, 0.5]}, runs_rows, labels)
    assert best == {"threshold": 0.5}
