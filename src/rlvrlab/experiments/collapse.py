"""Theorems 2 and 4: collapse from an overly large step despite a positive Gap Alignment (App. F).

The instances of App. F.1 (trajectory level) and App. F.2 (token level), built exactly as in the
proofs: three responses (tokens) o1, o-1, o-2 with features (G/2)·(0,1), (G/2)·(1,0),
(G/2)·(-1,0); only o1 (the all-o1 sequence of length T_inf at the token level) is correct;

    theta_0 = (eta/3)(-1, 0),   w_k = (1/3)((-1)^k·2, -delta),   fixed step eta,
    delta = eta·G/15 (F.1) or eta·G/10 (F.2).

The first coordinate oscillates, the second drifts so that the correct logit falls: J decreases at
every step, to 0, although the Gap Alignment never drops below eta·G²/30 (F.1) or
T·eta·G²/60 (F.2). The proofs give J(k) in closed form; the simulation must match it.

On the same instances, the Gradient Gap direction with a step inside (13a) (F.1) or (15a) (F.2)
converges, above the logistic lower bound (13b)/(15b).

Lipschitz constants: the paper states L_o = 0 for F.1; the score φ - E_π[φ] depends on theta, and
we use the valid L = G²/4 (see rlvrlab.policies.softmax). The windows of (52)/(16) are evaluated
with it; every eta used is inside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rlvrlab import plotting, theory
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.simulate import collapse_direction, collapse_instance, collapse_theta0, simulate
from rlvrlab.updates import make_step_size

__all__ = ["CollapseConfig", "EXPERIMENT", "plot", "run"]


@dataclass(frozen=True)
class CollapseConfig:
    G: float = setting(1.0, "score bound G_o (F.1) and G_p (F.2)")
    eta_fractions: tuple[float, ...] = setting((0.25, 0.5, 1.0), "collapse steps as fractions of the window's upper end 1/(2 sqrt(L + G²)) (F.1)")
    T_infs: tuple[int, ...] = setting((1, 2, 4, 8), "response lengths T_inf of the token-level instance (F.2)")
    steps: int = setting(10_000, "steps of every run")
    record_every: int = setting(20, "keep every n-th step")

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("record_every", self.record_every)
        check_positive_floats("G", (self.G,))
        check_positive_floats("eta_fractions", self.eta_fractions)
        if any(f > 1 for f in self.eta_fractions):
            raise ValueError(f"eta_fractions: got {self.eta_fractions}; allowed: fractions in (0, 1] (the theorem's window)")
        for T in self.T_infs:
            if not (isinstance(T, int) and 1 <= T <= 12):
                raise ValueError(f"T_infs: got {T}; allowed: integers in [1, 12] (3^T responses are enumerated)")

    @classmethod
    def quick(cls) -> CollapseConfig:
        return cls(steps=2_000, T_infs=(1, 2, 4), record_every=10)


def run(config: CollapseConfig, progress: Progress, workdir: Path) -> Result:
    G = config.G
    tables, checks, summary = [], [], {"instances": []}
    settings = [None, *config.T_infs]
    advance = progress.task("collapse: App. F instances", 2 * len(settings) * config.steps)
    for T in settings:
        policy, reward = collapse_instance(G, T)
        name = "F.1" if T is None else "F.2"
        c = policy.constants()
        Tn = 1 if T is None else T
        # Window of Thm 2 (52) / Thm 4 (16), with the instance's own L.
        s = c.L_o + c.G_o**2 if T is None else c.L_p * math.sqrt(Tn) + c.G_p**2 * Tn
        eta_max = 1 / (2 * math.sqrt(s))
        eta = torch.tensor([f * eta_max for f in config.eta_fractions], dtype=torch.float64)
        delta = theory.collapse_delta(eta, G, T)
        dm_q = eta * s / (60 if T is None else 120)  # the largest Delta_mu_q whose window contains eta
        window = [(theory.collapse_window_trajectory(float(q), c.L_o, c.G_o) if T is None
                   else theory.collapse_window_token(float(q), c.L_p, c.G_p, Tn)) for q in dm_q]
        in_window = all(w.valid and w.low <= float(e) * (1 + 1e-12) and float(e) <= w.high * (1 + 1e-12) for w, e in zip(window, eta))
        theta0 = collapse_theta0(eta)
        traj = simulate(policy, reward, theta0, steps=config.steps, direction=collapse_direction(delta), step_size=eta,
                        record_every=config.record_every, on_step=advance)
        m = traj.metrics
        J = m["J"]
        closed = theory.collapse_J(eta, delta, G, traj.step.to(torch.float64).unsqueeze(1), T)  # (S, R)
        closed_err = ((J - closed).abs() / closed).max().item()
        proof_bound = theory.collapse_alignment_bound(eta, G, T)
        dm = m["delta_mu"][:-1]
        label = name if T is None else f"{name} (T_inf={T})"
        # J decreases at every recorded row, and the closed form (matched above) decreases at every
        # step to the limit 0: its exponent delta·eta·G/6 is positive.
        decreasing = bool((J[1:] < J[:-1]).all())
        checks += [
            Check(f"{label}: eta inside the collapse window ({'52' if T is None else '16'}) with Delta_mu_q = eta(L+G²)/{60 if T is None else 120}",
                  in_window, f"eta = {[round(float(e), 5) for e in eta]}, window upper end {eta_max:.5f}", "every eta in its window"),
            Check(f"{label}: J(k) equals the proof's closed form", closed_err < 1e-10,
                  f"max relative error {closed_err:.1e}", "< 1e-10"),
            Check(f"{label}: J strictly decreasing, towards 0", decreasing and bool((delta * eta > 0).all()),
                  f"J(0) = {J[0, 0].item():.3g}, J(K) = {[f'{x:.2e}' for x in J[-1].tolist()]}",
                  "J(k) < J(k-1) at every recorded step; closed-form limit 0"),
            Check(f"{label}: Gap Alignment stays above the proof's bound {'eta G²/30' if T is None else 'T eta G²/60'} (>= Delta_mu_q)",
                  bool((dm >= proof_bound * (1 - 1e-12)).all() and (proof_bound >= dm_q).all()),
                  f"min Delta_mu / bound = {(dm / proof_bound).min().item():.3f}", ">= 1"),
        ]
        tables.append(trajectory_table(traj, {"instance": [name] * len(eta), "T_inf": [Tn] * len(eta), "arm": ["collapse"] * len(eta),
                                              "eta_fraction": list(config.eta_fractions), "delta_mu_bound": proof_bound}))

        # The converging arm: w along the Gradient Gap, eta_k inside (13a) / (15a).
        rule = make_step_size("condition-13a") if T is None else make_step_size("condition-15a", T_psi1="uniform")
        conv = simulate(policy, reward, theta0, steps=config.steps, direction="gap", step_size=rule,
                        record_every=config.record_every, on_step=advance)
        mc = conv.metrics
        bound = theory.logistic_lower_bound(mc["J"][0], mc["M"])
        above = mc["J"] >= bound * (1 - 1e-12)
        checks.append(Check(f"{label}: gap direction with eta inside {'(13a)' if T is None else '(15a)'} stays above {'(13b)' if T is None else '(15b)'}",
                            bool(above.all()) and bool((mc["J"][-1] > mc["J"][0]).all()),
                            f"J(K) = {[round(x, 4) for x in mc['J'][-1].tolist()]} >= bound {[round(x, 4) for x in bound[-1].tolist()]}",
                            "J(k) >= logistic bound at every step, J increasing"))
        tables.append(trajectory_table(conv, {"instance": [name] * len(eta), "T_inf": [Tn] * len(eta), "arm": ["converge"] * len(eta),
                                              "eta_fraction": [math.nan] * len(eta), "delta_mu_bound": [math.nan] * len(eta)}))
        summary["instances"].append({
            "instance": label, "G": G, "L": c.L_o if T is None else c.L_p, "eta": eta.tolist(),
            "collapse_J_final": J[-1].tolist(), "converge_J_final": mc["J"][-1].tolist(),
            "min_delta_mu_collapse": dm.min(0).values.tolist(),
        })
    return Result({"metrics": pa.concat_tables(tables, promote_options="permissive")}, summary, checks)


def plot(out: Path) -> list[str]:
    t = read_table(out / "metrics.parquet")
    cols = columns(t, ("run", "step", "T_inf", "J", "delta_mu", "delta_mu_bound", "M", "eta_fraction"))
    inst = np.asarray(t.column("instance").to_pylist())
    arm = np.asarray(t.column("arm").to_pylist())
    fig, (a1, a2, a3) = plotting.panels(3)
    groups = sorted({(i, int(T)) for i, T in zip(inst, cols["T_inf"])})
    cmap = plotting.plt.get_cmap("viridis")
    for gi, (name, T) in enumerate(groups):
        color = cmap(gi / max(len(groups) - 1, 1))
        label = "F.1" if name == "F.1" else f"F.2, T∞={T}"
        base = (inst == name) & (cols["T_inf"] == T)
        col_sel = base & (arm == "collapse")
        top = np.nanmax(cols["eta_fraction"][col_sel])
        sel = col_sel & (cols["eta_fraction"] == top)
        a1.semilogy(cols["step"][sel], cols["J"][sel], color=color, label=label)
        ok = sel & np.isfinite(cols["delta_mu"])
        a2.plot(cols["step"][ok], cols["delta_mu"][ok] / cols["delta_mu_bound"][ok], color=color, label=label)
        conv = base & (arm == "converge") & (cols["run"] == cols["run"][sel][0])
        a3.plot(cols["M"][conv], cols["J"][conv], color=color, label=label)
        J0 = cols["J"][conv][0]
        Ms = cols["M"][conv]
        a3.plot(Ms, theory.logistic_lower_bound(J0, Ms).numpy(), color=color, ls="--", lw=0.8)
    a1.set_xlabel("step k")
    a1.set_ylabel("J(k), collapse step at the window's top")
    a2.set_xlabel("step k")
    a2.set_ylabel("Δμ(k) / proof's lower bound")
    a2.axhline(1, color="k", lw=0.8)
    a3.set_xlabel("cumulative alignment M(k)")
    a3.set_ylabel("J(k), gap direction inside (13a)/(15a)")
    for ax in (a1, a2, a3):
        ax.legend(fontsize=7)
    fig.suptitle("Theorems 2 and 4: positive alignment, collapse from a large step; convergence inside the condition (dashed: bound)")
    return [plotting.save(fig, out / "collapse.png")]


EXPERIMENT = Experiment(
    name="collapse",
    title="Theorems 2 and 4: collapse with positive Gap Alignment (App. F)",
    description=__doc__.split("\n\n")[1],
    config=CollapseConfig,
    run=run,
    plot=plot,
)
