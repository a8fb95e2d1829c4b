"""The benchmark scripts run and their two sides agree (timings are never asserted in tests)."""

from __future__ import annotations

import json
import statistics
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
    # The script asserts the batched and naive runs agree (exit code 0); here: the reported numbers
    # are those of the measured runs, and the speed-up is the ratio of the times it comes from.
    assert (result["runs"], result["steps"], len(result["batched_float32_seconds_all"])) == (16, 200, 1)
    assert result["batched_seconds_per_run"] > 0 and result["naive_numpy_seconds_per_run"] > 0
    assert result["batched_float32_seconds"] == pytest.approx(statistics.median(result["batched_float32_seconds_all"]), abs=1e-3)
    assert result["batched_seconds_per_run"] == pytest.approx(result["batched_float32_seconds"] / 16, abs=1e-3 / 16)
    assert abs(result["speedup_per_run"] - result["naive_numpy_seconds_per_run"] / result["batched_seconds_per_run"]) < 0.1 * result["speedup_per_run"] + 0.1


def test_phase_benchmark_smoke(tmp_path):
    out = tmp_path / "phase.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "phase.py"), "--repeats", "1", "--limit", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["cells"] == 2
    runs = result["all_seconds"]
    assert len(runs["1"]) == len(runs["2"]) == 1 and min(runs["1"] + runs["2"]) > 0
    assert (result["seconds_1_worker"], result["seconds_2_workers"]) == (statistics.median(runs["1"]), statistics.median(runs["2"]))
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
    assert set(sec) == {"trl", "ours_off", "ours_on", "ours_sampled"} and all(len(s["all"]) == 2 for s in sec.values())
    assert result["speedup_trl_over_ours_off"] == pytest.approx(sec["trl"]["median"] / sec["ours_off"]["median"], rel=0.02)
    assert result["speedup_trl_over_ours_off_means"] == pytest.approx(sec["trl"]["mean"] / sec["ours_off"]["mean"], rel=0.02)
    assert 1 + result["diagnostics_overhead"] == pytest.approx(sec["ours_on"]["median"] / sec["ours_off"]["median"], rel=0.02)
    assert 1 + result["sampled_diagnostics_overhead"] == pytest.approx(sec["ours_sampled"]["median"] / sec["ours_off"]["median"],
                                                                       rel=0.02)
    assert result["unmixed"] == 0.1 and 0 < result["sampled_share_of_groups_measured"] <= 1
    for s in sec.values():  # the summaries are those of the measured rounds (times rounded to 0.1 ms)
        assert min(s["all"]) > 0
        assert s["median"] == pytest.approx(statistics.median(s["all"]), abs=2e-4)
        assert s["mean"] == pytest.approx(statistics.mean(s["all"]), abs=2e-4)
    paired = statistics.median(t / o for t, o in zip(sec["trl"]["all"], sec["ours_off"]["all"]))
    assert result["speedup_paired_median"] == pytest.approx(paired, rel=0.02)
    # TRL generated once per optimizer step, on a batch of prompts × group completions.
    trl = result["trl_config"]
    assert trl["generation_batch_size"] == trl["per_device_train_batch_size"] == 8 and trl["steps_per_generation"] == 1
    assert trl["loss_type"] == "grpo" and trl["beta"] == 0.0 and not trl["gradient_checkpointing"] and not trl["bf16"]
    for k in ("trl", "ours_off", "ours_on", "ours_sampled"):
        assert 1 <= result["completion_length_mean"][k] <= result["completion_length_longest_mean"][k] <= 16


