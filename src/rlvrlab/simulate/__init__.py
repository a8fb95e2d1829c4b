"""Batched simulation of eq. (3) on enumerable policies, recording the theory's vocabulary.

``simulate(policy, reward, theta0, steps=..., direction=..., step_size=...)`` returns a
``Trajectory`` of (S, R) records; see ``rlvrlab.simulate.loop``. The instances the experiments
simulate (§6.1's contextual bandit, the token bandit, App. E and App. F's worked examples, random
instances) are built by ``rlvrlab.simulate.instances``; each prompt's exact critical step along an
update, the cross-prompt step-size rule and the critical-rate prediction from a short safe
trajectory are in ``rlvrlab.simulate.critical``.
"""

from rlvrlab.simulate.critical import (CriticalPrediction, cross_prompt_step_size, predict_critical_rate, prompt_critical_steps,
                                       smallest_critical_step)
from rlvrlab.simulate.instances import (PROMPT_FLOOR, Curriculum, RandomInstance, collapse_direction, collapse_features,
                                        collapse_instance, collapse_theta0, contextual_bandit, initial_theta,
                                        predicted_critical_rates, prompt_outcomes, random_instances, token_bandit,
                                        two_response)
from rlvrlab.simulate.loop import simulate
from rlvrlab.simulate.record import GradientTap, Trajectory

__all__ = ["PROMPT_FLOOR", "CriticalPrediction", "Curriculum", "GradientTap", "RandomInstance", "Trajectory",
           "collapse_direction", "collapse_features", "collapse_instance", "collapse_theta0", "contextual_bandit",
           "cross_prompt_step_size", "initial_theta", "predict_critical_rate", "predicted_critical_rates",
           "prompt_critical_steps", "prompt_outcomes", "random_instances", "simulate", "smallest_critical_step",
           "token_bandit", "two_response"]
