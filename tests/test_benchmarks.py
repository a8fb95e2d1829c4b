"""The benchmark scripts run and their two sides agree (timings are never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bandit_benchmark_smoke(tmp_path):
    out = tmp_path / "bandit.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bandit.py"), "--runs", "16", "--steps", "200", "--naive-runs", "2",
         "--repeats", "1", "--record-every", "5", "--threads", "1", "--no-compile", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    # The script asserts agreement itself; the reported numbers are consistent with one another.
    assert result["agreement_max_abs_J_f32"] < 1e-4
    assert abs(result["speedup_per_run"] - result["naive_numpy_seconds_per_run"] / result["batched_seconds_per_run"]) < 0.1 * result["speedup_per_run"] + 0.1


def test_phase_benchmark_smoke(tmp_path):
    out = tmp_path / "phase.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "phase.py"), "--repeats", "1", "--limit", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["cells"] == 2
    assert result["speedup"] == pytest.approx(result["seconds_1_worker"] / result["seconds_2_workers"], rel=0.05)


def test_grpo_vs_trl_benchmark_smoke(tmp_path, tiny_base_model):
    pytest.importorskip("trl")
    # The barely trained model's completions may earn no reward: the script's sanity check then
    # requires that no trainer moved its weights (no reward variance, no GRPO step).
    out = tmp_path / "grpo_vs_trl.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "grpo_vs_trl.py"), "--model", str(tiny_base_model), "--prompts", "2",
         "--group", "4", "--warmup", "1", "--rounds", "2", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    sec = result["seconds_per_step"]
    assert (result["warmup"], result["rounds"]) == (1, 2)
    assert set(sec) == {"trl", "ours_off", "ours_on"} and all(len(s["all"]) == 2 for s in sec.values())
    assert result["speedup_trl_over_ours_off"] == pytest.approx(sec["trl"]["median"] / sec["ours_off"]["median"], rel=0.02)
    assert result["speedup_trl_over_ours_off_means"] == pytest.approx(sec["trl"]["mean"] / sec["ours_off"]["mean"], rel=0.02)
    assert 1 + result["diagnostics_overhead"] == pytest.approx(sec["ours_on"]["median"] / sec["ours_off"]["median"], rel=0.02)
    assert result["targets"]["speedup_ge_1.5"] == (result["speedup_trl_over_ours_off"] >= 1.5)
    # TRL generated once per optimizer step, on a batch of prompts × group completions.
    trl = result["trl_config"]
    assert trl["generation_batch_size"] == trl["per_device_train_batch_size"] == 8 and trl["steps_per_generation"] == 1
    assert trl["loss_type"] == "grpo" and trl["beta"] == 0.0 and not trl["gradient_checkpointing"] and not trl["bf16"]
    for k in ("trl", "ours_off", "ours_on"):
        assert 1 <= result["completion_length_mean"][k] <= result["completion_length_longest_mean"][k] <= 16


def test_trl_monitor_benchmark_smoke(tmp_path, tiny_base_model):
    pytest.importorskip("trl")
    out = tmp_path / "trl_monitor.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "trl_monitor.py"), "--model", str(tiny_base_model), "--prompts", "2",
         "--group", "4", "--max-new-tokens", "8", "--warmup", "1", "--rounds", "2", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    sec = result["seconds_per_step"]
    assert (result["warmup"], result["rounds"]) == (1, 2)
    assert 0 < sec["monitor_pass_median"] < sec["monitored_median"]
    assert result["overhead_direct"] == pytest.approx(sec["monitor_pass_median"] / sec["idle_median"])
    assert result["target_le_10pct"]["paired"] == (result["overhead_paired_median"] <= 0.10)
    assert 1 <= result["completion_length_mean"] <= 8
