"""How reproducible phase's measured critical rate is, and how well a short fixed-rate run predicts it.

    OMP_NUM_THREADS=1 python results/phase-prediction/floor.py WORKDIR [--workers 2]

For every cell of phase's default grid (4 presets × T ∈ {1, …, 32} × J0 ∈ {0.2, 0.5} × 8 instances,
384 cells), with phase's own code (rlvrlab.experiments.phase.phase_group), each variant one
resumable sweep under WORKDIR:

    measured   phase's critical rate: 13-point log grid 0.1 … 1e5, 5 bisection steps, 150 steps,
               the upper edge of the rates whose final mean J reaches 0.9 (results/phase-ci's cells)
    shifted    the same measurement on the grid shifted by a third of a grid step (0.1·10^⅙ … 1e5·10^⅙):
               what the measurement itself reproduces to, the floor of any prediction scored against it.
               (Half a step would not do: bisection in log rate halves the grid's brackets, so a
               half-step grid's points are the first bisection midpoints and the two measurements
               probe the same rates; a third of a step is never a dyadic fraction of one.)
    probe-K    the same rule on runs of K steps (K = 20, 40): the critical rate of a short run,
               a prediction that costs K/150 of the measurement's runs

Writes WORKDIR/floor.parquet (one row per cell, the four rates) and prints, for each variant
against `measured`, the share of cells within 1.5x and 2x (prediction_stats, phase's own scoring)
and how many cells are non-monotone (a rate of the grid above the measured edge converges again).
The summary is written next to this script as summary_floor.json, the figure as floor.png
(each variant against `measured`, one point per cell, the 1.5x and 2x bands drawn). With
--plot-only the figure is redrawn from the committed floor.parquet, nothing is run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlvrlab import plotting
from rlvrlab.experiments.phase import PhaseConfig, phase_group, phase_groups, prediction_stats
from rlvrlab.integrations.sweep import run_sweep

HERE = Path(__file__).parent
SHIFT = 10 ** (1 / 6)  # a third of a step of the 2-per-decade grid
VARIANTS = {"measured": {}, "shifted": {"lr_min": 0.1 * SHIFT, "lr_max": 1e5 * SHIFT},
            "probe-20": {"steps": 20}, "probe-40": {"steps": 40}}
KEY = ["preset", "T", "J0", "seed"]


def rates(workdir: Path, name: str, overrides: dict, workers: int) -> tuple[pa.Table, pa.Table]:
    groups = [dict(g, predict_steps=0, **overrides) for g in phase_groups(PhaseConfig())]
    groups.sort(key=lambda g: -g["T"])
    tables = run_sweep(phase_group, groups, workdir / name, workers=workers)
    crit = tables["critical"].select([*KEY, "lr"]).rename_columns([*KEY, name])
    return crit, tables["grid"]


def plot(floor: pa.Table, path: Path) -> str:
    """Each variant against the measured rate, one point per cell with a finite measurement."""
    names = [k for k in VARIANTS if k != "measured"]
    measured = np.asarray(floor.column("measured").to_pylist(), dtype=float)
    fig, axes = plotting.panels(len(names), width=4.0, height=3.9)
    ok = np.isfinite(measured)
    line = np.array([measured[ok].min() / 3, measured[ok].max() * 3])
    for ax, name in zip(axes, names):
        y = np.asarray(floor.column(name).to_pylist(), dtype=float)
        fin = ok & np.isfinite(y)
        ax.fill_between(line, line / 2, line * 2, color="0.9", label="2x")
        ax.fill_between(line, line / 1.5, line * 1.5, color="0.78", label="1.5x")
        ax.loglog(line, line, "k-", lw=0.8)
        ax.loglog(measured[fin], y[fin], "o", ms=3, alpha=0.5)
        inside = prediction_stats(y, measured, measured)["within_1.5x"]  # phase's own scoring, as the summary's
        ax.set_xlim(*line)
        ax.set_ylim(*line)
        ax.set_xlabel("measured critical rate (phase, 150 steps)")
        ax.set_ylabel(name)
        ax.set_title(f"{name}: {inside:.1%} of {ok.sum()} cells within 1.5x", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("phase's critical rate re-measured (shifted grid) and from short runs")
    return plotting.save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path, nargs="?")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plot-only", action="store_true", help="redraw floor.png from the committed floor.parquet")
    args = ap.parse_args()
    if args.plot_only:
        print(plot(pq.read_table(HERE / "floor.parquet"), HERE / "floor.png"))
        return
    if args.workdir is None:
        ap.error("WORKDIR is needed unless --plot-only")
    merged, grid = None, None
    for name, overrides in VARIANTS.items():
        crit, g = rates(args.workdir, name, overrides, args.workers)
        if name == "measured":
            grid = g
        merged = crit if merged is None else merged.join(crit, KEY)
    merged = merged.sort_by([(k, "ascending") for k in KEY])
    pq.write_table(merged, args.workdir / "floor.parquet")
    d = {k: np.asarray(merged.column(k).to_pylist(), dtype=float) for k in VARIANTS}
    measured = d["measured"]
    low = np.where(np.isfinite(measured), measured, 1e5)  # a censored cell's lower bound: the grid's top
    # non-monotone cells: a rate of the measurement's grid above the measured edge converges again
    g = {k: grid.column(k).to_pylist() for k in (*KEY, "lr", "converged")}
    edge = {tuple(r[k] for k in KEY): r["measured"] for r in merged.to_pylist()}
    above = {tuple(g[k][i] for k in KEY) for i in range(len(g["lr"]))
             if g["converged"][i] and g["lr"][i] > edge[tuple(g[k][i] for k in KEY)]}
    summary = {"cells": int(len(measured)), "cells_measured": int(np.isfinite(measured).sum()),
               "cells_non_monotone": len(above),
               "measured": "phase's critical rate (defaults): upper edge of the fixed rates whose final mean J after 150 steps "
                           "reaches 0.9, 13-point grid 0.1 ... 1e5, 5 bisection steps"}
    print(f"{summary['cells']} cells, {summary['cells_measured']} measured; a converging grid rate above the measured edge "
          f"in {len(above)}")
    print(f"{'variant':10s} {'within 1.5x':>12s} {'within 2x':>10s} {'median ratio':>13s} {'ratio 5th-95th pct':>20s}")
    for name in VARIANTS:
        if name == "measured":
            continue
        st = prediction_stats(d[name], measured, low)
        ok = np.isfinite(measured) & np.isfinite(d[name])
        r = d[name][ok] / measured[ok]
        st["ratio_p5"], st["ratio_p95"] = (float(x) for x in np.percentile(r, [5, 95]))
        preset = np.asarray(merged.column("preset").to_pylist())
        st["within_1.5x_by_preset"] = {p: prediction_stats(d[name][preset == p], measured[preset == p], low[preset == p])["within_1.5x"]
                                       for p in dict.fromkeys(preset.tolist())}
        summary[name] = st
        print(f"{name:10s} {st['within_1.5x']:12.3f} {st['within_2x']:10.3f} {st['ratio_median']:13.3g} "
              f"{st['ratio_p5']:9.3g} - {st['ratio_p95']:.3g}")
    (HERE / "summary_floor.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(plot(merged, HERE / "floor.png"))


if __name__ == "__main__":
    main()
