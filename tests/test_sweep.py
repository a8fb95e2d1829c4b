"""rlvrlab.integrations.sweep: every cell computed once, results kept across interruptions, both backends."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlvrlab.integrations import cell_key, run_sweep


def square(params: dict) -> pa.Table:
    """A cell: leaves a marker per computation (to count them) and fails where asked to."""
    marks = Path(params["marks"])
    if params["x"] in params.get("fail", []):
        raise ValueError(f"cell {params['x']} fails")
    (marks / f"{params['x']}-{uuid.uuid4().hex}").touch()
    return pa.table({"y": [params["x"] ** 2], "pid": [os.getpid()]})


def named(params: dict) -> dict[str, pa.Table]:
    return {"a": pa.table({"y": [params["x"]] * 2}), "b": pa.table({"z": [10.0 * params["x"]]})}


def _cells(tmp_path: Path, n: int, **extra) -> list[dict]:
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    return [dict(x=i, seed=0, marks=str(marks), **extra) for i in range(n)]


def _computations(tmp_path: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for f in (tmp_path / "marks").iterdir():
        x = int(f.name.split("-")[0])
        counts[x] = counts.get(x, 0) + 1
    return counts


def test_local_backend_computes_every_cell_once_and_reads_them_back(tmp_path):
    cells = _cells(tmp_path, 5)
    out = run_sweep(square, cells, tmp_path / "sweep", backend="local", workers=2)
    assert out.column("y").to_pylist() == [0, 1, 4, 9, 16]  # in cell order, with the settings as columns
    assert out.column("x").to_pylist() == [0, 1, 2, 3, 4]
    assert os.getpid() not in out.column("pid").to_pylist()  # computed in the pool's workers, not here
    again = run_sweep(square, cells, tmp_path / "sweep", backend="local", workers=2)
    assert again.equals(out)
    assert _computations(tmp_path) == {i: 1 for i in range(5)}  # read back, not recomputed
    stored = pq.read_table(tmp_path / "sweep" / "cells" / f"{cell_key(cells[3])}.parquet")
    assert stored.column("y").to_pylist() == [9]


def test_interrupted_sweep_keeps_finished_cells_and_recomputes_only_the_rest(tmp_path):
    cells = _cells(tmp_path, 6, fail=[2, 4])
    with pytest.raises(RuntimeError, match="2 of 6 sweep cells failed"):
        run_sweep(square, cells, tmp_path / "sweep", backend="local", workers=2)
    assert _computations(tmp_path) == {0: 1, 1: 1, 3: 1, 5: 1}
    # The same cells (same keys: the failure list is part of the settings, so compare by re-keying).
    fixed = [dict(c, fail=[]) for c in cells]
    for c_old, c_new in zip(cells, fixed):  # carry the finished results over to the new keys
        src = tmp_path / "sweep" / "cells" / f"{cell_key(c_old)}.parquet"
        if src.exists():
            src.rename(tmp_path / "sweep" / "cells" / f"{cell_key(c_new)}.parquet")
    out = run_sweep(square, fixed, tmp_path / "sweep", backend="local", workers=2)
    assert out.column("y").to_pylist() == [0, 1, 4, 9, 16, 25]
    assert _computations(tmp_path) == {i: 1 for i in range(6)}  # nothing lost, nothing twice
    assert not [p for p in (tmp_path / "sweep" / "cells").iterdir() if p.name.endswith(".tmp")]


def test_named_tables_come_back_separately(tmp_path):
    out = run_sweep(named, [{"x": 1}, {"x": 2}], tmp_path / "s", workers=1)
    assert set(out) == {"a", "b"}
    assert out["a"].column("y").to_pylist() == [1, 1, 2, 2] and out["a"].column("x").to_pylist() == [1, 1, 2, 2]
    assert out["b"].column("z").to_pylist() == [10.0, 20.0]
    assert "z" not in out["a"].column_names


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="backend: got 'slurm'; allowed: local, ray"):
        run_sweep(square, _cells(tmp_path, 1), tmp_path / "s", backend="slurm")
    with pytest.raises(ValueError, match="cells: got 'duplicate settings'"):
        run_sweep(square, _cells(tmp_path, 1) * 2, tmp_path / "s")
    with pytest.raises(ValueError, match="workers: got 0"):
        run_sweep(square, _cells(tmp_path, 1), tmp_path / "s", workers=0)


def test_ray_backend_against_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    cells = _cells(tmp_path, 4)
    try:
        out = run_sweep(square, cells, tmp_path / "sweep", backend="ray", workers=2)
        assert out.column("y").to_pylist() == [0, 1, 4, 9]
        again = run_sweep(square, cells, tmp_path / "sweep", backend="ray", workers=2)
        assert again.column("y").to_pylist() == [0, 1, 4, 9]
        assert _computations(tmp_path) == {i: 1 for i in range(4)}
    finally:
        ray.shutdown()


def sleepy(params: dict) -> pa.Table:
    """A cell that takes long enough to be killed in the middle of it."""
    import time

    time.sleep(params["seconds"])
    return pa.table({"x": [params["x"]]})


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc: psutil is not a dependency)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has died; only its new parent's wait is missing


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
def test_workers_die_with_a_killed_sweep(tmp_path):
    """SIGKILL runs no cleanup in the sweep's process: its pool workers and multiprocessing's
    resource tracker must still go, not live on reparented."""
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys; sys.path.insert(0, sys.argv[1]); from test_sweep import sleepy; "
              "from rlvrlab.integrations import run_sweep; "
              "run_sweep(sleepy, [dict(x=i, seconds=60) for i in range(4)], sys.argv[2], workers=2)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path / "s")])
    try:
        deadline = time.monotonic() + 60
        while len(kids := _children(proc.pid)) < 3 and time.monotonic() < deadline:  # two workers and the tracker
            time.sleep(0.2)
        assert len(kids) == 3, f"expected two workers and a resource tracker, found {kids}"
        time.sleep(1.0)  # the workers' initializer has run: they are inside a cell
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while (left := {k for k in kids if _alive(k)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    for k in left:  # do not leak them into the rest of the test session
        os.kill(k, signal.SIGKILL)
    assert left == set()


def threads_and_pid(x: int) -> tuple[int, int]:
    import torch

    return torch.get_num_threads(), os.getpid()


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_each_worker_runs_on_the_threads_asked_for(backend):
    """lm_sweep's --threads: every worker process sets torch's thread count before its first job."""
    from rlvrlab.integrations.sweep import _execute

    ray = pytest.importorskip("ray") if backend == "ray" else None
    seen = {}
    try:
        _execute(threads_and_pid, [(i, (i,)) for i in range(4)], backend=backend, workers=2, threads=2,
                 done=lambda tag, get: seen.__setitem__(tag, get()))
    finally:
        if ray is not None:
            ray.shutdown()
    assert sorted(seen) == [0, 1, 2, 3]
    assert {t for t, _ in seen.values()} == {2} and os.getpid() not in {p for _, p in seen.values()}
