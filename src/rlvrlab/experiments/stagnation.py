"""Stagnation below 100%: GRPO at fixed learning rates, against the form eq. (17)-(18) suggest.

GRPO's effective step along the Gradient Gap is α·Δμ·sqrt(J(1-J))/T (17) while the theory allows
about c·Δμ·(1-J)/T (18): the ratio α·sqrt(J/(1-J))/c grows without bound as J -> 1, so at a fixed α
the paper expects GRPO to stop improving near J* where the two meet,

    J* ≈ 1 / (1 + (α/c)²)   (rlvrlab.theory.grpo_plateau).

We train GRPO (exact expected updates, eq. 5) on the contextual token bandit at a grid of fixed
learning rates for many steps, measure the plateau J* (the mean J over the last tenth of the
run), fit c by least squares (rlvrlab.analysis.fit_plateau) and report how well the form fits.
On the same instances we run Dr. GRPO (at the same rates) and the gap-adaptive step size (one
setting for all), and report which of them stall: a run stalls when it ends below `target_J`
without gaining more than `progress_tol` over its last fifth. Each plateau is also split into the
prompts that converged (J_c > 0.99), those whose policy collapsed onto a wrong token during
training (J_c ends below 0.01 from above it) and those that never started (J_c below 0.01
throughout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rlvrlab import _checks, plotting, theory
from rlvrlab.analysis.stats import fit_plateau
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.integrations.sweep import BACKENDS, run_sweep
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.simulate import simulate
from rlvrlab.simulate.instances import initial_theta, prompt_outcomes, token_bandit
from rlvrlab.updates import make_direction, make_step_size

__all__ = ["EXPERIMENT", "StagnationConfig", "plot", "run", "stagnation_cell"]


@dataclass(frozen=True)
class StagnationConfig:
    T: int = setting(8, "response length")
    J0: float = setting(0.3, "initial mean success rate")
    lrs: tuple[float, ...] = setting((0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0), "fixed learning rates")
    steps: int = setting(800, "training steps")
    seeds: int = setting(4, "random instances")
    prompts: int = setting(40, "prompts sharing the parameters")
    dim: int = setting(5, "context dimension")
    vocab: int = setting(4, "tokens")
    rho: float = setting(0.5, "pass with at least ⌈ρT⌉ right tokens")
    adaptive_fraction: float = setting(0.5, "gap-adaptive: fraction of the critical step")
    target_J: float = setting(0.99, "a run that ends below this without progress has stalled")
    progress_tol: float = setting(1e-3, "progress over the last fifth below which a run has stopped")
    backend: str = setting("local", "sweep backend: local or ray")
    workers: int = setting(2, "sweep worker processes")

    def __post_init__(self) -> None:
        for name in ("T", "steps", "seeds", "prompts", "dim", "workers"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("vocab", self.vocab, 2)
        check_positive_floats("lrs", self.lrs)
        if not 0 < self.J0 < 1:
            raise ValueError(f"J0: got {self.J0}; allowed: a number in (0, 1)")
        _checks.choose("backend", self.backend, BACKENDS)

    @classmethod
    def quick(cls) -> StagnationConfig:
        return cls(lrs=(1.0, 10.0, 100.0, 1000.0), steps=200, seeds=2, prompts=24)


RULES = ("grpo", "dr-grpo", "gap-adaptive")


def stagnation_cell(params: dict) -> dict[str, pa.Table]:
    """One (rule, instance): the rule at every rate (or once, for gap-adaptive); per-run outcomes."""
    policy, reward, beta = token_bandit(params["seed"], params["T"], prompts=params["prompts"], dim=params["dim"],
                                    vocab=params["vocab"], rho=params["rho"])
    theta0 = initial_theta(policy, reward, beta, params["J0"])
    rule, lrs = params["rule"], list(params["lrs"])
    if rule == "gap-adaptive":
        direction = make_direction("expected", preset="grpo")
        step, lrs = make_step_size("gap-adaptive", fraction=params["adaptive_fraction"]), [math.nan]
    else:
        direction = make_direction("expected", preset=rule, **({"norm": float(params["T"])} if rule == "dr-grpo" else {}))
        step = torch.tensor(lrs, dtype=torch.float64)
    R = len(lrs)
    traj = simulate(policy, reward, theta0.expand(R, -1).clone(), steps=params["steps"], direction=direction,
                    step_size=step, per_prompt=True, record_every=max(1, params["steps"] // 100))
    J = traj.metrics["J"].numpy()  # (S, R)
    tail = max(1, len(J) // 10)
    fifth = max(1, len(J) // 5)
    plateau = J[-tail:].mean(0)
    gain = J[-1] - J[-fifth]
    stalled = (J[-1] < params["target_J"]) & (gain < params["progress_tol"])
    outcomes = pa.table({
        "lr": lrs, "plateau_J": plateau.tolist(), "final_J": J[-1].tolist(), "stalled": stalled.tolist(),
        **prompt_outcomes(traj),
        "converged_prompts": (traj.prompt_metrics["J"][-1].numpy() > 0.99).sum(1).tolist(),
        "mean_eta": traj.metrics["eta"][:-1].nanmean(0).tolist(),
    })
    return {"trajectories": trajectory_table(traj, {"lr": lrs}), "outcomes": outcomes}


def run(config: StagnationConfig, progress: Progress, workdir: Path) -> Result:
    base = {k: getattr(config, k) for k in ("T", "J0", "steps", "prompts", "dim", "vocab", "rho", "adaptive_fraction",
                                              "target_J", "progress_tol")}
    base["lrs"] = list(config.lrs)
    cells = [dict(base, rule=r, seed=s) for r in RULES for s in range(config.seeds)]
    tables = run_sweep(stagnation_cell, cells, workdir / "sweep", backend=config.backend, workers=config.workers,
                       on_cell=progress.task("stagnation: (rule, instance) cells", len(cells)))
    table = tables["outcomes"]
    cols = columns(table, ("lr", "plateau_J", "final_J", "stalled", "collapsed_prompts", "never_started_prompts"))
    rule = np.asarray(table.column("rule").to_pylist())
    g = rule == "grpo"
    c, r2 = fit_plateau(cols["lr"][g], cols["plateau_J"][g])
    stall = {r: float(cols["stalled"][rule == r].mean()) for r in RULES}
    collapsed = {r: float(cols["collapsed_prompts"][rule == r].mean()) for r in RULES}
    never = {r: float(cols["never_started_prompts"][rule == r].mean()) for r in RULES}
    below = float((cols["plateau_J"][g] < config.target_J).mean())
    checks = [
        Check("GRPO at a fixed rate plateaus below 100% (eq. 17-18)", below > 0,
              f"{below:.0%} of GRPO runs plateau below J = {config.target_J}", "some", kind="claim"),
        Check("The plateau follows J* = 1/(1 + (α/c)²)", bool(r2 > 0.8) if math.isfinite(r2) else False,
              f"c = {c:.3g}, R² = {r2:.2f}", "R² > 0.8", kind="claim"),
        Check("Dr. GRPO does not stall where GRPO does", stall["dr-grpo"] < stall["grpo"],
              f"stalled runs: Dr. GRPO {stall['dr-grpo']:.0%}, GRPO {stall['grpo']:.0%}", "fewer stalls than GRPO", kind="claim"),
        Check("The gap-adaptive step size does not stall", stall["gap-adaptive"] == 0,
              f"stalled runs: {stall['gap-adaptive']:.0%} (one setting, fraction {config.adaptive_fraction})", "none", kind="claim"),
    ]
    summary = {"fit": {"c": c, "r2": r2}, "stalled_fraction": stall, "mean_collapsed_prompts": collapsed,
               "mean_prompts_stuck_from_the_start": never, "plateaus_below_target": below,
               "note": "a plateau below 1 is made of prompts whose J ends below 0.01: collapsed during training "
                       "(J_c(0) >= 0.01) or never started (J_c(0) < 0.01: too little gradient to move)"}
    return Result({"metrics": tables["trajectories"], "outcomes": table}, summary, checks)


def plot(out: Path) -> list[str]:
    t = read_table(out / "outcomes.parquet")
    cols = columns(t, ("lr", "plateau_J", "collapsed_prompts", "seed", "final_J"))
    rule = np.asarray(t.column("rule").to_pylist())
    fig, (a1, a2) = plotting.panels(2, width=5)
    for r, marker in (("grpo", "o"), ("dr-grpo", "s")):
        sel = rule == r
        a1.semilogx(cols["lr"][sel], cols["plateau_J"][sel], marker, alpha=0.7, label=r)
        a2.semilogx(cols["lr"][sel], cols["collapsed_prompts"][sel], marker, alpha=0.7, label=r)
    g = rule == "grpo"
    c, r2 = fit_plateau(cols["lr"][g], cols["plateau_J"][g])
    xs = np.geomspace(cols["lr"][g].min(), cols["lr"][g].max(), 200)
    a1.semilogx(xs, theory.grpo_plateau(xs, c).numpy(), "k--", lw=1, label=f"1/(1+(α/c)²), c={c:.3g}, R²={r2:.2f}")
    ad = rule == "gap-adaptive"
    for v in cols["plateau_J"][ad]:
        a1.axhline(v, color="tab:green", lw=0.8, alpha=0.6)
    a1.plot([], [], color="tab:green", label="gap-adaptive (one setting)")
    a1.set_xlabel("learning rate α")
    a1.set_ylabel("plateau J* (last tenth of the run)")
    a1.legend(fontsize=7)
    a2.set_xlabel("learning rate α")
    a2.set_ylabel("prompts collapsed onto a wrong token")
    a2.legend(fontsize=7)
    fig.suptitle("Stagnation at a fixed learning rate (eq. 17-18)")
    return [plotting.save(fig, out / "stagnation.png")]


EXPERIMENT = Experiment(
    name="stagnation",
    title="Stagnation below 100%: GRPO's plateau against the learning rate",
    description=__doc__.split("\n\n")[1],
    config=StagnationConfig,
    run=run,
    plot=plot,
)
