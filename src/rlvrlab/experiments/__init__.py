"""Named experiments: each a config dataclass, a run function and a plot function.

``rlvrlab list`` names them; ``run_experiment(name, out, quick=..., settings=[...])`` runs one into
a run directory.
"""

from rlvrlab.experiments.base import Check, Experiment, Result, apply_settings
from rlvrlab.experiments.registry import experiments, get, names
from rlvrlab.experiments.runner import resolve_config, run_experiment

__all__ = ["Check", "Experiment", "Result", "apply_settings", "experiments", "get", "names", "resolve_config", "run_experiment"]