def test_grpo_step_profile_smoke(tmp_path, tiny_base_model):
    out = tmp_path / "profile.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "grpo_step_profile.py"), "--model", str(tiny_base_model), "--prompts", "2",
         "--group", "4", "--max-new-tokens", "8", "--warmup", "1", "--rounds", "3", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    steps, med = result["steps"], result["seconds_median"]
    phases = ("sample", "rewards", "forward", "backward", "optimizer", "other")
    assert len(steps) == 3 and all(s["sample"] > 0 and s["forward"] > 0 and s["backward"] > 0 for s in steps)
    for s in steps:  # the phases split the step: they add up to it, and only "other" (a difference) could go negative
        assert sum(s[p] for p in phases) == pytest.approx(s["total"], abs=5e-5)
    assert med["total"] == pytest.approx(statistics.median(s["total"] for s in steps), abs=1e-5)
    for p in phases:  # shares of the median step (the medians are rounded to 10 µs, the shares to 1e-4)
        assert result["share_of_median_step"][p] == pytest.approx(med[p] / med["total"], abs=2e-3)
    assert 1 <= result["sample_model_calls_median"] <= 8  # prefill and at most 7 decode steps
    assert 1 <= result["completion_length_mean"] <= result["completion_length_longest_mean"] <= 8


def test_trl_monitor_benchmark_smoke(tmp_path, tiny_base_model):
    pytest.importorskip("trl")
    out = tmp_path / "trl_monitor.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "trl_monitor.py"), "--model", str(tiny_base_model), "--prompts", "2",
         "--group", "4", "--max-new-tokens", "8", "--warmup", "1", "--rounds", "2", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    sec, rounds = result["seconds_per_step"], result["seconds_all"]
    assert (result["warmup"], result["rounds"]) == (1, 2)
    assert [len(v) for v in rounds.values()] == [2, 2, 2] and min(min(v) for v in rounds.values()) > 0
    assert 0 < sec["monitor_pass_median"] < sec["monitored_median"]
    assert (sec["idle_median"], sec["monitored_median"], sec["monitor_pass_median"]) == tuple(
        statistics.median(rounds[k]) for k in ("idle", "monitored", "monitor_pass"))
    # the two overheads are the ratios of the times they are computed from
    assert result["overhead_paired_median"] == pytest.approx(
        statistics.median(b / a - 1 for a, b in zip(rounds["idle"], rounds["monitored"])))
    assert result["overhead_direct"] == pytest.approx(sec["monitor_pass_median"] / sec["idle_median"])
    assert 1 <= result["completion_length_mean"] <= 8


def test_diagnostics_sampled_benchmark_smoke(tmp_path, tiny_base_model):
    pytest.importorskip("trl")
    out = tmp_path / "sampled.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "diagnostics_sampled.py"), "--model", str(tiny_base_model), "--task", "add",
         "--prompts", "4", "--group", "4", "--max-new-tokens", "6", "--steps", "3", "--lr", "3e-2", "--draws", "4",
         "--fractions", "1", "0.5", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["trainers"]) == {"ours", "trl"}
    for trainer in result["trainers"].values():
        every, half = trainer["scores"]
        assert every["fraction"] == 1 and every["measured_share"] == 1 and every["steps"] == 3
        assert trainer["mixed_share"] <= half["measured_share"] <= 1
        for key in ("delta_mu_eta", "log_odds_change"):
            if every[key]["draws"]:  # with every group measured the sampled pass is the full one
                assert every[key]["z_median"] == every[key]["z_95"] == 0 and every[key]["se_ratio_median"] == 1


def test_distinct_rows_benchmark_smoke(tmp_path, tiny_base_model):
    out = tmp_path / "distinct.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "distinct_rows.py"), "--model", str(tiny_base_model), "--tasks", "add",
         "--prompts", "2", "--group", "4", "--max-new-tokens", "6", "--steps", "2", "--rounds", "4", "--threads", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads(out.read_text())
    assert r["rows"] == 8 and len(r["distinct_rows"]) == 2 and all(1 <= d <= 8 for d in r["distinct_rows"])
    assert r["speedup"] == pytest.approx(r["forward_backward_every_row_s"] / r["forward_backward_distinct_s"])
    assert r["max_logp_difference"] < 1e-5  # the same log-probs, on a batch of another shape
    assert 0 <= r["repeated_share"] <= r["unmixed_share"] <= 1  # a repeated completion has one reward


