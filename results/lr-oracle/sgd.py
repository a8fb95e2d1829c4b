"""lr-oracle's length grid (b) under plain SGD without clipping: the paper's §4 prediction as stated.

The paper's critical step is for raw gradient steps θ + η·w, where a length normalization rescales
the step; Adam divides such rescalings out (the main run). Here the same tasks and base models
(add, two-digit operands, the worked solution written 1, 2, 4, 8 times) are trained with
`optimizer="sgd"` and `max_grad_norm=1e6` (no clipping), presets grpo (1/|o|) and rloo (summed over
tokens, unnormalized), 8 rates 1e-4 .. 1 (3.7x apart), seeds 0-1, 30 steps. Dr. GRPO is left out:
its constant normalizer is max_new_tokens, which grows with the length here, so it would be GRPO again.

    python results/lr-oracle/sgd.py RUNS_DIR        # trains what is missing (resumable), then analyses

writes sgd_cells.parquet and sgd_rates.parquet beside this file and prints the slopes. The
measured critical rate is lr-oracle's rule (rlvrlab.experiments.lr_oracle.measure_cell).
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlvrlab.analysis.stats import loglog_slope
from rlvrlab.experiments.lr_oracle import _evals, measure_cell
from rlvrlab.integrations.sweep import lm_sweep
from rlvrlab.io import read_table, table_rows
from rlvrlab.lm.pretrain import PretrainConfig, pretrain

LRS = [float(f"{x:.2g}") for x in np.geomspace(1e-4, 1.0, 8)]
REPEATS = (1, 2, 4, 8)
N_EVAL = 80 * 2  # held-out prompts (20% of 400) x eval_samples

if __name__ == "__main__":
    out = Path(sys.argv[1])
    cells, rate_rows = [], []
    for k in REPEATS:
        task = f"add:min_digits=2:max_digits=2:repeat={k}"
        model = str(pretrain(PretrainConfig(tasks=(task,), mix=(1.0,), max_new_tokens=16 * k + 8)))
        grid = {"model": model, "task": [task], "steps": 30, "batch_size": 64, "group": 8, "prompts": 400,
                "max_new_tokens": 16 * k + 8, "eval_every": 5, "eval_samples": 2, "fresh_samples": 0, "kl_reference": False,
                "checkpoint_every": 15, "optimizer": "sgd", "max_grad_norm": 1e6, "preset": ["grpo", "rloo"], "lr": LRS,
                "seed": [0, 1]}
        runs = lm_sweep(grid, out, workers=2, threads=1).to_pylist()
        for preset in ("grpo", "rloo"):
            curves, lengths = {}, []
            for r in runs:
                if r["preset"] != preset:
                    continue
                rows = table_rows(read_table(out / r["run"] / "metrics.parquet"))
                curves.setdefault(r["lr"], []).append(_evals(rows, r["status"], 30))
                lengths += [x["completions/mean_length"] for x in rows if x["step"] == 1]
            m = measure_cell(LRS, curves, N_EVAL)
            cells.append({"repeat": k, "preset": preset, "length": float(np.mean(lengths)), "best_lr": m["best_lr"],
                          "best_accuracy": m["best_accuracy"], "critical_rate": m["critical_rate"],
                          "critical_low": m["critical_low"], "critical_high": m["critical_high"]})
            rate_rows += [{"repeat": k, "preset": preset, **x} for x in m["per_rate"]]
    here = Path(__file__).parent
    pq.write_table(pa.Table.from_pylist(cells), here / "sgd_cells.parquet")
    pq.write_table(pa.Table.from_pylist(rate_rows), here / "sgd_rates.parquet")
    for c in cells:
        print(f"x{c['repeat']} {c['preset']:5s} length {c['length']:5.1f}  best {c['best_lr']:.2g} ({c['best_accuracy']:.3f})  "
              f"critical [{c['critical_low']:.2g}, {c['critical_high']:.2g}]")
    for preset, theory in (("grpo", 0.0), ("rloo", -1.0)):
        pts = [c for c in cells if c["preset"] == preset]
        fit = loglog_slope([c["length"] for c in pts], [c["critical_rate"] for c in pts])
        print(f"{preset}: slope {fit.slope:.2f} [{fit.low:.2f}, {fit.high:.2f}] over {fit.n} lengths (theory {theory:g})")
    # the contrast, length by length (the same base model and batches): log(critical grpo / critical rloo) against
    # log length, theory +1 (GRPO divides by |o|, rloo does not); each length's base model cancels
    by = {(c["repeat"], c["preset"]): c for c in cells}
    fit = loglog_slope([by[(k, "grpo")]["length"] for k in REPEATS],
                       [by[(k, "grpo")]["critical_rate"] / by[(k, "rloo")]["critical_rate"] for k in REPEATS])
    print(f"grpo / rloo: slope {fit.slope:.2f} [{fit.low:.2f}, {fit.high:.2f}] over {fit.n} lengths (theory +1)")
