"""Figure 4 (App. I.1): exact REINFORCE on a 100-armed bandit.

One best arm with reward 1, the other arms 0; a tabular softmax with constant initial logits;
the exact update theta <- theta + eta·∇J (REINFORCE with the exact value baseline, w_k = ∇J not
normalized, as in that appendix) at a fixed eta, for 10,000 steps; one run per eta.

What the run checks:
- App. I.1's closed form Delta_mu = π*(1-π*) + π* Σ_{a≠a*} π_a²/(1-π*); with constant initial
  logits the K-1 wrong arms stay equal, so it is exactly Delta_mu = J(1-J)·K/(K-1), a concave
  quadratic in J (the paper's "concave quadratic" in k).
- On that symmetric subspace the log-odds are linear in theta, so the realized log-odds change
  equals Delta_mu·eta exactly and J(k) = σ(logit J(0) + M(k)): the curve of Figure 4's third
  panel is exactly logistic, twice as steep in M as the lower bound (13b) guarantees.
- Lemma 1's band (27) at every step (G_o = sqrt 2, L_o = 1/2), and the lower bound (13b)
  wherever every step so far satisfied (13a).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from rlvrlab import gap, plotting, theory
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.policies import TabularSoftmax
from rlvrlab.simulate import simulate

__all__ = ["EXPERIMENT", "MabConfig", "run", "plot"]


@dataclass(frozen=True)
class MabConfig:
    arms: int = setting(100, "number of arms K (App. I.1: 100)")
    steps: int = setting(10_000, "exact REINFORCE steps (App. I.1: 10,000)")
    etas: tuple[float, ...] = setting((0.1, 1.0, 10.0), "fixed step sizes, one run each (App. I.1 does not give its eta)")
    best_arm: int = setting(0, "index of the rewarded arm (irrelevant by symmetry; kept explicit)")
    record_every: int = setting(1, "keep every n-th step in metrics.parquet")
    dtype: Literal["float32", "float64"] = setting("float64", "floating-point precision of the simulation")

    def __post_init__(self) -> None:
        check_positive_int("arms", self.arms, 2)
        check_positive_int("steps", self.steps)
        check_positive_int("record_every", self.record_every)
        check_positive_floats("etas", self.etas)
        if not 0 <= self.best_arm < self.arms:
            raise ValueError(f"best_arm: got {self.best_arm}; allowed: an arm index in [0, {self.arms - 1}]")

    @classmethod
    def quick(cls) -> MabConfig:
        return cls(steps=2_000)


def run(config: MabConfig, progress: Progress, workdir: Path) -> Result:
    dtype = getattr(torch, config.dtype)
    K = config.arms
    policy = TabularSoftmax(K)
    reward = torch.zeros(1, K, dtype=dtype)
    reward[0, config.best_arm] = 1
    etas = torch.tensor(config.etas, dtype=dtype)
    R = len(etas)
    theta0 = torch.zeros(R, K, dtype=dtype)
    advance = progress.task("mab: exact REINFORCE", config.steps)
    traj = simulate(policy, reward, theta0, steps=config.steps, direction="gradient", step_size=etas,
                    record_every=config.record_every, on_step=advance)
    m = traj.metrics
    J, dm, eta, M, lo, w_norm = m["J"], m["delta_mu"], m["eta"], m["M"], m["log_odds"], m["w_norm"]
    step = slice(0, -1)  # rows with a step taken (the last row is the final state)

    # App. I.1 on the symmetric subspace, and the general form at the final parameters.
    quad = theory.bandit_delta_mu_symmetric(J[step], K)
    ok = torch.isfinite(dm[step]) & (J[step] < 1 - 1e-9)
    rel_quad = ((dm[step] - quad).abs() / quad)[ok].max().item()
    pi = torch.softmax(traj.theta, 1)
    logp, proj = policy.logp_and_jvp(traj.theta, policy.grad_J(traj.theta, reward, torch.ones(R, 1, dtype=dtype)))
    engine = gap.gap_along(logp, proj, reward.expand(R, 1, K))
    general = theory.bandit_delta_mu(pi, config.best_arm)
    defined = pi[:, config.best_arm] < 1 - 1e-9
    rel_general = ((engine.delta_mu[:, 0] - general).abs() / general)[defined].max().item() if bool(defined.any()) else 0.0

    # J(k) = σ(logit J0 + M(k)) exactly; the lower bound (13b) needs only half of M.
    lo0 = lo[0]
    exact_logistic = torch.sigmoid(lo0 + M)
    logistic_err = (J - exact_logistic).abs().max().item()

    # Lemma 1 (27) for the unit direction w/‖w‖ with step eta·‖w‖ (Delta_mu·eta is unchanged).
    c = policy.constants()
    eta_eff = (eta * w_norm)[step]
    change = m["log_odds_change"][step]
    band = theory.lemma1_band(eta_eff, c.L_o, c.G_o)
    premise = eta_eff <= theory.smoothness_step_cap(c.L_o)
    lemma1_ok = ((change - dm[step] * eta[step]).abs() <= band + 1e-12) | ~premise
    # (13a) for the unit direction: eta_eff <= (Delta_mu/‖w‖) / (2(L_o + 8 G_o²)), at every step so far.
    cond = eta_eff <= theory.step_condition_trajectory(dm[step] / w_norm[step], c.L_o, c.G_o) * (1 + 1e-12)
    held_so_far = torch.cumprod(cond.to(torch.int64), dim=0).bool()
    bound = theory.logistic_lower_bound(J[0].expand_as(J[1:]), M[1:])
    bound_rows = held_so_far  # J(k+1) needs (13a) at steps 0..k
    bound_ok = (J[1:] >= bound - 1e-12) | ~bound_rows

    checks = [
        Check("App. I.1 closed form, symmetric arms: Delta_mu = J(1-J)·K/(K-1)", rel_quad < 1e-9,
              f"max relative error {rel_quad:.2e} over {int(ok.sum())} steps", "< 1e-9"),
        Check("App. I.1 closed form at the final policy vs the exact engine", rel_general < 1e-9,
              f"max relative error {rel_general:.2e}", "< 1e-9"),
        Check("J(k) = σ(logit J(0) + M(k)) (log-odds linear on the symmetric subspace)", logistic_err < 1e-9,
              f"max |J - σ(logit J0 + M)| = {logistic_err:.2e}", "< 1e-9"),
        Check("Lemma 1 band (27) where eta_eff <= 1/(2 sqrt L_o)", bool(lemma1_ok.all()),
              f"{int((premise & lemma1_ok).sum())} of {int(premise.sum())} steps inside the band",
              "every step whose premise holds"),
        Check("Logistic lower bound (13b) while (13a) has held", bool(bound_ok.all()),
              f"{int((bound_rows & (J[1:] >= bound - 1e-12)).sum())} of {int(bound_rows.sum())} steps above the bound",
              "every step after which (13a) held throughout"),
    ]
    first_half = [int(traj.step[(J[:, i] >= 0.5).nonzero()[0]]) if bool((J[:, i] >= 0.5).any()) else -1 for i in range(R)]
    summary = {
        "arms": K,
        "steps": config.steps,
        "etas": list(config.etas),
        "J_final": J[-1].tolist(),
        "M_final": M[-1].tolist(),
        "first_step_with_J_at_least_half": first_half,
        "max_delta_mu": dm[step].max(0).values.tolist(),
        "max_delta_mu_closed_form": theory.bandit_delta_mu_symmetric(0.5, K),  # K/(4(K-1)), at J = ½
        "kernel": traj.info.get("kernel"),
    }
    table = trajectory_table(traj, {"eta": etas})
    return Result({"metrics": table}, summary, checks)


def plot(out: Path) -> list[str]:
    cols = columns(read_table(out / "metrics.parquet"), ("run", "step", "eta", "J", "delta_mu", "M"))
    runs = np.unique(cols["run"])
    K_steps = cols["step"].max()
    fig, (a1, a2, a3) = plotting.panels(3)
    styles = ["-", "--", ":", "-."]
    handles = []
    for i, r in enumerate(runs):
        sel = cols["run"] == r
        step, J, dm, M = (cols[k][sel] for k in ("step", "J", "delta_mu", "M"))
        c = step / K_steps
        kw = {"linestyle": styles[i % len(styles)]}
        x = np.maximum(step, 1)
        lc = plotting.colored_line(a1, x, J, c, vmin=0, vmax=1, **kw)
        plotting.colored_line(a2, x, dm, c, vmin=0, vmax=1, **kw)
        plotting.colored_line(a3, M, J, c, vmin=0, vmax=1, **kw)
        handles.append(a1.plot([], [], color="0.3", label=f"η = {cols['eta'][sel][0]:g}", **kw)[0])
    a1.legend(handles=handles, loc="upper left", fontsize=7)
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_xlabel("step k")
    a1.set_ylabel("J(k)")
    a2.set_ylabel("Δμ(k)")
    a3.set_xlabel("cumulative alignment M(k)")
    a3.set_ylabel("J(k)")
    J0 = cols["J"][cols["step"] == 0][0]
    Ms = np.linspace(0, np.nanmax(cols["M"]), 200)
    lo0 = math.log(J0 / (1 - J0))
    a3.plot(Ms, 1 / (1 + np.exp(-(lo0 + Ms))), color="k", lw=0.8, alpha=0.6, label="σ(logit J₀ + M)")
    a3.plot(Ms, 1 / (1 + np.exp(-(lo0 + Ms / 2))), color="k", lw=0.8, ls="--", alpha=0.6, label="lower bound (13b)")
    a3.legend(loc="lower right", fontsize=7)
    fig.colorbar(lc, ax=a3, label="normalized step")
    fig.suptitle("Exact REINFORCE on a 100-armed bandit (App. I.1, Figure 4)")
    return [plotting.save(fig, out / "figure4.png")]


EXPERIMENT = Experiment(
    name="mab",
    title="Figure 4: exact REINFORCE on a multi-armed bandit (App. I.1)",
    description=__doc__.split("\n\n")[1],
    config=MabConfig,
    run=run,
    plot=plot,
)
