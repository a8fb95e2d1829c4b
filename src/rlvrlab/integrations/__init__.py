"""Integrations with the outside world: distributed sweeps (and, later, TRL).

``run_sweep`` computes a grid of cells locally or on Ray, resumably (rlvrlab.integrations.sweep).
"""

from rlvrlab.integrations.sweep import BACKENDS, cell_key, run_sweep

__all__ = ["BACKENDS", "cell_key", "run_sweep"]
