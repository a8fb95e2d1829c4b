"""How an update is built: a direction rule and a step-size rule, each a named choice.

Directions (``make_direction``): gradient, normalized-gradient, gap, reinforce, prescribed.
Step sizes (``make_step_size``): fixed, cosine, condition-13a, condition-15a.
Both take a ``StepContext``; the simulator applies theta <- theta + eta·w (eq. 3).
"""

from rlvrlab.updates.context import Direction, Samples, StepContext
from rlvrlab.updates.directions import DIRECTIONS, make_direction
from rlvrlab.updates.stepsize import STEP_SIZES, make_step_size

__all__ = ["DIRECTIONS", "STEP_SIZES", "Direction", "Samples", "StepContext", "make_direction", "make_step_size"]
