"""Training at the probe's recommended rate, on four seeds no probe or rate was chosen on, scored per cell over them (issue 14, part 2).

    OMP_NUM_THREADS=1 python results/lr-oracle/recommended.py RUNS OUT

RUNS: lr-oracle's run directories (each cell's run settings); OUT: a working folder (the runs,
resumable run by run through the sweep runner).

Part 2's second goal: training at the recommended rate ends within 0.02 (or one SE) of the best
fixed rate's accuracy in every cell. The committed score (17 of 21 cells) trained seeds 0-2 / 0-1 at
the rates their own probes recommended, against the best fixed rate chosen on the same seeds. Here
each cell's probe on seeds 3-6 (`calibration.parquet`, made by calibration.py) recommends the rate
(half its reading) for a run on that seed, and the run is compared with the best fixed rate's run on
the same seed (`seed3.parquet`, `seed4.parquet` ... `seed6.parquet`, trained for part 3's rules),
pooled per cell as `pooled.py` scores the rules:

    within    mean over seeds 3-6 of the recommended run's final accuracy >= the best fixed rate's
              mean - max(0.02, SE) (SE: of the best fixed rate's mean over the seeds)
    collapsed a run collapsed (an evaluation at or below half the start)
    gap       mean paired difference (recommended - best, same seed) with a 95% t-interval

The best fixed rate's runs were trained before the grouped attention (rlvrlab.lm.logprobs), these
with it: the same computation up to float32 rounding, which over 60 steps is one more source of
the runs' noise, not a bias. Writes `recommended.parquet` and `summary_recommended.json` beside this
script and prints them.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from new_seed import _curve, _final  # this folder's scripts (a script's folder is on sys.path)
from pooled import compare, tally
from rlvrlab.experiments.lr_oracle import _recommended_cell, grid_settings
from rlvrlab.integrations.sweep import run_sweep

HERE = Path(__file__).parent
SEEDS = (3, 4, 5, 6)


def best_finals() -> dict[tuple[str, str, int], float]:
    """(task, preset, seed) -> the final accuracy of the best fixed rate's run on seeds 3-6."""
    out = {(r["task"], r["preset"], 3): r["best3"] for r in pq.read_table(HERE / "seed3.parquet").to_pylist()}
    for s in SEEDS[1:]:
        out.update({(r["task"], r["preset"], s): r["best"] for r in pq.read_table(HERE / f"seed{s}.parquet").to_pylist()})
    return out


def main(runs: Path, out: Path) -> None:
    probes = [p for p in pq.read_table(HERE / "calibration.parquet").to_pylist() if p["seed"] in SEEDS]
    settings = grid_settings(runs)
    todo = [p for p in probes if math.isfinite(p["recommended"]) and p["recommended"] > 0]
    params = [settings[(p["task"], p["preset"])] | {"seed": p["seed"], "lr": float(f"{p['recommended']:.3g}")} for p in todo]
    trained = run_sweep(_recommended_cell, params, out / "recommended", workers=2).to_pylist()
    best = best_finals()
    rows = []
    for key in dict.fromkeys((p["task"], p["preset"]) for p in probes):
        runs_of = {s: [r for r in trained if (r["task"], r["preset"], r["seed"]) == (*key, s)] for s in SEEDS}
        seeds = [s for s in SEEDS if runs_of[s] and (*key, s) in best]
        curves = {s: _curve(runs_of[s]) for s in seeds}
        a = np.array([_final(curves[s]) for s in seeds])
        b = np.array([best[(*key, s)] for s in seeds])
        grid = next(p["grid"] for p in probes if (p["task"], p["preset"]) == key)
        rows.append({"grid": grid, "task": key[0], "preset": key[1], "seeds": len(seeds),
                     "recommended_median": float(np.median([r["lr"] for s in seeds for r in runs_of[s][:1]])),
                     "recommended_mean": float(a.mean()), "best_mean": float(b.mean()), **compare(a, b),
                     "collapsed": any(min(curves[s].values()) <= curves[s][min(curves[s])] / 2 for s in seeds)})
    pq.write_table(pa.Table.from_pylist(rows), HERE / "recommended.parquet")
    summary = {"seeds": list(SEEDS), "runs": len(params), "probes without a recommendation": len(probes) - len(todo),
               **tally(rows), "floor": json.loads((HERE / "pooled.json").read_text())["floor"]}
    (HERE / "summary_recommended.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for r in rows:
        print(f"{r['task'][:40]:40s} {r['preset']:8s} at {r['recommended_median']:.2g}: {r['recommended_mean']:.3f} vs best "
              f"{r['best_mean']:.3f} ±{r['tolerance']:.3f}{'' if r['within'] else ' *'} gap {r['gap']:+.3f} "
              f"[{r['gap_low']:+.3f}, {r['gap_high']:+.3f}]{' COLLAPSED' if r['collapsed'] else ''}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    main(a.runs, a.out)
