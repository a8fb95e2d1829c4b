"""Sweeps that scale out and resume: a grid of cells, each computed once.

    run_sweep(fn, cells, out, backend="local" | "ray", workers=N)
    lm_sweep(grid, out, backend="local" | "ray", workers=N, threads=T)

``fn(params) -> pyarrow.Table`` (or a dict of named tables) computes one cell (a dict of JSON-able
settings, seed included); it must be a module-level function so that worker processes can import
it. Each finished cell is
written atomically to ``out/cells/<key>.parquet`` (key: a hash of its settings) with the settings
in the file's metadata. Cells whose file already exists are read back, not recomputed: after an
interruption a sweep continues where it stopped, and nothing is lost or computed twice. The
result is every cell's table with its settings as leading columns (a dict of such tables when
the cells return named tables).

Backends: "local" runs the cells in a pool of ``workers`` spawned processes (one torch thread
each, so that workers do not fight over cores; each dies with this process, even when it is
killed with SIGKILL); "ray" submits them as Ray tasks (Ray is an
optional extra, ``pip install rlvrlab[ray]``; a local instance is started when none is
connected). Results are always written by this process, as they arrive.

``lm_sweep`` runs a grid of GRPO runs (rlvrlab.lm.sweep: a list is an axis, a value shared) on the
same backends: each run is an ordinary ``rlvrlab lm train`` run directory ``out/<name>``, trained
by one worker with ``threads`` torch threads. Finished and diverged runs are skipped, interrupted
and failed ones resumed from their checkpoints, and ``out/runs.parquet`` (one row per run:
settings, status, held-out accuracy, wall seconds, ...) is rewritten atomically as each run ends.
The default is one torch thread per worker and one worker per core: on 2 cores, 2 one-thread
workers finished 427 runs/hour of the tiny base model (60 steps of 64 completions) against 250
for one two-thread worker, 1.7x (benchmarks/lm_sweep.py): sampling a small model is a chain of
small matrix products that a second thread barely shortens (14.5 s a run on 2 threads, 15.5 s on
one beside another run).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rlvrlab import _checks
from rlvrlab.io import write_table

__all__ = ["BACKENDS", "DEFAULT_THREADS", "cell_key", "lm_sweep", "run_sweep"]

BACKENDS = ("local", "ray")
DEFAULT_THREADS = 1  # torch threads per language-model run: 2 x 1 beat 1 x 2 by 1.7x (benchmarks/lm_sweep.py)
_META = b"rlvrlab.cell"


def cell_key(params: Mapping[str, Any]) -> str:
    """A stable name for a cell: the hash of its settings."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


_PART = "__table__"


def _pack(result: pa.Table | Mapping[str, pa.Table]) -> pa.Table:
    """Named tables as one table with a column naming each row's table."""
    if isinstance(result, pa.Table):
        return result
    parts = [t.append_column(_PART, pa.array([name] * t.num_rows, pa.string())) for name, t in result.items()]
    return pa.concat_tables(parts, promote_options="permissive")


def _unpack(table: pa.Table) -> dict[str, pa.Table]:
    names = table.column(_PART).to_pylist()
    out = {}
    for name in dict.fromkeys(names):
        part = table.filter(pa.array([n == name for n in names])).drop_columns([_PART])
        keep = [c for c in part.column_names if part.column(c).null_count < part.num_rows or part.num_rows == 0]
        out[name] = part.select(keep)
    return out


def _write_cell(path: Path, params: Mapping[str, Any], table: pa.Table) -> None:
    meta = dict(table.schema.metadata or {})
    meta[_META] = json.dumps(params, sort_keys=True, default=str).encode()
    write_table(path, table.replace_schema_metadata(meta))


def _with_params(table: pa.Table, params: Mapping[str, Any]) -> pa.Table:
    columns = {k: pa.array([v] * table.num_rows) for k, v in params.items() if not isinstance(v, (list, dict, tuple))}
    columns.update({name: table.column(name) for name in table.column_names if name not in columns})
    return pa.table(columns)


