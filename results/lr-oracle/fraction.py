"""Would training at another fraction of the probe's critical rate land nearer the best fixed rate? (issue 14, part 2)

    python results/lr-oracle/fraction.py

A diagnostic on the committed tables, not a tuned rule: for each of the 45 (cell, seed) probes of
grid (a) and (b) (`probes.parquet`, seeds 0-2 / 0-1) and each fraction f, the accuracy at f x the
predicted critical rate is read off the cell's seed-mean final accuracy against rate
(`rates.parquet`, interpolated linearly in log rate between grid rates, held at the ends), and
counted when it is within 0.02 of the cell's best. The probe recommends f = 0.5.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).parent
FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2)


def main() -> None:
    curves: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in pq.read_table(HERE / "rates.parquet").to_pylist():
        curves[(r["task"], r["preset"])].append((r["lr"], r["accuracy_final"]))
    probes = [p for p in pq.read_table(HERE / "probes.parquet").to_pylist() if np.isfinite(p["predicted"])]
    for f in FRACTIONS:
        loss = []
        for p in probes:
            lr, acc = map(np.array, zip(*sorted(curves[(p["task"], p["preset"])])))
            loss.append(acc.max() - float(np.interp(np.log(f * p["predicted"]), np.log(lr), acc)))
        loss = np.array(loss)
        print(f"f = {f:.1f}: within 0.02 of the best in {int((loss <= 0.02).sum())} of {len(loss)}; "
              f"accuracy lost: median {np.median(loss):.3f}, worst {loss.max():.3f}")


if __name__ == "__main__":
    main()
