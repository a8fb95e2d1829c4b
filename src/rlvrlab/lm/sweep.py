"""A grid of GRPO runs as data: settings → TrainConfigs, one stable run directory each, and what
each run directory says about its run.

    grid = {"model": DIR, "steps": 60, "task": ["add", "arith"], "lr": [1e-4, 3e-4, 1e-3], "seed": [0, 1]}

Keys are TrainConfig's settings. A list is an axis of the grid, a single value a setting every run
shares; each combination of the axes is one run, an ordinary ``rlvrlab lm train`` run directory
(config.json, metrics.parquet, checkpoints/, model/) named by its values on the axes in
TrainConfig's field order, e.g. ``task=add,lr=1e-3,seed=0`` (so that reordering a grid file
renames nothing). ``rlvrlab lm sweep``'s grid file is the same mapping in TOML.

A run's state is read from its directory alone:

- finished: metrics.parquet reaches config.steps and model/ is saved (also a run trained by
  ``rlvrlab lm train`` with the same settings);
- diverged: the trainer raised DivergedError (recorded in sweep.json). Final: resumed from its
  checkpoint the run would diverge again at the same step;
- failed: any other error (recorded in sweep.json); tried again by the next sweep;
- interrupted: metrics or a checkpoint, but no end; resumed by the next sweep;
- pending: nothing yet.

``train_run`` trains one run, resuming from its checkpoint, and records how it ended in
sweep.json ({status, message, seconds, attempts, threads}); ``runs_table`` gathers every run's
settings, state and headline numbers. rlvrlab.integrations.sweep.lm_sweep runs a whole grid on a
backend.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import time
import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from rlvrlab import _checks
from rlvrlab.io import atomic_write_json, read_json, read_table
from rlvrlab.lm.config import DEFAULT_SETTINGS, TrainConfig, nondefault_settings
from rlvrlab.lm.monitor import gap_warnings

__all__ = ["STATUSES", "check_run_dir", "expand_grid", "load_grid", "parse_assignments", "run_name", "run_state",
           "runs_table", "train_run"]

STATUSES = ("finished", "diverged", "failed", "interrupted", "pending")
SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_HINTS = typing.get_type_hints(TrainConfig)
_ALLOWED_KEYS = f"the settings of TrainConfig ({', '.join(SETTINGS)}; `rlvrlab lm train --help-settings` describes them)"


# --- the grid ------------------------------------------------------------------------------------


def load_grid(path: str | Path) -> dict[str, Any]:
    """The grid in a TOML file: ``key = value`` (every run) or ``key = [v1, v2, ...]`` (an axis)."""
    p = Path(path)
    if not p.is_file():
        _checks.fail("grid", str(path), "a TOML file of settings (key = value, or key = [values] for an axis)")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        _checks.fail("grid", str(path), f"a TOML file of settings ({' '.join(str(err).split())})")
    raise AssertionError  # unreachable: fail raises


def _value(text: str) -> Any:
    """A TOML value (1e-3, 60, true, "x"), or a bare word as a string (add, grpo, /path/to/model)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(settings: Sequence[str] = (), axes: Sequence[str] = ()) -> dict[str, Any]:
    """The command line's part of a grid: ``key=value`` (every run) and ``key=v1,v2,...`` (an axis),
    each value a TOML value or a bare word."""
    grid: dict[str, Any] = {}
    for option, items, axis in (("--set", settings, False), ("--grid", axes, True)):
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                _checks.fail(option, item, "key=v1,v2,..." if axis else "key=value")
            if key in grid:
                _checks.fail(option, item, f"each setting once (--set and --grid both give '{key}')")
            grid[key] = [_value(t.strip()) for t in text.split(",") if t.strip()] if axis else _value(text.strip())
    return grid


