"""Integrations with the outside world: distributed sweeps and TRL.

``run_sweep`` computes a grid of cells locally or on Ray, resumably, and ``lm_sweep`` runs a grid
of GRPO runs, each an ``rlvrlab lm train`` run directory (rlvrlab.integrations.sweep).
``rlvrlab.integrations.trl`` (import it by name: TRL is an extra) puts the Gradient-Gap monitor,
the gap-adaptive rate and α reweighting into TRL's GRPOTrainer.
"""

from rlvrlab.integrations.sweep import BACKENDS, DEFAULT_THREADS, cell_key, lm_sweep, run_sweep

__all__ = ["BACKENDS", "DEFAULT_THREADS", "cell_key", "lm_sweep", "run_sweep"]
