"""rlvrlab.io: atomic writes (no temp files left, old content kept on failure) and the long-format
tables (row order, columns, NaN as null, round trip through Parquet)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from rlvrlab import io
from rlvrlab.policies import LinearContextualSoftmax, TabularSoftmax
from rlvrlab.simulate import simulate

F64 = torch.float64


def test_atomic_write_replaces_content_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    io.atomic_write_text(path, "first\n")
    assert path.read_text() == "first\n"
    io.atomic_write_text(path, "second")
    assert path.read_text() == "second"
    io.atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    io.atomic_write_json(path, {"J": 0.5})

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_json(path, {"J": 0.9})
    assert io.read_json(path) == {"J": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # the temp file is gone


def test_json_writes_nan_as_null_and_infinities_as_strings(tmp_path):
    path = tmp_path / "s.json"
    io.atomic_write_json(path, {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "t": torch.tensor([1.0, math.nan]),
                                "n": np.float64(2.5), 3: (1, 2)})
    assert io.read_json(path) == {"a": None, "b": ["inf", "-inf", 1.5], "t": [1.0, None], "n": 2.5, "3": [1, 2]}
    assert "NaN" not in path.read_text()  # strict JSON


@pytest.fixture(scope="module")
def trajectories():
    gen = torch.Generator().manual_seed(0)
    bandit = TabularSoftmax(4)
    single = simulate(bandit, torch.tensor([[1.0, 0, 0, 1]], dtype=F64), bandit.init(3, scale=1.0, generator=gen),
                      steps=5, record_every=2, step_size=0.5, fast=False)
    ctx = LinearContextualSoftmax(torch.randn(2, 2, generator=gen, dtype=F64), arms=3)
    multi = simulate(ctx, torch.tensor([[1.0, 0, 0], [0, 0, 1]], dtype=F64), ctx.init(2, scale=1.0, generator=gen),
                     steps=3, step_size=0.5)
    return single, multi


def test_trajectory_table_long_format_round_trip(trajectories, tmp_path):
    traj, _ = trajectories
    S, R = len(traj.step), traj.runs
    assert traj.step.tolist() == [0, 2, 4, 5] and R == 3
    table = io.trajectory_table(traj, {"eta0": [0.1, 0.2, 0.3], "seed": torch.tensor([7, 8, 9])})
    assert table.num_rows == R * S
    assert table.column_names == ["run", "step", "eta0", "seed", *traj.metrics]
    # step quantities do not exist at the final row: null there, and only there
    assert table.column("delta_mu").null_count == R
    assert table.column("J").null_count == 0
    path = tmp_path / "metrics.parquet"
    io.write_table(path, table)
    back = io.read_table(path)
    assert back.equals(table)
    cols = io.columns(back, ["run", "step", "eta0", "seed", *traj.metrics])
    for row in range(R * S):
        r, s = divmod(row, S)  # run-major
        assert cols["run"][row] == r and cols["step"][row] == traj.step[s]
        assert cols["eta0"][row] == [0.1, 0.2, 0.3][r] and cols["seed"][row] == 7 + r
        for name, m in traj.metrics.items():
            v = float(m[s, r])
            assert (math.isnan(v) and math.isnan(cols[name][row])) or cols[name][row] == v, name
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.parquet"]


def test_prompt_table_long_format(trajectories, tmp_path):
    single, traj = trajectories
    assert io.prompt_table(single).num_columns == 0  # no per-prompt metrics recorded
    first = next(iter(traj.prompt_metrics.values()))
    S, R, C = first.shape
    table = io.prompt_table(traj)
    assert table.num_rows == R * S * C
    assert table.column_names == ["run", "step", "prompt", *traj.prompt_metrics]
    assert table.column("delta_mu").null_count == R * C  # the final step, every run and prompt
    io.write_table(tmp_path / "prompts.parquet", table)
    cols = io.columns(io.read_table(tmp_path / "prompts.parquet"), table.column_names)
    for row in range(R * S * C):
        r, rest = divmod(row, S * C)
        s, c = divmod(rest, C)
        assert (cols["run"][row], cols["step"][row], cols["prompt"][row]) == (r, int(traj.step[s]), c)
        for name, m in traj.prompt_metrics.items():
            v = float(m[s, r, c])
            assert (math.isnan(v) and math.isnan(cols[name][row])) or cols[name][row] == v, name
    sub = io.prompt_table(traj, prompts=[1])
    assert sub.num_rows == R * S and set(sub.column("prompt").to_pylist()) == {1}
    assert sub.column("J").to_pylist() == traj.prompt_metrics["J"][:, :, 1].T.reshape(-1).tolist()


def test_rows_table_fills_missing_keys_with_nan_and_table_rows_reads_them_back():
    import math

    from rlvrlab.io import rows_table, table_rows

    t = rows_table([{"step": 0, "a": 1.5}, {"step": 1, "b": 2.0}])
    assert t.column_names == ["step", "a", "b"]
    back = table_rows(t)
    assert back[0]["a"] == 1.5 and math.isnan(back[0]["b"]) and math.isnan(back[1]["a"]) and back[1] == {**back[1], "step": 1.0}
