"""Benchmark: the `phase --quick` grid on the local sweep backend with 1 and 2 workers.

    python benchmarks/phase.py [--repeats 2] [--json FILE]

Runs every cell of `rlvrlab run phase --quick` (the same cell function and settings) through
`run_sweep` into a fresh directory each time, alternating 1 and 2 workers, and reports the wall
time (pool start-up included), the speed-up and cells per second. Both must produce the same
critical rates (the expected updates are deterministic), or the script fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rlvrlab.experiments.phase import PhaseConfig, phase_cell, phase_cells
from rlvrlab.integrations.sweep import run_sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N cells (a smoke run of the script)")
    args = ap.parse_args()
    grid = phase_cells(PhaseConfig.quick())[: args.limit]
    times: dict[int, list[float]] = {1: [], 2: []}
    results = {}
    for _ in range(args.repeats):
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                out = run_sweep(phase_cell, grid, Path(tmp), backend="local", workers=workers)
                times[workers].append(time.perf_counter() - t0)
                results[workers] = out["critical"].column("lr").to_pylist()
    same = all((a == b) or (a != a and b != b) for a, b in zip(results[1], results[2]))
    assert same, "1 and 2 workers disagree"
    t1, t2 = statistics.median(times[1]), statistics.median(times[2])
    report = {
        "cells": len(grid), "repeats": args.repeats,
        "seconds_1_worker": round(t1, 2), "seconds_2_workers": round(t2, 2),
        "all_seconds": {str(k): [round(x, 2) for x in v] for k, v in times.items()},
        "speedup": round(t1 / t2, 2), "cells_per_second_1": round(len(grid) / t1, 2), "cells_per_second_2": round(len(grid) / t2, 2),
    }
    print(f"phase --quick grid: {len(grid)} cells (sweep cells of `rlvrlab run phase --quick`)")
    print(f"  1 worker : {t1:.1f} s  ({report['cells_per_second_1']} cells/s)   runs: {report['all_seconds']['1']}")
    print(f"  2 workers: {t2:.1f} s  ({report['cells_per_second_2']} cells/s)   runs: {report['all_seconds']['2']}")
    print(f"  speed-up with 2 workers: {report['speedup']}x; critical rates identical: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
