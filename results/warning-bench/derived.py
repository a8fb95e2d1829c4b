"""Numbers derived from this directory's tables (no training), quoted in README.md and the issue notes.

    python results/warning-bench/derived.py

1. the labels by rate and by task, the collapses' onsets, and how abrupt they are: per collapsed run, the first step whose training reward is below
   half of step 1's, counted by step;
2. per task, preset grpo (issue 14's oracle, part 1(a)): final held-out accuracy per rate (mean over
   seeds ± 1.96 SE), the seeds whose accuracy never fell below start − margin, and the median over
   runs of the geometric mean of gap/lr_crit and gap_fresh/lr_crit over steps 1-10.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from rlvrlab.io import columns, read_table

HERE = Path(__file__).parent
runs = read_table(HERE / "runs.parquet").to_pylist()
m = read_table(HERE / "metrics.parquet")
run = np.asarray(m.column("run").to_pylist())
col = columns(m, ("step", "reward", "eval/accuracy", "gap/lr_crit", "gap_fresh/lr_crit"))

print("labels by rate:", {lr: dict(collections.Counter(r["label"] for r in runs if r["lr"] == lr)) for lr in sorted({r["lr"] for r in runs})})
print("collapsed runs by onset step:", dict(collections.Counter(r["onset"] for r in runs if r["label"] == "collapsed")))
print("labels by task:", {t: dict(collections.Counter(r["label"] for r in runs if r["task"] == t)) for t in dict.fromkeys(r["task"] for r in runs)})
halved = collections.Counter()
for r in runs:
    if r["label"] == "collapsed":
        sel = run == r["run"]
        step, reward = col["step"][sel], col["reward"][sel]
        halved[next((int(s) for s, w in zip(step[1:], reward[1:]) if w < 0.5 * reward[1]), None)] += 1
print("collapsed runs by the first step with reward < half of step 1's:", dict(sorted(halved.items(), key=str)))

for task in dict.fromkeys(r["task"] for r in runs):
    print(task, "(grpo)")
    for lr in sorted({r["lr"] for r in runs}):
        sel_runs = [r for r in runs if r["task"] == task and r["preset"] == "grpo" and r["lr"] == lr]
        final = np.array([r["accuracy_final"] for r in sel_runs])
        held, crit = 0, {k: [] for k in ("gap/lr_crit", "gap_fresh/lr_crit")}
        for r in sel_runs:
            sel = run == r["run"]
            acc = col["eval/accuracy"][sel]
            acc = acc[np.isfinite(acc)]
            held += bool((acc[1:] >= acc[0] - r["margin"]).all())
            early = sel & (col["step"] >= 1) & (col["step"] <= 10)
            for k in crit:
                v = col[k][early]
                v = v[np.isfinite(v) & (v > 0)]
                crit[k].append(np.exp(np.median(np.log(v))) if len(v) else np.nan)
        print(f"  lr {lr:7.1e}: final {final.mean():.3f} ± {1.96 * final.std(ddof=1) / np.sqrt(len(final)):.3f}, "
              f"never below start {held}/{len(sel_runs)}, lr_crit over steps 1-10 "
              + " / ".join(f"{np.nanmedian(v):.2e}" for v in crit.values()))

# issue 14: how the one-step critical-rate estimate moves along a run (grpo, the rates that never collapse): the median
# over the grid's seeds of gap/lr_crit (in-sample) and gap_fresh/lr_crit, by window of steps
print("gap/lr_crit / gap_fresh/lr_crit, median by window of steps (grpo):")
for task in dict.fromkeys(r["task"] for r in runs):
    for lr in (3e-5, 1.2e-4, 2.2e-4, 4.2e-4):
        names = {r["run"] for r in runs if r["task"] == task and r["preset"] == "grpo" and np.isclose(r["lr"], lr)}
        sel = np.isin(run, list(names))
        parts = []
        for a, b in ((1, 5), (6, 15), (16, 30), (31, 60)):
            w = sel & (col["step"] >= a) & (col["step"] <= b)
            parts.append(f"steps {a}-{b}: {np.nanmedian(col['gap/lr_crit'][w]):.1e} / {np.nanmedian(col['gap_fresh/lr_crit'][w]):.1e}")
        print(f"  {task} lr {lr:.1e}: " + "; ".join(parts))
