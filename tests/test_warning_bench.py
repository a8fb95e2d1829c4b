"""warning-bench's own pieces: the label of a diverged run, the TRL subset end to end, and the
matched TRL run's refusals (the detectors and scores are tested in tests/test_alarms.py, the
peers in tests/test_peers.py, the experiment's contract in tests/test_experiments.py)."""

from __future__ import annotations

import math

import pytest

from rlvrlab.experiments import run_experiment
from rlvrlab.experiments.warning_bench import _label
from rlvrlab.io import read_table
from rlvrlab.lm.config import TrainConfig


def test_a_diverged_run_scores_zero_where_it_diverged():
    rows = [{"step": 0.0, "eval/accuracy": 0.5}, {"step": 1.0, "reward": 0.5}, {"step": 2.0, "eval/accuracy": 0.5}]
    lab = _label(rows, "diverged", n_eval=400)  # margin 2·√(0.25/400) = 0.05
    assert lab.kind == "collapsed" and lab.onset == 3 and lab.margin == pytest.approx(0.05)
    assert _label(rows, "finished", n_eval=400).kind == "stalled"


def test_the_trl_subset_runs_the_same_settings_through_trl_and_compares_the_warnings(tiny_base_model, tmp_path):
    settings = ["tasks=add", "presets=grpo", "lrs=1e-4,3e-2", "seeds=0,1", "tune_seeds=0", "steps=3", "batch_size=8", "group=4",
                "prompts=20", "max_new_tokens=8", "eval_every=1", "eval_samples=2", "fresh_samples=2", "workers=1",
                "trl_task=add", "trl_seeds=1", f"model={tiny_base_model}"]
    summary = run_experiment("warning-bench", tmp_path, quick=True, settings=settings)
    trl = read_table(tmp_path / "trl.parquet").to_pylist()
    assert sorted((r["lr"], r["seed"]) for r in trl) == [(1e-4, 1), (3e-2, 1)]
    assert all(r["label_trl"] in ("collapsed", "stalled", "healthy") and 0 <= r["accuracy_start_trl"] <= 1 for r in trl)
    runs = {(r["lr"], r["seed"]): r for r in read_table(tmp_path / "runs.parquet").to_pylist()}
    for r in trl:  # compared with rlvrlab's run of the same settings
        assert r["label_own"] == runs[(r["lr"], r["seed"])]["label"]
        assert r["accuracy_start_trl"] == pytest.approx(runs[(r["lr"], r["seed"])]["accuracy_start"])  # one model, one sampler
        own = runs[(r["lr"], r["seed"])]["first_alarm/rlvrlab/current (default)"]
        assert r["first_alarm_own/rlvrlab/current (default)"] == own or math.isnan(own) and math.isnan(
            r["first_alarm_own/rlvrlab/current (default)"])
    assert summary["headline"]["trl_subset"]["runs"] == 2
    assert any(c["name"] == "in TRL the monitor's best rule warns on the same runs as in rlvrlab's trainer" for c in summary["checks"])


def test_a_matched_trl_run_takes_the_grpo_preset_only(tiny_base_model, tmp_path):
    pytest.importorskip("trl")
    from rlvrlab.integrations.trl_matched import train_matched

    with pytest.raises(ValueError, match="preset: got 'dapo'"):
        train_matched(TrainConfig(model=str(tiny_base_model), preset="dapo"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_in_time_drops_a_collapsed_runs_alarms_after_its_onset_only():
    from rlvrlab.analysis.alarms import RunLabel, ScoredRun, score
    from rlvrlab.experiments.warning_bench import in_time

    collapsed = RunLabel("collapsed", 5, 0.6, 0.0, 0.0, 0.05)
    healthy = RunLabel("healthy", None, 0.5, 0.8, 0.8, 0.05)
    runs = [ScoredRun(collapsed, (3, 10)), ScoredRun(collapsed, (8,)), ScoredRun(collapsed, (5,)), ScoredRun(healthy, (2, 40))]
    kept = in_time(runs)
    assert [r.alarms for r in kept] == [(3,), (), (5,), (2, 40)]
    s, w = score(runs, intervals=False), score(kept, intervals=False)
    assert (s.recall, w.recall) == (1.0, pytest.approx(2 / 3))
    assert w.f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # TP 2, FP 1 (the healthy run), FN 1 (the late alarm)


def test_a_matched_trl_run_follows_the_configs_schedule(tiny_base_model, tmp_path):
    """train_matched's schedules: constant keeps config.lr; gap-adaptive is the monitor's rule with
    the config's settings (each next rate is GapAdaptiveRate's, from the step's crit_ratio); probe
    scans with probe_trl before train() and trains at the clamped recommended rate; a probe that
    would scan again mid-run is refused with nothing written."""
    pytest.importorskip("trl")
    from rlvrlab.integrations.trl_matched import train_matched
    from rlvrlab.lm.diagnostics import GapAdaptiveRate

    base = dict(model=str(tiny_base_model), task="add", steps=3, batch_size=16, group=4, prompts=40, eval_every=3,
                eval_samples=1, max_new_tokens=12, lr=1e-3)
    const = train_matched(TrainConfig(**base), tmp_path / "constant")
    assert [r["learning_rate"] for r in const[1:]] == [pytest.approx(1e-3)] * 3
    adaptive = train_matched(TrainConfig(**base, schedule="gap-adaptive", adaptive_ratchet=True, lr_min=1e-4, lr_max=3e-3),
                             tmp_path / "adaptive")
    rule = GapAdaptiveRate(0.5, 0.8, 1.1, 1e-4, 3e-3, ratchet=True)
    lr = 1e-3
    for row in adaptive[1:]:
        assert row["learning_rate"] == pytest.approx(lr, rel=1e-6)
        lr = rule(row["gap/crit_ratio"], lr)
    probed = train_matched(TrainConfig(**base, schedule="probe", probe_steps=1, probe_fresh=2, lr_min=1e-5, lr_max=1e-2),
                           tmp_path / "probe")
    aim = probed[0]["probe/recommended_rate"]
    assert "probe/critical_rate" in probed[0] and probed[0]["probe/seconds"] > 0
    want = 1e-3 if math.isnan(aim) else min(max(aim, 1e-5), 1e-2)
    assert [r["learning_rate"] for r in probed[1:]] == [pytest.approx(want)] * 3
    started = train_matched(TrainConfig(**base, schedule="gap-adaptive", adaptive_start="probe", probe_steps=1, probe_fresh=2,
                                        lr_min=1e-5, lr_max=1e-2), tmp_path / "started")
    rule = GapAdaptiveRate(0.5, 0.8, 1.1, 1e-5, 1e-2)
    aim = rule.prior(started[0]["probe/critical_rate"])
    lr = 1e-3 if math.isnan(aim) else min(max(min(1e-3, aim), 1e-5), 1e-2)
    for row in started[1:]:  # the first step at min(lr, the prior's aim), then the rule's moves from the prior
        assert row["learning_rate"] == pytest.approx(lr, rel=1e-6)
        lr = rule(row["gap/crit_ratio"], lr)
    with pytest.raises(ValueError, match="probe with probe_every 5"):
        train_matched(TrainConfig(**base, schedule="probe", probe_every=5), tmp_path / "again")
    assert not (tmp_path / "again").exists()
