"""Running a named experiment into its run directory (the contract of DESIGN.md).

    DIR/config.json     the full resolved config (written first)
    DIR/metrics.parquet long format, one row per run × step (and other tables, one file each)
    DIR/*.png           the figures
    DIR/summary.json    headline numbers and the checks with pass/fail (written last: its
                        presence marks the run complete)

Resuming: a directory whose summary.json exists and whose config.json equals the requested config
is complete and is not run again. A directory holding a different config is refused unless
``force`` is given (then the run starts over); a directory without summary.json (an interrupted
run) is run again from the start, its files replaced atomically one by one. A run refused with a
ValueError (a user mistake the experiment finds, e.g. a model it cannot use) leaves the directory
as it found it, so that the corrected command can run there.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from rlvrlab import __version__, _checks
from rlvrlab.experiments.base import Experiment, NoProgress, Progress, apply_settings
from rlvrlab.experiments.registry import get
from rlvrlab.io import atomic_write_bytes, atomic_write_json, read_json, write_table

__all__ = ["resolve_config", "run_experiment"]


def resolve_config(name: str, quick: bool = False, settings: list[str] | dict[str, Any] | None = None) -> Any:
    exp = get(name)
    config = exp.settings(quick)
    return apply_settings(config, settings or [])


def _config_record(exp: Experiment, config: Any, quick: bool) -> dict[str, Any]:
    return {"experiment": exp.name, "quick": quick, "settings": dataclasses.asdict(config)}


def run_experiment(
    name: str,
    out: str | Path,
    *,
    quick: bool = False,
    settings: list[str] | dict[str, Any] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run (or resume) experiment ``name`` into ``out``; returns the summary."""
    exp = get(name)
    config = resolve_config(name, quick, settings)
    out = Path(out)
    _checks.writable_dir("out", out)
    record = _config_record(exp, config, quick)
    cfg_path, sum_path = out / "config.json", out / "summary.json"
    if cfg_path.exists() and not force:
        previous = read_json(cfg_path)
        if previous.get("settings") != read_json_roundtrip(record["settings"]) or previous.get("experiment") != name:
            _checks.fail(f"--out {out}", "a directory holding a run of different settings",
                         "a new directory, or --force to start this one over")
        if sum_path.exists():
            return read_json(sum_path)
    undo = _Undo(out)
    try:
        if sum_path.exists():
            sum_path.unlink()
        if force and (out / "sweep").exists():  # start over: also the cells a sweep kept to resume from
            shutil.rmtree(out / "sweep")
            undo.entries.discard("sweep")  # what a refused run puts there is its own
        atomic_write_json(cfg_path, record)
        summary = _run(exp, config, quick, out, progress)
    except ValueError:  # a user mistake found by the run itself: leave OUT as it was, so the corrected command can use it
        undo()
        raise
    return summary


class _Undo:
    """What a run refused with a ValueError must take back: the directories it made, the top-level
    entries it added, and the config.json / summary.json it replaced or removed. (Sweep cells that
    --force removed stay removed: they only serve to resume, and a refused run has nothing to resume.)"""

    def __init__(self, out: Path):
        self.made = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)  # the first directory to make
        self.entries = {p.name for p in out.iterdir()} if out.is_dir() else set()
        self.kept = {f: (out / f).read_bytes() for f in ("config.json", "summary.json") if (out / f).is_file()}
        self.out = out

    def __call__(self) -> None:
        if self.made is not None:
            shutil.rmtree(self.made, ignore_errors=True)
            return
        for entry in self.out.iterdir():
            if entry.name not in self.entries:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        for f, data in self.kept.items():
            atomic_write_bytes(self.out / f, data)


def _run(exp: Experiment, config: Any, quick: bool, out: Path, progress: Progress | None) -> dict[str, Any]:
    name, sum_path = exp.name, out / "summary.json"
    torch.manual_seed(0)
    started = time.perf_counter()
    result = exp.run(config, progress or NoProgress(), out)
    seconds = time.perf_counter() - started
    for table_name, table in result.tables.items():
        write_table(out / f"{table_name}.parquet", table)
    figures = exp.plot(out)
    summary = {
        "experiment": name,
        "title": exp.title,
        "quick": quick,
        "seconds": round(seconds, 3),
        "headline": result.summary,
        "checks": [dataclasses.asdict(c) for c in result.checks],
        "checks_passed": all(c.passed for c in result.checks if c.kind == "theorem"),
        "figures": figures,
        "tables": [f"{t}.parquet" for t in result.tables],
        "environment": {"rlvrlab": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    atomic_write_json(sum_path, summary)
    return read_json(sum_path)


def read_json_roundtrip(obj: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists), to compare with a stored config."""
    import json

    from rlvrlab.io import _jsonable

    return json.loads(json.dumps(_jsonable(obj)))
