"""rlvrlab.lm.probe: the scan's reading (a worked example), the extrapolation it rests on (Adam's
first step is linear in the rate), and the probe end to end against a plain reference."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch

from rlvrlab.io import read_table
from rlvrlab.lm.config import TrainConfig
from rlvrlab.lm.probe import crossing, probe


def test_crossing_reads_the_peak_and_the_first_fall_to_zero_interpolated_in_log_rate():
    rates = [1.0, 2.0, 4.0, 8.0]
    critical, peak = crossing(rates, [0.1, 0.3, 0.1, -0.1])
    assert peak == 2.0
    assert critical == pytest.approx(4 * math.sqrt(2))  # halfway from 4 to 8 in log rate: the gain goes 0.1 -> -0.1
    assert crossing(rates, [0.1, 0.2, 0.3, 0.4]) == (math.inf, 8.0)  # no fall within the grid
    assert crossing(rates, [-0.1, -0.2, -0.3, -0.4]) == (0.0, 1.0)  # every rate loses
    critical, peak = crossing(rates, [0.1, math.nan, 0.2, -0.2])  # NaN (not scanned) is skipped
    assert (peak, critical) == (4.0, pytest.approx(4 * math.sqrt(2)))
    assert crossing(rates, [0.2, 0.0, 0.1, -0.1])[0] == 2.0  # exactly zero counts as the fall


def _parity(completion: str, problem) -> int:
    return int(len(completion) % 2 == 0)  # reward variance from a random model's noise


def _params(trainer) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(trainer.params).detach().clone()


def test_adams_first_step_is_linear_in_the_rate_so_one_probe_step_prices_every_rate(tiny_model, tmp_path):
    from rlvrlab.lm.trainer import GRPOTrainer

    torch.manual_seed(0)
    steps = {}
    for lr in (1e-5, 3e-4):
        cfg = TrainConfig(model=str(tiny_model), task="add", batch_size=16, group=4, prompts=40, max_new_tokens=8, lr=lr,
                          diagnostics=False, seed=3)
        trainer = GRPOTrainer(cfg, tmp_path / f"lr{lr}", reward_fn=_parity)
        theta0 = _params(trainer)
        trainer.train_step()
        steps[lr] = (theta0, _params(trainer))
    (theta0, small), (_, large) = steps[1e-5], steps[3e-4]
    U, V = (small - theta0) / 1e-5, (large - theta0) / 3e-4  # displacement per unit rate at each rate
    # Adam's first step is lr·g/(|g| + ε) per coordinate: at most 1 per unit rate, whatever the gradient's scale
    # (up to float32's rounding of θ, about 1e-7 absolute, which a step of 1e-5 sees as 1e-2 per unit rate)
    assert float(U.abs().max()) == pytest.approx(1.0, abs=2e-2)
    assert float(V.abs().max()) == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(V, U, atol=2e-2, rtol=0)
    assert float(torch.nn.functional.cosine_similarity(U, V, dim=0)) > 0.9999


def test_probe_end_to_end_scan_from_the_start_and_files(tiny_model, tmp_path):
    from rlvrlab.lm.trainer import GRPOTrainer

    model_files = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in tiny_model.iterdir() if p.is_file()}
    cfg = TrainConfig(model=str(tiny_model), task="add", batch_size=16, group=4, prompts=40, max_new_tokens=8, seed=5, lr=1e-2,
                      schedule="cosine", steps=4)  # the run's own rate and schedule must not reach the probe's steps
    r = probe(cfg, tmp_path / "probe", steps=2, fresh=3, lr_low=1e-4, lr_high=10.0, points=6, reward_fn=_parity)

    # the start, by hand: the prompts of the run's first two batches, 3 completions each, from the scan's stream
    ref = GRPOTrainer(cfg, tmp_path / "ref", reward_fn=_parity)
    problems = []
    for b in range(2):
        ref.step = b
        problems += ref._batch()
    reward = ref._rollout(problems, 3, torch.Generator().manual_seed(cfg.seed * 1_000_003 + 2_000_003))[1]
    assert r.J0 == pytest.approx(float(reward.float().mean()))
    assert r.completions_per_rate == len(problems) * 3 == 24
    assert list(r.rates) == pytest.approx(list(np.geomspace(1e-4, 10.0, 6)[: len(r.rates)]))
    assert all(0 <= j <= 1 for j in r.J)
    assert r.recommended_rate == r.critical_rate / 2
    table = read_table(tmp_path / "probe" / "probe.parquet").to_pylist()
    assert [row["gain"] for row in table] == pytest.approx([j - r.J0 for j in r.J])
    saved = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert saved["probe"]["steps"] == 2 and saved["settings"]["seed"] == 5
    # the probe's steps are the run's first two steps at lr_probe (whatever the run's own rate and schedule): a plain
    # trainer at that rate takes the same two steps
    plain = GRPOTrainer(dataclasses.replace(cfg, lr=1e-5, schedule="constant", diagnostics=False), tmp_path / "plain", reward_fn=_parity)
    theta0 = _params(plain)
    for b in range(2):
        plain.step = b
        plain.train_step()
    assert r.displacement == pytest.approx(float((_params(plain) - theta0).norm()) / 1e-5, rel=1e-4)  # float32 sums
    assert {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in tiny_model.iterdir() if p.is_file()} == model_files


@pytest.mark.parametrize("kw, message", [({"steps": 11}, "at most 10"), ({"fresh": 1}, "fresh"), ({"lr_high": 1e-6}, "lr_high"),
                                         ({"points": 2}, "points"), ({"lr_probe": 0.0}, "lr_probe")])
def test_probe_refuses_bad_settings_before_any_work(tiny_model, tmp_path, kw, message):
    cfg = TrainConfig(model=str(tiny_model), task="add", batch_size=16, group=4, prompts=40)
    with pytest.raises(ValueError, match=message):
        probe(cfg, tmp_path / "p", **kw)
    assert not (tmp_path / "p").exists()


def test_a_scan_in_the_middle_of_a_run_leaves_the_run_as_it_was(tiny_model, tmp_path):
    from rlvrlab.lm.probe import scan
    from rlvrlab.lm.trainer import GRPOTrainer

    cfg = TrainConfig(model=str(tiny_model), task="add", batch_size=16, group=4, prompts=40, max_new_tokens=8, lr=1e-3, seed=2,
                      fresh_samples=2, schedule="cosine", steps=3)
    plain, probed = GRPOTrainer(cfg, tmp_path / "a", reward_fn=_parity), GRPOTrainer(cfg, tmp_path / "b", reward_fn=_parity)
    rows = {"plain": [], "probed": []}
    for name, trainer in (("plain", plain), ("probed", probed)):
        for k in range(3):
            if name == "probed" and k == 1:
                r = scan(trainer, steps=2, fresh=2, lr_low=1e-4, lr_high=1.0, points=4)
                assert r.steps == 2 and len(r.J) >= 1
            rows[name].append(trainer.train_step())
            trainer.step += 1
    assert torch.equal(_params(plain), _params(probed))
    for a, b in zip(rows["plain"], rows["probed"]):
        assert a.keys() == b.keys()
        assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_schedule_probe_aims_at_the_scans_recommended_rate_moving_at_most_2x_a_step(tiny_model, tmp_path):
    from rlvrlab.lm.trainer import GRPOTrainer

    cfg = TrainConfig(model=str(tiny_model), task="add", batch_size=16, group=4, prompts=40, max_new_tokens=8, lr=1e-6, seed=1,
                      schedule="probe", probe_every=3, probe_steps=1, probe_fresh=2, lr_min=1e-4, lr_max=1.0, steps=5, eval_every=5,
                      eval_samples=1)
    rows = GRPOTrainer(cfg, tmp_path / "run", reward_fn=_parity).train()[1:]
    scans = [r for r in rows if "probe/recommended_rate" in r]
    assert [r["step"] for r in scans] == [1, 4]  # before the first step and before step 3 + 1
    lrs = [r["learning_rate"] for r in rows]
    assert lrs[0] == pytest.approx(1e-4)  # the start (1e-6) below the aim, raised to lr_min, never above the aim
    target = min(max(scans[0]["probe/recommended_rate"], 1e-4), 1.0)  # no fall within the scan (inf): lr_max
    for prev, cur in zip(lrs[:3], lrs[1:3]):
        assert cur == pytest.approx(min(max(target, prev / 2), 2 * prev))
    for r in scans:
        assert r["probe/recommended_rate"] == r["probe/critical_rate"] / 2 or math.isnan(r["probe/critical_rate"])


@pytest.mark.parametrize("rescan", ["any", "lower"])
def test_a_rescan_moves_the_aim_and_with_lower_only_ever_down(tiny_model, tmp_path, monkeypatch, rescan):
    import types

    import rlvrlab.lm.probe
    from rlvrlab.lm.trainer import GRPOTrainer

    aims = iter([2e-3, 8e-3])  # the scans' recommendations: the second higher (a trained state over-predicts)
    monkeypatch.setattr(rlvrlab.lm.probe, "scan", lambda trainer, **kw: types.SimpleNamespace(
        recommended_rate=(a := next(aims)), critical_rate=2 * a, J0=0.5, seconds=0.0))
    cfg = TrainConfig(model=str(tiny_model), task="add", batch_size=16, group=4, prompts=40, max_new_tokens=8, lr=1e-3, seed=1,
                      schedule="probe", probe_every=3, lr_min=1e-4, lr_max=1.0, steps=6, eval_every=6, eval_samples=1,
                      probe_rescan=rescan)
    rows = GRPOTrainer(cfg, tmp_path / "run", reward_fn=_parity).train()[1:]
    assert [r["probe/recommended_rate"] for r in rows if "probe/recommended_rate" in r] == [2e-3, 8e-3]
    lrs = [r["learning_rate"] for r in rows]
    # the first step at min(start, aim) = 1e-3, then 2x a step to the aim 2e-3; from step 4: any follows 8e-3 at 2x a step,
    # lower keeps 2e-3
    assert lrs == pytest.approx([1e-3, 2e-3, 2e-3] + ([4e-3, 8e-3, 8e-3] if rescan == "any" else [2e-3] * 3))


@pytest.mark.parametrize("start", [1e-2, 1e-4])
def test_gap_adaptive_started_by_the_probe_aims_at_half_its_critical_rate_from_the_first_step(tiny_model, tmp_path, monkeypatch,
                                                                                               start):
    """adaptive_start "probe": one scan before the first step (never again); its critical rate is the
    rule's prior, so the first step is at min(lr, half of it) and every later rate is the rule's move."""
    import types

    import rlvrlab.lm.probe
    from rlvrlab.lm.diagnostics import GapAdaptiveRate
    from rlvrlab.lm.trainer import GRPOTrainer

    calls = []
    monkeypatch.setattr(rlvrlab.lm.probe, "scan", lambda trainer, **kw: calls.append(trainer.step) or types.SimpleNamespace(
        recommended_rate=2e-3, critical_rate=4e-3, J0=0.5, seconds=0.0))
    cfg = TrainConfig(model=str(tiny_model), task="add", batch_size=16, group=4, prompts=40, max_new_tokens=8, lr=start, seed=1,
                      schedule="gap-adaptive", adaptive_start="probe", adaptive_ratchet=True, lr_min=1e-5, lr_max=1.0, steps=5,
                      eval_every=5, eval_samples=1)
    rows = GRPOTrainer(cfg, tmp_path / "run", reward_fn=_parity).train()[1:]
    assert calls == [0] and rows[0]["probe/critical_rate"] == 4e-3 and all("probe/critical_rate" not in r for r in rows[1:])
    rule = GapAdaptiveRate(0.5, 0.8, 1.1, 1e-5, 1.0, ratchet=True)
    lr = min(start, rule.prior(4e-3))
    assert rows[0]["learning_rate"] == pytest.approx(min(start, 2e-3))
    for r in rows:
        assert r["learning_rate"] == pytest.approx(lr)
        lr = rule(r["gap/crit_ratio"], lr)


def test_adaptive_start_probe_is_refused_outside_the_gap_adaptive_schedule():
    with pytest.raises(ValueError, match="adaptive_start: got 'probe'.*schedule 'constant'"):
        TrainConfig(model="m", adaptive_start="probe")
    with pytest.raises(ValueError, match="adaptive_start.*lr, probe"):
        TrainConfig(model="m", schedule="gap-adaptive", adaptive_start="up")
    assert TrainConfig(model="m", schedule="gap-adaptive", adaptive_start="probe").adaptive_start == "probe"


def test_probe_rescan_refuses_an_unknown_rule():
    with pytest.raises(ValueError, match="probe_rescan.*any, lower"):
        TrainConfig(model="m", probe_rescan="up")