def _worker_init(threads: int = 1, parent: int | None = None) -> None:
    """``threads`` torch threads; in a local pool, also die with the parent (``parent``: its pid)."""
    import torch

    torch.set_num_threads(threads)
    if parent is not None:
        _die_with(parent)


def _die_with(parent: int) -> None:
    """A worker killed with its parent: a sweep killed with SIGKILL runs no cleanup, and its idle
    workers (and with them multiprocessing's resource tracker) would otherwise live on, reparented.
    Linux: the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere a
    daemon thread polls the parent's pid. A worker holds nothing to save: the parent writes results."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1: PR_SET_PDEATHSIG
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="rlvrlab-parent-watch").start()


def _call(fn: Callable[[dict], pa.Table], params: dict) -> pa.Table:
    result = fn(params)
    if not isinstance(result, (pa.Table, Mapping)):
        raise TypeError(f"sweep cell function returned {type(result).__name__}; it must return a pyarrow.Table or a dict of them")
    return _pack(result)


def run_sweep(
    fn: Callable[[dict], pa.Table | Mapping[str, pa.Table]],
    cells: Iterable[Mapping[str, Any]],
    out: str | Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    on_cell: Callable[[int], None] | None = None,
) -> pa.Table | dict[str, pa.Table]:
    """Compute every cell not yet on disk, then return all cells' tables with their settings."""
    _checks.choose("backend", backend, BACKENDS)
    cells = [dict(c) for c in cells]
    keys = [cell_key(c) for c in cells]
    if len(set(keys)) != len(keys):
        _checks.fail("cells", "duplicate settings", "distinct cells (add a seed or another distinguishing setting)")
    if workers is None:
        workers = os.cpu_count() or 1
    if not (isinstance(workers, int) and workers >= 1):
        _checks.fail("workers", workers, "an integer >= 1")
    folder = Path(out) / "cells"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(k, c) for k, c in zip(keys, cells) if not (folder / f"{k}.parquet").exists()]
    if on_cell is not None and len(todo) < len(cells):
        on_cell(len(cells) - len(todo))

    failures: list[tuple[dict, BaseException]] = []

    def done(key: str, params: dict, get: Callable[[], pa.Table]) -> None:
        try:
            table = get()
        except Exception as err:  # keep every other cell's result; report the failures at the end
            failures.append((params, err))
            return
        _write_cell(folder / f"{key}.parquet", params, table)
        if on_cell is not None:
            on_cell(1)

    _execute(_call, [((key, params), (fn, params)) for key, params in todo], backend=backend, workers=workers, threads=1,
             done=lambda tag, get: done(*tag, get))
    if failures:
        params, err = failures[0]
        raise RuntimeError(f"{len(failures)} of {len(todo)} sweep cells failed (the others are saved; run again to retry "
                           f"only these); first: {params}: {type(err).__name__}: {err}") from err

    stored = [pq.read_table(folder / f"{k}.parquet") for k in keys]
    if stored and _PART in stored[0].column_names:
        named: dict[str, list[pa.Table]] = {}
        for table, params in zip(stored, cells):
            for name, part in _unpack(table).items():
                named.setdefault(name, []).append(_with_params(part, params))
        return {name: pa.concat_tables(parts, promote_options="permissive") for name, parts in named.items()}
    tables = [_with_params(t, c) for t, c in zip(stored, cells)]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def _execute(fn: Callable[..., Any], jobs: list[tuple[Any, tuple]], *, backend: str, workers: int, threads: int,
             done: Callable[[Any, Callable[[], Any]], None]) -> None:
    """``fn(*args)`` for every (tag, args) of ``jobs`` on the backend, at most ``workers`` at a time
    with ``threads`` torch threads each; ``done(tag, get)`` in this process as each ends (``get``
    returns its result or raises its error)."""
    if not jobs:
        return
    if backend == "local":
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_worker_init,
                                 initargs=(threads, os.getpid())) as pool:
            pending = {pool.submit(fn, *args): tag for tag, args in jobs}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done(pending.pop(fut), fut.result)
    else:
        _run_ray(fn, jobs, workers, threads, done)


