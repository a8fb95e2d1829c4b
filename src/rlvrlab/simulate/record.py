"""What a simulation keeps: the vocabulary of DESIGN.md for every run at every recorded step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rlvrlab.policies import Constants

__all__ = ["GradientTap", "Recorder", "Trajectory"]

# Quantities of the state at step k (before the update); the rest describe the step k -> k+1
# and do not exist at the final row.
STATE_FIELDS = ("J", "log_odds", "M")


@dataclass
class Trajectory:
    """Recorded quantities of R runs.

    step:           (S,) the recorded steps; the last one is K, the final state
    metrics:        name -> (S, R), the objective (batch) level: J, log_odds, M (= Σ_{i<k}
                    [Delta_mu(i)]_+ eta_i, eq. 12), delta_mu, var_plus, var_minus, eta, w_norm,
                    log_odds_change (realized, lo(k+1) - lo(k)), and more when asked for
    prompt_metrics: name -> (S, R, C), per prompt (when recorded)
    theta:          (R, d) the final parameters
    Step quantities are NaN at the final row (there is no step K -> K+1).
    """

    step: torch.Tensor
    metrics: dict[str, torch.Tensor]
    prompt_metrics: dict[str, torch.Tensor]
    theta: torch.Tensor
    constants: Constants
    info: dict[str, object] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return self.theta.shape[0]

    def final(self, name: str) -> torch.Tensor:
        """(R,) value of a state quantity at the final step."""
        return self.metrics[name][-1]


class Recorder:
    """Fills (S, R) and (S, R, C) buffers at steps 0, every, 2·every, ... and at the final step."""

    def __init__(self, steps: int, every: int, runs: int, prompts: int, dtype: torch.dtype):
        self.steps, self.every = steps, every
        self.rows = list(range(0, steps, every)) + [steps]
        self.row_of = {k: i for i, k in enumerate(self.rows)}
        self.R, self.C, self.dtype = runs, prompts, dtype
        self.metrics: dict[str, torch.Tensor] = {}
        self.prompt: dict[str, torch.Tensor] = {}

    def due(self, k: int) -> bool:
        return k in self.row_of

    def _buffer(self, table: dict[str, torch.Tensor], name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in table:
            table[name] = torch.full((len(self.rows), *shape), math.nan, dtype=self.dtype)
        return table[name]

    def put(self, k: int, **values: torch.Tensor) -> None:
        i = self.row_of[k]
        for name, v in values.items():
            self._buffer(self.metrics, name, (self.R,))[i] = v

    def put_prompt(self, k: int, **values: torch.Tensor) -> None:
        i = self.row_of[k]
        for name, v in values.items():
            self._buffer(self.prompt, name, (self.R, self.C))[i] = v

    def trajectory(self, theta: torch.Tensor, constants: Constants, **info: object) -> Trajectory:
        return Trajectory(torch.tensor(self.rows), self.metrics, self.prompt, theta, constants, dict(info))


class GradientTap:
    """A step-size rule that applies ``rule`` and keeps, at every step k (not only the recorded
    ones), what App. G sums over: log J(θ_k), log(1 - J(θ_k)), Delta_mu(k), eta_k and the exact
    ‖∇J(θ_k)‖ (the model's gradient)."""

    NAMES = ("log_J", "log_1mJ", "delta_mu", "eta", "grad_norm")

    def __init__(self, rule):
        self.rule, self.rows, self.__name__ = rule, [], "grad-tap"

    def __call__(self, ctx, stats, direction):
        eta = torch.as_tensor(self.rule(ctx, stats, direction), dtype=ctx.theta.dtype).expand(ctx.theta.shape[0])
        grad = ctx.model.grad_J(ctx.theta, ctx.weights).norm(dim=-1)
        self.rows.append(torch.stack([stats.log_J, stats.log_1mJ, stats.delta_mu, eta, grad]))
        return eta

    def steps(self) -> dict[str, torch.Tensor]:
        """name -> (K, R), one row per step taken."""
        return dict(zip(self.NAMES, torch.stack(self.rows).unbind(1)))
