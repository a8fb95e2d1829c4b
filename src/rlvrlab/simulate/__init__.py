"""Batched simulation of eq. (3) on enumerable policies, recording the theory's vocabulary.

``simulate(policy, reward, theta0, steps=..., direction=..., step_size=...)`` returns a
``Trajectory`` of (S, R) records; see ``rlvrlab.simulate.loop``.
"""

from rlvrlab.simulate.loop import simulate
from rlvrlab.simulate.record import Trajectory

__all__ = ["Trajectory", "simulate"]
