"""Run directories and atomic writes (DESIGN.md, "Contracts users rely on").

Every file is written to a temporary name in the same directory and renamed into place, so an
interrupted run never leaves a half-written file: a reader sees the old file or the new one.
``summary.json`` is written last and marks a run as complete.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from rlvrlab.simulate import Trajectory

__all__ = [
    "columns",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "prompt_table",
    "read_json",
    "read_table",
    "rows_table",
    "table_rows",
    "trajectory_table",
    "write_table",
]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """JSON with NaN written as null and infinities as the strings "inf"/"-inf" (valid JSON)."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_table(path: str | Path, table: pa.Table) -> None:
    """Parquet, atomically."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_table(path: str | Path) -> pa.Table:
    return pq.read_table(path)


def rows_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) as a table: a column per key any row has, NaN where a row lacks it."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    return pa.table({k: [row.get(k, math.nan) for row in rows] for k in names})


def table_rows(table: pa.Table) -> list[dict[str, float]]:
    """A table of numbers as rows (dicts of floats), nulls as NaN: the inverse of ``rows_table``."""
    return [{k: (math.nan if v is None else float(v)) for k, v in row.items()} for row in table.to_pylist()]


def columns(table: pa.Table, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns as numpy arrays, nulls as NaN."""
    out = {}
    for name in names:
        col = table.column(name)
        out[name] = col.to_numpy(zero_copy_only=False) if col.null_count == 0 else np.asarray(
            col.to_pylist(), dtype=float)
    return out


def _column(values: torch.Tensor | np.ndarray) -> pa.Array:
    """NaN (a quantity that does not exist at that row) becomes null."""
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.dtype.kind == "f":
        return pa.array(arr.astype(np.float64), mask=np.isnan(arr))
    return pa.array(arr)


def trajectory_table(traj: Trajectory, run_columns: Mapping[str, Sequence[Any] | torch.Tensor] | None = None) -> pa.Table:
    """Long format, one row per run × recorded step: run, step, the run's settings, the metrics."""
    S, R = len(traj.step), traj.runs
    cols: dict[str, pa.Array] = {
        "run": pa.array(np.repeat(np.arange(R), S)),
        "step": pa.array(np.tile(traj.step.numpy(), R)),
    }
    for name, values in (run_columns or {}).items():
        vals = values.tolist() if isinstance(values, torch.Tensor) else list(values)
        cols[name] = pa.array(np.repeat(np.asarray(vals), S))
    for name, m in traj.metrics.items():  # (S, R) -> run-major rows
        cols[name] = _column(m.T.reshape(-1))
    return pa.table(cols)


def prompt_table(traj: Trajectory, prompts: Sequence[int] | None = None) -> pa.Table:
    """Long format per prompt: run, step, prompt and the per-prompt metrics (S, R, C)."""
    if not traj.prompt_metrics:
        return pa.table({})
    first = next(iter(traj.prompt_metrics.values()))
    S, R, C = first.shape
    keep = torch.arange(C) if prompts is None else torch.as_tensor(list(prompts))
    n = len(keep)
    cols: dict[str, pa.Array] = {
        "run": pa.array(np.repeat(np.arange(R), S * n)),
        "step": pa.array(np.tile(np.repeat(traj.step.numpy(), n), R)),
        "prompt": pa.array(np.tile(keep.numpy(), R * S)),
    }
    for name, m in traj.prompt_metrics.items():  # (S, R, C) -> (R, S, C) rows
        cols[name] = _column(m[:, :, keep].permute(1, 0, 2).reshape(-1))
    return pa.table(cols)
