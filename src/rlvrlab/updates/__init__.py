"""How an update is built.

Directions (``make_direction``): exact (gradient, normalized-gradient, gap, expected), sampled
(reinforce, preset) or prescribed. A sampled preset is advantage × weighting × surrogate ×
aggregation (``rlvrlab.updates.presets``: REINFORCE, RLOO, GRPO, Dr. GRPO, DAPO, GSPO, and DAPO
with the token weightings of ``rlvrlab.updates.weighting``).
Step sizes (``make_step_size``): fixed, cosine, condition-13a, condition-15a, gap-adaptive.
Both take a ``StepContext``; the simulator applies theta <- theta + eta·w (eq. 3).
"""

from rlvrlab.updates.advantages import ADVANTAGES
from rlvrlab.updates.aggregation import AGGREGATIONS
from rlvrlab.updates.context import Direction, StepContext
from rlvrlab.updates.directions import DIRECTIONS, make_direction
from rlvrlab.updates.presets import PRESETS, Preset, get_preset, policy_loss
from rlvrlab.updates.stepsize import STEP_SIZES, make_step_size
from rlvrlab.updates.surrogates import SURROGATES
from rlvrlab.updates.weighting import WEIGHTINGS

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "DIRECTIONS",
    "PRESETS",
    "STEP_SIZES",
    "SURROGATES",
    "WEIGHTINGS",
    "Direction",
    "Preset",
    "StepContext",
    "get_preset",
    "make_direction",
    "make_step_size",
    "policy_loss",
]
