"""How well one seed's measured critical rate predicts another seed's: the floor of part 2's "within 2x".

    python results/lr-oracle/floor.py

From the committed grid runs (metrics.parquet: every (cell, rate, seed) run's held-out accuracy
curve), with lr-oracle's own rule (rlvrlab.experiments.lr_oracle.measure_cell), each cell's critical
rate is measured from every seed alone, then compared:

    seed vs seed     the measured rate of one seed against that of another seed of the same cell
                     (every ordered pair): what a perfect predictor of one run's threshold scores
                     against another run's, the floor of any prediction scored on one seed
    seed vs pooled   one seed's rate against the cell's measured rate over all its seeds
                     (cells.parquet's critical_rate), the comparison the probe is scored by
                     (a seed is part of the pool: optimistic)

beside the probe's own score (probes.parquet: within 2x of the pooled rate). A rate censored at an
end of the grid (every rate holds, or none) is a miss unless both sides are censored alike.
Prints the table and writes summary_floor.json next to this script.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rlvrlab.experiments.lr_oracle import measure_cell

HERE = Path(__file__).parent


def within(a: float, b: float, band: float = 2.0) -> bool:
    if math.isfinite(a) and math.isfinite(b):
        return max(a / b, b / a) <= band
    return bool(a == b) or (math.isnan(a) and math.isnan(b))


def main() -> None:
    config = json.loads((HERE / "config.json").read_text())["settings"]
    lrs = [float(x) for x in config["lrs"]]
    n_eval = max(1, round(0.2 * config["prompts"])) * config["eval_samples"]  # LrOracleConfig.n_eval
    m = pq.read_table(HERE / "metrics.parquet", columns=["run", "step", "eval/accuracy"]).to_pandas()
    m = m[m["eval/accuracy"].notna()]
    runs = {}
    for run, g in m.groupby("run"):
        key = dict(kv.split("=", 1) for kv in run.split(","))
        cell = (key["task"], key["preset"])
        runs.setdefault(cell, {}).setdefault(int(key["seed"]), {})[float(key["lr"])] = dict(zip(g.step.astype(int), g["eval/accuracy"]))
    cells = pq.read_table(HERE / "cells.parquet").to_pandas()
    # the run names spell a task's settings with "_" (add_min_digits_2_...), cells.parquet with ":" and "="
    pooled = {(r.task.replace(":", "_").replace("=", "_"), r.preset): r.critical_rate for r in cells.itertuples()}
    per_seed = {}
    for cell, seeds in sorted(runs.items()):
        for s, curves in sorted(seeds.items()):
            rates = [lr for lr in lrs if lr in curves]
            per_seed[cell, s] = measure_cell(rates, {lr: [curves[lr]] for lr in rates}, n_eval)["critical_rate"]
    pairs = [(per_seed[c, s], per_seed[c, t]) for c, seeds in runs.items() for s, t in itertools.permutations(sorted(seeds), 2)]
    vs_pool = [(per_seed[c, s], pooled[c]) for c, seeds in runs.items() for s in seeds if c in pooled]
    probes = pq.read_table(HERE / "probes.parquet").to_pandas()
    share = lambda xs: float(np.mean([within(a, b) for a, b in xs]))  # noqa: E731
    summary = {
        "seed_vs_seed_within_2x": share(pairs), "seed_pairs": len(pairs),
        "seed_vs_pooled_within_2x": share(vs_pool), "seed_cells": len(vs_pool),
        "probe_vs_pooled_within_2x": float(probes.within.mean()), "probe_pairs": int(len(probes)),
        "grid_step": lrs[1] / lrs[0],
        "rule": "lr-oracle's measure_cell on one seed: the largest rate whose held-out accuracy never falls 2 SE below its start",
    }
    print(f"one seed's critical rate within 2x of another seed's: {summary['seed_vs_seed_within_2x']:.0%} of {len(pairs)} ordered pairs")
    print(f"one seed's within 2x of the cell's pooled rate:      {summary['seed_vs_pooled_within_2x']:.0%} of {len(vs_pool)}")
    print(f"the probe's prediction within 2x of the pooled rate: {summary['probe_vs_pooled_within_2x']:.0%} of {len(probes)}")
    (HERE / "summary_floor.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
