"""Schedule probe scored on a seed no grid used (issue 14, part 3): the rule against the tuned fixed rate, paired.

    OMP_NUM_THREADS=1 python results/lr-oracle/seed3.py RUNS LOWER ANY OUT [--gap-adaptive]

RUNS: lr-oracle's run directories (grid runs, each with config.json); LOWER, ANY: the output folders of

    rlvrlab run lr-oracle --out LOWER --set probe_rescan=lower --set adaptive_seeds=3 (--set runs_from=...)
    rlvrlab run lr-oracle --out ANY --set adaptive_seeds=3

(each reusing the grid's runs, probes and recommended runs: their `runs`, `probes`, `recommended` linked to
the full run's), whose `adaptive.parquet` hold schedule probe from 3e-5 and from 3e-3 on seed 3 with
re-scans that may only lower the aim, and with re-scans that follow it (the rule of the full run).

This script trains, for every cell, one run at the cell's best fixed rate (chosen on the grid's seeds,
`cells.parquet`) on seed 3 (`OUT/best3`, resumable: lr-oracle's `_recommended_cell` through the sweep
runner), and scores both rules against it on the same seed: within max(0.02, one binomial SE of that
run's final accuracy), no collapse (an evaluation at or below half the start), and 90% of the best run's
final accuracy in at most 1.5x its steps. It prints the table and writes `seed3.parquet` and
`seed3.json` beside this script. With --gap-adaptive it also trains the gap-adaptive rule from both
starts on seed 3, plain (`gap`) and with its ratchet (`ratchet`: `adaptive_ratchet`, the lowest
running critical rate so far), and scores them the same way.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlvrlab.experiments.lr_oracle import _RUN_KEYS, _recommended_cell
from rlvrlab.integrations.sweep import run_sweep

HERE = Path(__file__).parent
SEED, TOLERANCE = 3, 0.02


def _settings(runs: Path) -> dict[tuple[str, str, float], dict]:
    """(task, preset, lr) -> the settings of the seed-0 grid run there."""
    out = {}
    for cfg in runs.glob("*/config.json"):
        s = json.loads(cfg.read_text())["settings"]
        if s["seed"] == 0:
            out[(s["task"], s["preset"], float(s["lr"]))] = s
    return out


def _final(rows: list[dict]) -> tuple[float, dict[int, float]]:
    ev = {int(r["step"]): float(r["accuracy"]) for r in rows}
    return float(np.mean([ev[s] for s in sorted(ev)[-2:]])), ev


STARTS = (3e-5, 3e-3)  # lr-oracle's adaptive_starts: the grid's lowest and highest rate
GAP_RULES = {"gap": {"schedule": "gap-adaptive"}, "ratchet": {"schedule": "gap-adaptive", "adaptive_ratchet": True}}


def gap_adaptive(cells: list[dict], todo: list[dict], out: Path) -> dict[str, list[dict]]:
    """The gap-adaptive rule, plain and with its ratchet (``adaptive_ratchet``), from both starts on seed 3:
    rows shaped like lr-oracle's adaptive.parquet (task, preset, start_lr, accuracy_final, collapsed, steps_to_90pct)."""
    rows: dict[str, list[dict]] = {}
    for name, rule in GAP_RULES.items():
        runs = [params | {"lr": lr} | rule for params in todo for lr in STARTS]
        got = run_sweep(_recommended_cell, runs, out / name, workers=2).to_pylist()
        rows[name] = []
        for c in cells:
            for lr in STARTS:
                mine = [r for r in got if r["task"] == c["task"] and r["preset"] == c["preset"] and r["lr"] == lr]
                final, curve = _final(mine)
                start = curve[min(curve)]
                rows[name].append({"task": c["task"], "preset": c["preset"], "start_lr": lr, "accuracy_final": final,
                                   "collapsed": min(curve.values()) <= start / 2, "curve": curve})
    return rows