def _coerce(key: str, value: Any) -> Any:
    """``value`` as TrainConfig's field ``key`` takes it (an int where a float is wanted becomes a
    float); anything else is refused naming the type allowed."""
    tp = _HINTS[key]
    if typing.get_origin(tp) is Literal:
        options = typing.get_args(tp)
        if value not in options:
            _checks.fail(key, value, ", ".join(options))
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool and not isinstance(value, bool):
        _checks.fail(key, value, "true or false")
    if tp is int and not (number and isinstance(value, int)):
        _checks.fail(key, value, "an integer")
    if tp in (float, float | None):
        if not number and not (value is None and tp != float):
            _checks.fail(key, value, "a number")
        return None if value is None else float(value)
    if tp is str and not isinstance(value, str):
        _checks.fail(key, value, "a string")
    return value


def _label(value: Any) -> str:
    """A value as it appears in a run directory's name: numbers in their shortest form (1e-3, 0.5,
    60), booleans as true / false, a path by its last part; only [A-Za-z0-9._+-]."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        plain = repr(value)
        mantissa, _, exponent = f"{value:e}".partition("e")
        scientific = f"{float(mantissa)!r}".removesuffix(".0") + "e" + str(int(exponent))
        text = scientific if len(scientific) < len(plain) and float(scientific) == value else plain
    else:
        text = Path(str(value)).name or str(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def run_name(values: Mapping[str, Any]) -> str:
    """A run's directory name: its values on the grid's axes, ``key=value`` joined by commas, in
    TrainConfig's field order ("run" for a grid without axes)."""
    return ",".join(f"{k}={_label(values[k])}" for k in SETTINGS if k in values) or "run"


def expand_grid(grid: Mapping[str, Any]) -> list[tuple[str, TrainConfig]]:
    """Every run of ``grid`` as (directory name, TrainConfig), axes in TrainConfig's field order
    (the last varies fastest). Everything is checked here, before any run: unknown keys, values of
    the wrong type, an empty grid or axis, repeated values, two runs with one directory name, and
    each TrainConfig's own checks."""
    if not grid:
        _checks.fail("grid", dict(grid), "settings of TrainConfig, at least model = DIR, and lists of values to sweep "
                     "(e.g. lr = [1e-4, 1e-3])")
    for key in grid:
        if key not in SETTINGS:
            _checks.fail("grid", key, _ALLOWED_KEYS)
    shared = {k: _coerce(k, v) for k, v in grid.items() if not isinstance(v, (list, tuple))}
    axes: dict[str, list[Any]] = {}
    for key in (k for k in SETTINGS if isinstance(grid.get(k), (list, tuple))):
        values = [_coerce(key, v) for v in grid[key]]
        if not values:
            _checks.fail(key, [], "a non-empty list of values (one run per value)")
        if len(set(map(repr, values))) < len(values):
            _checks.fail(key, list(grid[key]), "distinct values (each value of an axis is a run)")
        axes[key] = values
    runs: list[tuple[str, TrainConfig]] = []
    names: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        name = run_name(values)
        if name in names:
            _checks.fail("grid", f"{names[name]} and {values}",
                         f"values whose directory names differ (both are named {name}; give the files distinct names)")
        names[name] = values
        runs.append((name, TrainConfig(**shared, **values)))
    return runs


# --- one run's directory -------------------------------------------------------------------------


def _settings(config: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # as config.json holds them


def check_run_dir(run_dir: str | Path, config: TrainConfig) -> None:
    """Refuse a run directory that holds a run of other settings (a sweep never overwrites one)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return
    old = read_json(path).get("settings", {})
    there, now = nondefault_settings(old), config.identity()  # a setting added since the run was made: at its default
    if there != now:
        changed = ", ".join(f"{k}={there.get(k, DEFAULT_SETTINGS.get(k))!r} there, {now.get(k, DEFAULT_SETTINGS.get(k))!r} now"
                            for k in sorted(set(there) | set(now)) if there.get(k) != now.get(k))
        _checks.fail("--out", str(run_dir), f"a directory whose runs have this grid's settings (this run has other settings: "
                     f"{changed}); another --out, or remove that run directory")


def _rows(run_dir: Path) -> list[dict[str, float]]:
    """metrics.parquet as the trainer's rows (a value missing from a row is NaN in the file)."""
    path = run_dir / "metrics.parquet"
    if not path.exists():
        return []
    table = read_table(path).to_pylist()
    return [{k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and math.isnan(v))} for row in table]


