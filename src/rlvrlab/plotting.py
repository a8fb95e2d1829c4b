"""Figure helpers shared by the experiments: one look, atomic PNG writes."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from rlvrlab.io import atomic_write_bytes  # noqa: E402

__all__ = ["colored_line", "panels", "save"]

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                     "axes.spines.right": False, "font.size": 9})


def panels(n: int, width: float = 4.2, height: float = 3.4):
    """A row of n axes."""
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def colored_line(ax, x, y, c, *, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
                 linewidth: float = 1.6, **kw):
    """A line whose colour follows c (e.g. the normalized step), as in the paper's Figures 1, 2 and 4."""
    x, y, c = (np.asarray(a, dtype=float) for a in (x, y, c))
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, c = x[ok], y[ok], c[ok]
    points = np.stack([x, y], axis=1).reshape(-1, 1, 2)
    segments = np.concatenate([points[:-1], points[1:]], axis=1)
    lc = LineCollection(segments, cmap=cmap, linewidth=linewidth,
                        norm=plt.Normalize(c.min() if vmin is None else vmin, c.max() if vmax is None else vmax), **kw)
    lc.set_array(c[:-1])
    ax.add_collection(lc)
    ax.autoscale_view()
    return lc


def save(fig, path: str | Path) -> str:
    """Write the figure as PNG atomically and close it; returns the file name."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path).name