def main(runs: Path, lower: Path, any_: Path, out: Path) -> None:
    cells = pq.read_table(HERE / "cells.parquet").to_pylist()
    settings = _settings(runs)
    todo = [{k: settings[(c["task"], c["preset"], c["best_lr"])][k] for k in _RUN_KEYS} | {"lr": c["best_lr"], "seed": SEED}
            for c in cells]
    best = run_sweep(_recommended_cell, todo, out / "best3", workers=2).to_pylist()
    gap_rows = gap_adaptive(cells, todo, out) if "--gap-adaptive" in FLAGS else {}
    rows = []
    for c, params in zip(cells, todo):
        mine = [r for r in best if r["task"] == c["task"] and r["preset"] == c["preset"]]
        ref, curve = _final(mine)
        n_eval = max(1, round(0.2 * params["prompts"])) * params["eval_samples"] * 2  # the final: two evaluations
        tol = max(TOLERANCE, math.sqrt(max(ref * (1 - ref), 1 / n_eval) / n_eval))
        goal = 0.9 * ref
        ref_steps = min([s for s, a in sorted(curve.items()) if a >= goal], default=math.inf)
        row = {"grid": c["grid"], "task": c["task"], "preset": c["preset"], "best_lr": c["best_lr"], "best3": ref, "tolerance": tol,
               "best3_steps_to_90pct": ref_steps}
        for name, d in (("lower", lower), ("any", any_)):
            t = pq.read_table(d / "adaptive.parquet").to_pylist()
            for a in t:
                if a["task"] == c["task"] and a["preset"] == c["preset"]:
                    key = f"{name}_{a['start_lr']:g}"
                    row[key] = a["accuracy_final"]
                    row[key + "_ok"] = bool(a["accuracy_final"] >= ref - tol)
                    row[key + "_collapsed"] = bool(a["collapsed"])
                    row[key + "_fast"] = bool(a["steps_to_90pct"] <= 1.5 * ref_steps) if math.isfinite(ref_steps) else bool(
                        a["steps_to_90pct"] < math.inf)
        for name, t in gap_rows.items():
            for a in t:
                if a["task"] == c["task"] and a["preset"] == c["preset"]:
                    key = f"{name}_{a['start_lr']:g}"
                    reach = min([s for s, acc in sorted(a["curve"].items()) if acc >= goal], default=math.inf)
                    row[key] = a["accuracy_final"]
                    row[key + "_ok"] = bool(a["accuracy_final"] >= ref - tol)
                    row[key + "_collapsed"] = bool(a["collapsed"])
                    row[key + "_fast"] = bool(reach <= 1.5 * ref_steps) if math.isfinite(ref_steps) else bool(reach < math.inf)
        rows.append(row)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, HERE / "seed3.parquet")
    summary = {}
    for name in ("lower", "any", *gap_rows):
        keys = [k for k in rows[0] if k.startswith(name + "_") and k.count("_") == 1]
        ok = sum(r[k + "_ok"] for r in rows for k in keys)
        coll = sum(r[k + "_collapsed"] for r in rows for k in keys)
        fast = sum(r[k + "_fast"] for r in rows for k in keys)
        allgood = sum(r[k + "_ok"] and not r[k + "_collapsed"] and r[k + "_fast"] for r in rows for k in keys)
        n = len(rows) * len(keys)
        summary[name] = {"within": f"{ok}/{n}", "collapsed": coll, "fast": f"{fast}/{n}", "all_three": f"{allgood}/{n}",
                         "mean_gap_to_best3": float(np.mean([r[k] - r["best3"] for r in rows for k in keys]))}
    (HERE / "seed3.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for r in rows:
        print(f"{r['task'][:40]:40s} {r['preset']:8s} best {r['best_lr']:.2g}: {r['best3']:.3f} ±{r['tolerance']:.3f} | "
              + " ".join(f"{k} {r[k]:.3f}{'' if r[k + '_ok'] else '*'}" for k in r if k.count("_") == 1 and k.split("_")[0] in
                         ("lower", "any", *gap_rows)))


FLAGS = [a for a in sys.argv[1:] if a.startswith("--")]

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 4:
        sys.exit(__doc__)
    main(*(Path(a) for a in args))