def test_memory_benchmark_smoke(tmp_path):
    pytest.importorskip("trl")
    # A small vocabulary and short completions: the structure and the arithmetic of the report, not
    # the comparison (peaks this small are a few allocator pages apart).
    out = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--vocab", "2048", "--tokens", "16", "--prompts", "2",
         "--group", "2", "--hidden", "32", "--layers", "1", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert (result["vocab"], result["completions"], result["tokens"]) == (2048, 4, 16)
    assert result["logits_bytes"] == 4 * 16 * 2048 * 4  # N·T·V float32
    assert set(result["peaks"]) == {"trl", "ours_off", "ours_on"}
    for p in result["peaks"].values():
        assert p["completions"] == 4 and p["completion_length_mean"] == p["completion_length_max"] == 16  # no EOS, ever
        assert p["step_peak_bytes"] == p["maxrss_after_bytes"] - p["rss_before_bytes"] > 0
        assert 0 < p["rss_before_bytes"] <= p["maxrss_after_bytes"] and p["seconds"] > 0
        assert p["peak_over_logits"] == pytest.approx(p["step_peak_bytes"] / result["logits_bytes"], rel=1e-3)
    for side, ratio in result["ours_over_trl"].items():
        assert ratio == pytest.approx(result["peaks"][side]["step_peak_bytes"] / result["peaks"]["trl"]["step_peak_bytes"],
                                      rel=1e-3)
    assert "peak above start" in proc.stdout and "x logits" in proc.stdout


def test_lm_sweep_benchmark_smoke(tmp_path, tiny_base_model):
    out = tmp_path / "lm_sweep.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lm_sweep.py"), "--smoke", "--model", str(tiny_base_model),
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    configs = result["configurations"]
    assert (result["runs"], result["rounds"]) == (2, 1) and set(configs) == {"1x2", "2x1"}
    assert [(c["workers"], c["threads"]) for c in configs.values()] == [(1, 2), (2, 1)]
    for c in configs.values():  # runs per hour are those of the measured wall times
        assert len(c["wall_seconds"]) == 1 and min(c["wall_seconds"]) > 0 and c["run_seconds_mean"] > 0
        assert c["runs_per_hour"] == [pytest.approx(2 * 3600 / t, rel=0.01) for t in c["wall_seconds"]]
        assert c["runs_per_hour_median"] == pytest.approx(statistics.median(c["runs_per_hour"]), rel=1e-3)
    assert result["ratio_2x1_over_1x2_median"] == pytest.approx(
        configs["2x1"]["runs_per_hour_median"] / configs["1x2"]["runs_per_hour_median"], rel=0.01)
    assert result["faster"] == ("2x1" if result["ratio_2x1_over_1x2_median"] > 1 else "1x2")
    conditions = result["conditions"]  # every measurement taken; smoke keeps each (no retaking when disturbed)
    assert [(c["config"], c["kept"]) for c in conditions] == [("1x2", True), ("2x1", True)] and len(result["load_average_after"]) == 3
    for k, c in configs.items():
        assert c["wall_seconds"] == [m["wall_seconds"] for m in conditions if m["config"] == k and m["kept"]]
    assert all(m["others_cores"] >= 0 and len(m["load_average"]) == 3 for m in conditions)


def test_diagnostics_mixed_groups_smoke(tiny_base_model):
    import importlib.util

    spec = importlib.util.spec_from_file_location("diagnostics_mixed_groups", ROOT / "benchmarks" / "diagnostics_mixed_groups.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--model", str(tiny_base_model), "--steps", "3", "--batch-size", "32"])
    for k, o in out.items():  # every reported share is one of the steps measured, every spread non-negative
        assert k in ("gap/delta_mu_eta", "gap/log_odds_change") and 1 <= o["steps"] <= 3
        assert 0 <= o["median_abs_z"] <= o["max_abs_z"] and o["median_relative"] >= 0
        assert o["share_abs_z_above_2"] * o["steps"] == pytest.approx(round(o["share_abs_z_above_2"] * o["steps"]))
