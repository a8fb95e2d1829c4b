"""Experiments by name. The library never imports from here (STYLE.md, rule 7)."""

from __future__ import annotations

from functools import cache

from rlvrlab import _checks
from rlvrlab.experiments.base import Experiment

__all__ = ["experiments", "get", "names"]


@cache
def experiments() -> dict[str, Experiment]:
    from rlvrlab.experiments import (bounds, collapse, contextual, controller, direction, leash, length_penalty, lm_grpo, lr_oracle, mab,
                                     multi_prompt, phase, stagnation, success_scaling, two_response, warning_bench)

    found = [mab.EXPERIMENT, contextual.EXPERIMENT, two_response.EXPERIMENT, collapse.EXPERIMENT, bounds.EXPERIMENT,
             phase.EXPERIMENT, stagnation.EXPERIMENT, controller.EXPERIMENT, lm_grpo.EXPERIMENT, leash.EXPERIMENT,
             direction.EXPERIMENT, warning_bench.EXPERIMENT, success_scaling.EXPERIMENT, lr_oracle.EXPERIMENT,
             length_penalty.EXPERIMENT, multi_prompt.EXPERIMENT]
    return {e.name: e for e in found}


def names() -> list[str]:
    return list(experiments())


def get(name: str) -> Experiment:
    return _checks.choose("experiment", name, experiments())
