"""App. E: a softmax over one correct and one incorrect response; Corollary 3.1's linear rate.

With π = softmax(θ+, θ-), the scores are (1-J, -(1-J)) and (-J, J), so the Gradient Gap is the
constant (1, -1) and the Gap Alignment of the normalized gap direction is the constant sqrt 2,
whatever J is. Corollary 3.1 then promises, for a fixed eta <= min{sqrt2/(2(L_o + 8G_o²)),
1/(2 sqrt L_o)} = sqrt2/33 (G_o = sqrt 2, L_o = 1/2),

    1 - J(K) <= (1 - J0)/J0 · exp(-sqrt2·eta·K / 2).

Here the log-odds θ+ - θ- move by exactly sqrt2·eta per step, so the realized rate is twice the
guaranteed one, and larger steps (outside the corollary's condition) converge just as well: the
condition is sufficient, not necessary, on an instance without a second-order penalty
(Var+ = Var- = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlvrlab import plotting, theory
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.simulate import simulate, two_response

__all__ = ["EXPERIMENT", "TwoResponseConfig", "plot", "run"]


@dataclass(frozen=True)
class TwoResponseConfig:
    J0s: tuple[float, ...] = setting((0.01, 0.2, 0.5), "initial success rates, one run each per step size")
    step_multiples: tuple[float, ...] = setting((1.0, 10.0), "step sizes as multiples of Corollary 3.1's largest step sqrt2/33")
    steps: int = setting(3_000, "steps")

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_floats("step_multiples", self.step_multiples)
        for J0 in self.J0s:
            if not 0 < J0 < 1:
                raise ValueError(f"J0s: got {J0}; allowed: numbers in (0, 1)")

    @classmethod
    def quick(cls) -> TwoResponseConfig:
        return cls(steps=600)


def run(config: TwoResponseConfig, progress: Progress, workdir: Path) -> Result:
    grid = [(J0, mult) for mult in config.step_multiples for J0 in config.J0s]
    J0 = torch.tensor([g[0] for g in grid], dtype=torch.float64)
    policy, reward, theta0 = two_response(J0)
    c = policy.constants()
    eta_star = theory.linear_rate_step(math.sqrt(2), c.L_o, c.G_o)
    eta = torch.tensor([g[1] * eta_star for g in grid], dtype=torch.float64)
    logit = theory.log_odds(J0)
    traj = simulate(policy, reward, theta0, steps=config.steps, direction="gap", step_size=eta,
                    on_step=progress.task("two-response", config.steps), fast=False)
    m = traj.metrics
    k = traj.step.to(torch.float64).unsqueeze(1)
    dm = m["delta_mu"][:-1]
    gap_err = (dm - math.sqrt(2)).abs().max().item()
    lo_err = (m["log_odds"] - (logit + math.sqrt(2) * eta * k)).abs().max().item()
    inside = eta <= eta_star * (1 + 1e-12)
    bound = theory.linear_rate_error_bound(J0, math.sqrt(2), eta, k)
    err = 1 - m["J"]
    rate_ok = (err <= bound * (1 + 1e-9) + 1e-300)[:, inside]
    realized_rate = (m["log_odds"][-1] - m["log_odds"][0]) / (eta * config.steps)
    target = 0.99
    predicted = [math.ceil(theory.linear_rate_steps(j, math.sqrt(2), e, target)) for j, e in zip(J0.tolist(), eta.tolist())]
    reached = [int(traj.step[(m["J"][:, i] >= target).nonzero()[0]]) if bool((m["J"][:, i] >= target).any()) else -1
               for i in range(len(grid))]
    checks = [
        Check("Gap Alignment of the normalized gap direction is sqrt 2 (App. E)", gap_err < 1e-8,
              f"max |Delta_mu - sqrt2| = {gap_err:.1e}", "< 1e-8 (rounding of a gradient of size J(1-J))"),
        Check("Corollary 3.1: 1-J(K) <= (1-J0)/J0·exp(-Delta_mu·eta·K/2) for eta <= sqrt2/33", bool(rate_ok.all()),
              f"{int(rate_ok.sum())} of {rate_ok.numel()} (run, step) pairs inside the bound", "all"),
        Check("Log-odds move by exactly sqrt2·eta per step (twice the guaranteed rate)", lo_err < 1e-9,
              f"max |log-odds(K) - log-odds(0) - sqrt2·eta·K| = {lo_err:.1e}", "< 1e-9"),
        Check("Steps 10x beyond Corollary 3.1's condition still converge (condition sufficient, not necessary)",
              bool((m["J"][-1][~inside] > m["J"][0][~inside]).all()) if bool((~inside).any()) else True,
              f"J(K) = {[round(x, 6) for x in m['J'][-1][~inside].tolist()]}", "J(K) > J(0)", kind="claim"),
    ]
    summary = {
        "eta_corollary_3_1": eta_star,
        "G_o": c.G_o,
        "L_o": c.L_o,
        "runs": [{"J0": j, "eta": e, "steps_to_J_0.99": s, "corollary_bound_steps": p, "realized_rate_over_eta": rr}
                 for j, e, s, p, rr in zip(J0.tolist(), eta.tolist(), reached, predicted, realized_rate.tolist())],
    }
    table = trajectory_table(traj, {"J0": J0, "eta": eta, "eta_multiple": [g[1] for g in grid]})
    return Result({"metrics": table}, summary, checks)


def plot(out: Path) -> list[str]:
    cols = columns(read_table(out / "metrics.parquet"), ("run", "step", "J0", "eta", "eta_multiple", "J", "log_odds"))
    fig, (a1, a2) = plotting.panels(2, width=5)
    for r in np.unique(cols["run"]):
        sel = cols["run"] == r
        k, J, J0, eta, mult = cols["step"][sel], cols["J"][sel], cols["J0"][sel][0], cols["eta"][sel][0], cols["eta_multiple"][sel][0]
        line = a1.semilogy(k, np.maximum(1 - J, 1e-300), label=f"J₀={J0:g}, η={mult:g}·η*")[0]
        if mult <= 1:
            bound = theory.linear_rate_error_bound(J0, math.sqrt(2), eta, k).numpy()
            a1.semilogy(k, bound, ls="--", color=line.get_color(), lw=0.8)
        a2.plot(k, cols["log_odds"][sel] - cols["log_odds"][sel][0], color=line.get_color())
    a1.set_ylim(bottom=1e-12)
    a1.set_xlabel("step K")
    a1.set_ylabel("1 - J(K)  (dashed: Corollary 3.1 bound)")
    a1.legend(fontsize=7)
    a2.set_xlabel("step K")
    a2.set_ylabel("log-odds(K) - log-odds(0)  (slope √2·η)")
    fig.suptitle("Two responses (App. E): constant Gap Alignment √2 and Corollary 3.1's linear rate")
    return [plotting.save(fig, out / "two_response.png")]


EXPERIMENT = Experiment(
    name="two-response",
    title="App. E: constant Gap Alignment and Corollary 3.1's linear rate",
    description=__doc__.split("\n\n")[1],
    config=TwoResponseConfig,
    run=run,
    plot=plot,
)
