"""Numbers the README derives from the committed tables (critical.parquet, prediction.parquet):
each predictor's rank correlation with the measured critical rate, the spread of log10(predicted /
measured), and how many cells one calibration constant (the median ratio, fitted on these same
cells: in-sample, so optimistic) would bring within 1.5x and 2x.

    .venv/bin/python results/phase-prediction/derived.py
"""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rlvrlab.analysis import spearman

HERE = Path(__file__).parent
crit = pq.read_table(HERE / "critical.parquet").to_pandas()
steps = pq.read_table(HERE / "prediction.parquet").to_pandas()
K = len(steps) // len(crit)  # rows per cell, in cell order
m_tol = steps["m_tolerant"].to_numpy().reshape(len(crit), K)
m_min = steps["m_min"].to_numpy().reshape(len(crit), K)
measured = crit["lr"].to_numpy()
ok = np.isfinite(measured)
for name, pred in [("pred_min, K=1", m_min[:, 0]), (f"pred_min, K={K}", m_min.min(1)), ("pred_tolerant, K=1", m_tol[:, 0]),
                   (f"pred_tolerant, K={K}", m_tol.min(1)), ("pred_second_order", crit["pred_second_order"].to_numpy())]:
    ratio = pred[ok] / measured[ok]
    fin = np.isfinite(ratio) & (ratio > 0)
    log = np.log10(ratio[fin])
    rho = spearman(pred[ok][fin], measured[ok][fin])
    scale = 10 ** np.median(log)
    cal = ratio / scale
    print(f"{name:22s} spearman {rho:.2f}  log10 ratio 10/50/90%: {np.percentile(log, 10):+.2f} {np.median(log):+.2f} "
          f"{np.percentile(log, 90):+.2f}  x1/{scale:.3g} (in-sample): within 1.5x {np.mean((cal <= 1.5) & (cal >= 1 / 1.5)):.0%}, "
          f"2x {np.mean((cal <= 2) & (cal >= 0.5)):.0%}")
