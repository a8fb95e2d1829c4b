"""Batched simulation of eq. (3) on enumerable policies, recording the theory's vocabulary.

``simulate(policy, reward, theta0, steps=..., direction=..., step_size=...)`` returns a
``Trajectory`` of (S, R) records; see ``rlvrlab.simulate.loop``. The instances the experiments
simulate (§6.1's contextual bandit, the token bandit, App. E and App. F's worked examples, random
instances) are built by ``rlvrlab.simulate.instances``.
"""

from rlvrlab.simulate.instances import (PROMPT_FLOOR, Curriculum, RandomInstance, collapse_direction, collapse_features,
                                        collapse_instance, collapse_theta0, contextual_bandit, initial_theta,
                                        predicted_critical_rates, prompt_outcomes, random_instances, token_bandit,
                                        two_response)
from rlvrlab.simulate.loop import simulate
from rlvrlab.simulate.record import GradientTap, Trajectory

__all__ = ["PROMPT_FLOOR", "Curriculum", "GradientTap", "RandomInstance", "Trajectory", "collapse_direction", "collapse_features",
           "collapse_instance", "collapse_theta0", "contextual_bandit", "initial_theta", "predicted_critical_rates",
           "prompt_outcomes", "random_instances", "simulate", "token_bandit", "two_response"]
