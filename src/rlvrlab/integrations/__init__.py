"""Integrations with the outside world: distributed sweeps and TRL.

``run_sweep`` computes a grid of cells locally or on Ray, resumably (rlvrlab.integrations.sweep).
``rlvrlab.integrations.trl`` (import it by name: TRL is an extra) puts the Gradient-Gap monitor,
the gap-adaptive rate and α reweighting into TRL's GRPOTrainer.
"""

from rlvrlab.integrations.sweep import BACKENDS, cell_key, run_sweep

__all__ = ["BACKENDS", "cell_key", "run_sweep"]
