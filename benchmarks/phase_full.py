"""Benchmark: the 108-cell phase diagram, the code of an older commit against this tree's, side by side.

    python benchmarks/phase_full.py [--old 9e635c0] [--repeats 1] [--workers 2] [--json FILE]

Runs `rlvrlab run phase --set presets=reinforce,dr-grpo,grpo --set seeds=3 --set predict_steps=0`
(3 presets x 6 lengths x 2 J0 x 3 instances: 108 cells in 54 groups) into a fresh directory, once
with the source of ``--old`` (checked out into a temporary git worktree, imported through
PYTHONPATH) and once with this tree's, alternating, each in its own process (pool start-up
included), and reports both wall times, their ratio, and whether every cell's critical rate
(lr, lr_crit_low, lr_crit_high) is identical. The default old commit is the last one before phase
was made faster (issue 12): its run time is what the speed-up is measured against. Check that the
machine is idle (uptime) before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("presets=reinforce,dr-grpo,grpo", "seeds=3", "predict_steps=0")
KEYS = ("preset", "T", "J0", "seed")
RATES = ("lr", "lr_crit_low", "lr_crit_high")


def _run(src: Path, out: Path, workers: int) -> float:
    """Wall seconds of one `rlvrlab run phase` with the package imported from ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    sets = [a for s in (*SETTINGS, f"workers={workers}") for a in ("--set", s)]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlvrlab.cli", "run", "phase", "--out", str(out), "--force", *sets], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _critical(out: Path) -> dict[tuple, tuple]:
    table = pq.read_table(out / "critical.parquet").to_pydict()
    return {tuple(table[k][i] for k in KEYS): tuple(table[r][i] for r in RATES) for i in range(len(table["lr"]))}


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", default="9e635c0", help="the commit whose code is the baseline")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    times: dict[str, list[float]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.old], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(args.repeats):
                for name, src in (("old", tree / "src"), ("new", ROOT / "src")):
                    times[name].append(_run(src, Path(tmp) / name, args.workers))
            old, new = _critical(Path(tmp) / "old"), _critical(Path(tmp) / "new")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    differ = {k: (old[k], new.get(k)) for k in old if k not in new or not all(map(_same, old[k], new[k]))}
    t_old, t_new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"phase, 108 cells ({' '.join(SETTINGS)}), {args.workers} workers, {args.repeats} run(s) each")
    print(f"  old ({args.old}): {t_old:.1f} s   runs: {[round(t, 1) for t in times['old']]}")
    print(f"  new (this tree): {t_new:.1f} s   runs: {[round(t, 1) for t in times['new']]}")
    print(f"  speed-up: {t_old / t_new:.2f}x; cells: {len(old)} old, {len(new)} new; "
          f"critical rates (lr, low, high) identical in every cell: {not differ and len(old) == len(new)}")
    for k, (a, b) in differ.items():
        print(f"    differs: {dict(zip(KEYS, k))}: old {a}, new {b}")
    if args.json:
        Path(args.json).write_text(json.dumps({"old": args.old, "seconds_old": t_old, "seconds_new": t_new, "all_seconds": times,
                                               "speedup": t_old / t_new, "cells": len(old), "identical": not differ,
                                               "differ": [list(k) for k in differ]}, indent=2))


if __name__ == "__main__":
    main()
