"""What an update rule sees at step k: one shared signature for every direction and step-size rule."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from rlvrlab import _checks
from rlvrlab.policies import Constants, EnumerablePolicy

__all__ = ["Direction", "Samples", "StepContext", "bind"]


@dataclass
class StepContext:
    """State of all R runs at step k of a simulation.

    theta: (R, d); reward: (C, N) or (R, C, N) float 0/1; weights: (R, C) the prompt distribution
    the update trains on at this step; logp: (R, C, N) log π at theta (cached).
    """

    k: int
    steps: int
    theta: torch.Tensor
    policy: EnumerablePolicy
    reward: torch.Tensor
    weights: torch.Tensor
    logp: torch.Tensor
    constants: Constants
    generator: torch.Generator | None = None


class Samples(NamedTuple):
    """Responses a sampled update drew: indices (R, C, G) and their rewards (R, C, G)."""

    index: torch.Tensor
    reward: torch.Tensor


class Direction(NamedTuple):
    """An update direction w (R, d) and, for sampled updates, the samples it was built from."""

    w: torch.Tensor
    samples: Samples | None = None


def bind(kind: str, table: Mapping[str, Callable[..., Any]], name: str, options: Mapping[str, Any]) -> Callable[..., Any]:
    """Look a rule up by name and bind its keyword options; unknown names or options list the valid ones."""
    fn = _checks.choose(kind, name, table)
    params = inspect.signature(fn).parameters
    allowed = {p.name: p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    for key in options:
        if key not in allowed:
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