def run_state(run_dir: str | Path, config: TrainConfig) -> dict[str, Any]:
    """What ``run_dir`` says about its run: status (one of STATUSES), the last step recorded, the
    held-out accuracy at the first and last evaluation, M at the end, the median step / critical
    step, the steps past it, the monitor's warnings (kinds), and from sweep.json the wall seconds
    of the sweep's attempts that ended, their number and the error of a failed or diverged run."""
    from rlvrlab.lm.trainer import summary_of  # the trainer's own headline numbers

    run_dir = Path(run_dir)
    record = read_json(run_dir / "sweep.json") if (run_dir / "sweep.json").exists() else {}
    rows = _rows(run_dir)
    last = int(rows[-1]["step"]) if rows else 0
    if last == config.steps and (run_dir / "model" / "tokenizer_config.json").exists():  # the trainer saves it last
        status = "finished"
    elif record.get("status") in ("diverged", "failed"):
        status = record["status"]
    elif rows or (run_dir / "checkpoints" / "latest.pt").exists():
        status = "interrupted"
    else:
        status = "pending"
    s = summary_of(rows) if rows else {}
    return {"status": status, "step": last, "accuracy_start": s.get("accuracy_start", math.nan),
            "accuracy_end": s.get("accuracy_end", math.nan), "M_end": s.get("M_end", math.nan),
            "median_crit_ratio": s.get("median_crit_ratio", math.nan), "steps_past_crit": s.get("steps_past_crit", 0),
            "warnings": ",".join(gap_warnings(rows)), "seconds": float(record.get("seconds", math.nan)),
            "attempts": int(record.get("attempts", 0)), "message": record.get("message", "") if status != "finished" else ""}


def train_run(config: TrainConfig, run_dir: str | Path, *, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train one run into ``run_dir`` (resuming from its checkpoint) and record how it ended in
    run_dir/sweep.json: status finished, diverged (DivergedError: the message says at which step
    and rate) or failed (any other Exception, named with its message); the wall seconds of this
    attempt added to those before; the torch threads it ran on. Returns that record; a run that
    ends in an error does not raise, so that one run never stops the others. KeyboardInterrupt and
    other BaseExceptions pass through, recording nothing (the run is interrupted, and resumes)."""
    import torch

    from rlvrlab.lm.trainer import DivergedError, GRPOTrainer

    run_dir = Path(run_dir)
    path = run_dir / "sweep.json"
    before = read_json(path) if path.exists() else {}
    start = time.perf_counter()
    status, message = "finished", ""
    try:
        GRPOTrainer(config, run_dir, on_step=on_step, on_warning=lambda message: None).train(resume=True)  # warnings: from the metrics
    except DivergedError as err:
        status, message = "diverged", str(err)
    except Exception as err:  # recorded, and tried again by the next sweep
        status, message = "failed", f"{type(err).__name__}: {err}"
    record = {"status": status, "message": message, "seconds": before.get("seconds", 0.0) + time.perf_counter() - start,
              "attempts": before.get("attempts", 0) + 1, "threads": torch.get_num_threads()}
    atomic_write_json(path, record)
    return record


def runs_table(runs: Sequence[tuple[str, TrainConfig]], out: str | Path,
               overrides: Mapping[str, Mapping[str, Any]] | None = None) -> pa.Table:
    """One row per run: ``run`` (its directory under ``out``), every setting, then run_state's
    columns. ``overrides`` replaces state columns of some runs (what the sweep saw of a run whose
    worker died before it could record anything)."""
    overrides = overrides or {}
    rows = [{"run": name, **dataclasses.asdict(config), **run_state(Path(out) / name, config), **overrides.get(name, {})}
            for name, config in runs]
    return pa.Table.from_pylist(rows)
