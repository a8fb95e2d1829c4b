"""Issue 14 in TRL, on one task: the probe's rate and the gap-adaptive rule against TRL's own fixed-rate sweep.

    OMP_NUM_THREADS=1 python results/lr-oracle/trl_rule.py RUNS OUT

RUNS: lr-oracle's run directories (grid (a), each with config.json): the TRL runs take the settings of
its `add` / grpo runs (model, batch, group, prompts, length, steps, evaluations). OUT: a working
folder (resumable run by run through the sweep runner; each run is `train_matched`, i.e. TRL's
GRPOTrainer with the Gradient-Gap monitor, measured as rlvrlab's trainer measures its own).

Runs, on seeds 0 and 1:
- `fixed`: the oracle in TRL: grid (a)'s eight fixed rates, 3e-5 to 3e-3;
- `probe`: `probe_trl` before train(), then TRL's constant rate at the recommended rate (part 2's
  TRL half; schedule probe without re-scans, which TRL cannot run mid-training);
- `gap`, `ratchet`: the monitor's gap-adaptive rule (GapConfig gap_schedule "gap-adaptive", the
  lr-oracle defaults: fraction 0.5, smoothing 0.8, growth 1.1), plain and with its ratchet, from
  the grid's lowest and highest rate (part 3's rule in TRL).

Scored as seed3.py scores rlvrlab's rules, paired by seed: the best fixed rate and the measured
critical rate are lr-oracle's (`measure_cell`: the highest final accuracy, the mean of the last two
evaluations averaged over both seeds; the largest rate whose seed-mean never falls 2 SE below its start); a run is
within when its final accuracy is at least that rate's run on the same seed minus max(0.02, one
binomial SE); collapsed when an evaluation is at or below half the start; fast when it reaches 90%
of the best run's final accuracy in at most 1.5x that run's steps. Writes `trl_rule.parquet` (one
row per run: schedule, start, seed, final accuracy, the checks, the rates it trained at) and
`summary_trl_rule.json` beside this script, and prints both.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlvrlab.experiments.lr_oracle import grid_settings, measure_cell
from rlvrlab.experiments.warning_bench import _trl_cell
from rlvrlab.integrations.sweep import run_sweep

from new_seed import _final  # this folder's script (a script's folder is on sys.path)

HERE = Path(__file__).parent
TASK, SEEDS, TOLERANCE = "add", (0, 1), 0.02
RATES = (3e-5, 6e-5, 1.2e-4, 2.2e-4, 4.2e-4, 8e-4, 1.6e-3, 3e-3)  # lr-oracle's grid (a)
STARTS = (RATES[0], RATES[-1])
RULES = {"probe": {"schedule": "probe"}, "gap": {"schedule": "gap-adaptive"},
         "ratchet": {"schedule": "gap-adaptive", "adaptive_ratchet": True}}


def _base(runs: Path) -> dict:
    """The settings every run shares: those of the add / grpo runs of grid (a)."""
    base = grid_settings(runs).get((TASK, "grpo"))
    if base is None:
        sys.exit(f"no {TASK} / grpo run under {runs}")
    return base


def _curve(rows: list[dict]) -> dict[int, float]:
    return {int(r["step"]): float(r["eval/accuracy"]) for r in rows
            if r.get("eval/accuracy") is not None and math.isfinite(r["eval/accuracy"])}


def main(runs: Path, out: Path) -> None:
    base = _base(runs)
    fixed = [base | {"lr": lr, "seed": s} for lr in RATES for s in SEEDS]
    ruled = [base | {"lr": (RATES[-1] if name == "probe" else lr), "seed": s} | rule
             for name, rule in RULES.items() for lr in ((None,) if name == "probe" else STARTS) for s in SEEDS]
    table = run_sweep(_trl_cell, fixed + ruled, out / "cells", workers=2).to_pylist()

    def value(d: dict, k: str):
        return _DEFAULTS[k] if d.get(k) is None else d[k]

    def rows_of(params: dict) -> list[dict]:
        keys = ("lr", "seed", "schedule", "adaptive_ratchet")
        return [r for r in table if all(value(r, k) == value(params, k) for k in keys)]

    by_rate = {lr: {s: _curve(rows_of({"lr": lr, "seed": s})) for s in SEEDS} for lr in RATES}
    per_evaluation = max(1, round(0.2 * base["prompts"])) * base["eval_samples"]
    oracle = measure_cell(list(RATES), {lr: list(by_rate[lr].values()) for lr in RATES}, per_evaluation)  # lr-oracle's own
    best = oracle["best_lr"]
    n_eval = 2 * per_evaluation  # the final: two evaluations
    out_rows = []
    for lr in RATES:
        for s in SEEDS:
            c = by_rate[lr][s]
            out_rows.append({"schedule": "fixed", "start_lr": lr, "seed": s, "accuracy_start": c[0], "accuracy_final": _final(c),
                             "collapsed": min(c.values()) <= c[0] / 2, "best": lr == best})
    for name in RULES:
        for lr in ((RATES[-1],) if name == "probe" else STARTS):
            for s in SEEDS:
                params = {"lr": lr, "seed": s} | RULES[name]
                rows = rows_of(params)
                c, ref = _curve(rows), by_rate[best][s]
                ref_final = _final(ref)
                tol = max(TOLERANCE, math.sqrt(max(ref_final * (1 - ref_final), 1 / n_eval) / n_eval))
                ref_steps = min([t for t, a in sorted(ref.items()) if a >= 0.9 * ref_final], default=math.inf)
                reach = min([t for t, a in sorted(c.items()) if a >= 0.9 * ref_final], default=math.inf)
                rates = [float(r["learning_rate"]) for r in sorted(rows, key=lambda r: r["step"])
                         if r.get("learning_rate") is not None and math.isfinite(r["learning_rate"])]
                first = min(rows, key=lambda r: r["step"])
                out_rows.append({
                    "schedule": name, "start_lr": math.nan if name == "probe" else lr, "seed": s, "accuracy_start": c[0],
                    "accuracy_final": _final(c), "best_final_same_seed": ref_final, "tolerance": tol,
                    "within": _final(c) >= ref_final - tol, "collapsed": min(c.values()) <= c[0] / 2,
                    "fast": reach <= 1.5 * ref_steps if math.isfinite(ref_steps) else reach < math.inf,
                    "lr_first": rates[0] if rates else math.nan, "lr_median": float(np.median(rates)) if rates else math.nan,
                    "lr_last": rates[-1] if rates else math.nan,
                    "probe_critical_rate": float(first.get("probe/critical_rate") or math.nan),
                    "probe_recommended_rate": float(first.get("probe/recommended_rate") or math.nan)})
    columns = list(dict.fromkeys(k for r in out_rows for k in r))  # every row's keys (from_pylist reads the first row's)
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in out_rows]), HERE / "trl_rule.parquet")
    summary = {"task": TASK, "seeds": list(SEEDS), "rates": list(RATES), "best_fixed_rate": best,
               "final_by_rate": {f"{r['lr']:g}": round(r["accuracy_final"], 4) for r in oracle["per_rate"]},
               "critical_rate": oracle["critical_rate"], "critical_bracket": [oracle["critical_low"], oracle["critical_high"]],
               "rules": {}}
    for name in RULES:
        mine = [r for r in out_rows if r["schedule"] == name]
        summary["rules"][name] = {
            "within": f"{sum(r['within'] for r in mine)}/{len(mine)}", "collapsed": sum(r["collapsed"] for r in mine),
            "fast": f"{sum(r['fast'] for r in mine)}/{len(mine)}",
            "all_three": f"{sum(r['within'] and not r['collapsed'] and r['fast'] for r in mine)}/{len(mine)}",
            "mean_final": round(float(np.mean([r["accuracy_final"] for r in mine])), 4),
            "mean_gap_to_best": round(float(np.mean([r["accuracy_final"] - r["best_final_same_seed"] for r in mine])), 4)}
    (HERE / "summary_trl_rule.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for r in out_rows:
        if r["schedule"] != "fixed":
            print(f"{r['schedule']:8s} start {r['start_lr']:<8.2g} seed {r['seed']}: final {r['accuracy_final']:.3f} "
                  f"(best {r['best_final_same_seed']:.3f} ±{r['tolerance']:.3f}) within {r['within']} collapsed {r['collapsed']} "
                  f"fast {r['fast']}; lr {r['lr_first']:.2g} -> median {r['lr_median']:.2g} -> {r['lr_last']:.2g}")


_DEFAULTS = {"lr": None, "seed": None, "schedule": "constant", "adaptive_ratchet": False}

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
