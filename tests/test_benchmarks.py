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