def _run_ray(fn: Callable[..., Any], jobs: list[tuple[Any, tuple]], workers: int, threads: int,
             done: Callable[[Any, Callable[[], Any]], None]) -> None:
    try:
        import ray
    except ImportError:
        _checks.fail("backend", "'ray'", "'local', or install the extra: pip install 'rlvrlab[ray]'")
    if not ray.is_initialized():  # a local instance; its workers import what this process can (like spawn)
        ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    remote = ray.remote(num_cpus=threads)(_ray_call)  # Ray schedules a job where `threads` CPUs are free
    pending = {remote.remote(threads, fn, *args): tag for tag, args in jobs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            done(pending.pop(ref), lambda ref=ref: ray.get(ref))


def _ray_call(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    _worker_init(threads)
    return fn(*args)


def lm_sweep(
    grid: Mapping[str, Any],
    out: str | Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    threads: int = DEFAULT_THREADS,
    on_run: Callable[[dict[str, Any], bool], None] | None = None,
) -> pa.Table:
    """Train every run of ``grid`` (see rlvrlab.lm.sweep) not yet finished or diverged into
    ``out/<run name>``, ``workers`` at a time (default: cores // threads) with ``threads`` torch
    threads each, and return the runs table, also written to ``out/runs.parquet``.

    Everything is checked before any run starts and before anything is written: the grid (keys,
    values, each TrainConfig), the backend, workers and threads, ``out``, run directories holding
    runs of other settings, and, once per model, task and split, what the trainer checks when it
    starts (the model loads, the task has enough training prompts for batch_size, the device).
    ``on_run(row, trained)`` is called with each run's row of the table: first for the runs
    skipped (``trained`` False), then for each run as it ends. A run that ends in an error is a
    row with status diverged or failed and its message, never an exception here."""
    from rlvrlab.lm.sweep import check_run_dir, expand_grid, run_state, runs_table, train_run

    runs = expand_grid(grid)
    _checks.choose("backend", backend, BACKENDS)
    _checks.integer("threads", threads)
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // threads)
    _checks.integer("workers", workers)
    _checks.writable_dir("out", out)
    out = Path(out)
    states = {}
    for name, config in runs:
        check_run_dir(out / name, config)
        states[name] = run_state(out / name, config)["status"]
    todo = [(name, config) for name, config in runs if states[name] not in ("finished", "diverged")]
    _preflight([config for _, config in todo], out)

    out.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, dict[str, Any]] = {}  # runs whose worker died before recording anything
    table = runs_table(runs, out)
    write_table(out / "runs.parquet", table)
    if on_run is not None:
        for row in table.to_pylist():
            if row["status"] in ("finished", "diverged"):
                on_run(row, False)

    def done(name: str, get: Callable[[], dict[str, Any]]) -> None:
        nonlocal table
        try:
            get()
        except Exception as err:  # the worker itself died (killed, out of memory): the run resumes next time
            overrides[name] = {"status": "failed", "message": f"the worker died: {type(err).__name__}: {err}"}
        table = runs_table(runs, out, overrides)
        write_table(out / "runs.parquet", table)
        if on_run is not None:
            on_run(table.slice([n for n, _ in runs].index(name), 1).to_pylist()[0], True)

    _execute(train_run, [(name, (config, str(out / name))) for name, config in todo], backend=backend, workers=workers,
             threads=threads, done=done)
    return table


def _preflight(configs: list[Any], out: Path) -> None:
    """What GRPOTrainer checks when it starts (the model loads, the task yields enough training
    prompts for batch_size, the device exists), once per distinct model, task and split, here and
    before any run, so that a mistake is one message and not a grid of failed runs. Builds a
    trainer and drops it: nothing is written (TensorBoard off)."""
    import dataclasses

    from rlvrlab.lm.trainer import GRPOTrainer

    seen = set()
    for config in configs:
        key = (config.model, config.task, config.prompts, config.holdout, config.seed, config.batch_size, config.group,
               config.device)
        if key not in seen:
            seen.add(key)
            GRPOTrainer(dataclasses.replace(config, tensorboard=False), out / ".preflight")
