"""What an update rule sees at step k: one shared signature for every direction and step-size rule."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from rlvrlab import _checks
from rlvrlab.policies import Constants
from rlvrlab.policies.model import Batch, Model

__all__ = ["Direction", "StepContext", "bind"]


@dataclass
class StepContext:
    """State of all R runs at step k of a simulation.

    theta: (R, d); model: the policy with its reward (rlvrlab.policies.model); weights: (R, C)
    the prompt distribution the update trains on at this step.
    """

    k: int
    steps: int
    theta: torch.Tensor
    model: Model
    weights: torch.Tensor
    constants: Constants
    generator: torch.Generator | None = None


class Direction(NamedTuple):
    """An update direction w (R, d); for sampled updates, the batch it was built from and the
    preset's ``loss/...`` diagnostics (R,)."""

    w: torch.Tensor
    samples: Batch | None = None
    metrics: dict[str, torch.Tensor] | None = None


def bind(kind: str, table: Mapping[str, Callable[..., Any]], name: str, options: Mapping[str, Any]) -> Callable[..., Any]:
    """Look a rule up by name and bind its keyword options; unknown names or options list the valid ones."""
    fn = _checks.choose(kind, name, table)
    params = inspect.signature(fn).parameters
    allowed = {p.name: p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # checked by the rule
    for key in options:
        if key not in allowed and not open_ended:
            _checks.fail(f"{kind} '{name}' option", key, ", ".join(sorted(allowed)) or "no options")
    missing = [p for p, spec in allowed.items() if spec.default is inspect.Parameter.empty and p not in options]
    if missing:
        _checks.fail(f"{kind} '{name}'", f"no value for {', '.join(missing)}", f"options {', '.join(sorted(allowed))}")

    def rule(*args: Any) -> Any:
        return fn(*args, **options)

    rule.__name__ = name
    rule.__doc__ = fn.__doc__
    rule.options = dict(options)  # type: ignore[attr-defined]  # read by fused simulation kernels
    return rule
