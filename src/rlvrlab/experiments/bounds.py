"""The theory's inequalities on random instances: every step, every run, counted.

Instances: tabular bandits, trajectory-level feature softmax, a multi-prompt contextual bandit
(batch level, Section 5) and token-level policies (tabular per position with EOS, tabular per
prefix, shared linear features), with random parameters and random pass/fail sets. Updates:
the exact normalized gradient, a random unit direction each step, and sampled REINFORCE
(normalized); fixed step sizes spread over three decades, some beyond the lemmas' premises.

Checked, with each instance's own constants (G_o, L_o, G_p, L_p, T_inf of rlvrlab.policies):
- Lemma 1 (27) / Lemma 6 (63): |Δ log-odds - Delta_mu·eta| <= (L_o + 8G_o²)·eta² at every step
  with eta <= 1/(2 sqrt L_o);
- Lemma 2 (30b), token level: Δ log-odds >= Delta_mu·eta - (L_p T_inf + G_p² T_psi1/(1-J))·eta²
  at every step with eta <= 1/sqrt(2 G_p² T_psi1), T_psi1 = T_inf/log 2 (valid for every policy);
- Theorem 1(a): J(K) <= the stagnation ceiling with C0 = Σ Delta_mu·eta and
  C0' = (L_o + 8G_o²) Σ eta², for every run whose steps all satisfy eta <= 1/(2 sqrt L_o);
- Theorem 1(b) / Theorem 3: with eta_k set inside (13a) (trajectory level) or (15a) (token
  level), J(K) >= the logistic lower bound (13b)/(15b) at every step.
And one measurement: the second-order expansion of App. F predicts the log-odds change better
with the factor ½ derived in rlvrlab.theory than with the printed coefficient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rlvrlab import plotting, theory
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_int, setting
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.simulate import Trajectory, random_instances, simulate
from rlvrlab.updates import make_direction, make_step_size

__all__ = ["BoundsConfig", "EXPERIMENT", "plot", "run"]


@dataclass(frozen=True)
class BoundsConfig:
    steps: int = setting(150, "steps of every run")
    runs_per_direction: int = setting(8, "fixed step sizes per (instance, direction), log-spaced")
    eta_decades: float = setting(3.0, "step sizes span [10^-decades, 2]·1/(2 sqrt L_o)")
    init_scale: float = setting(1.5, "random initial parameters ~ N(0, init_scale²)")
    seed: int = setting(0, "random instances, directions and samples")

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("runs_per_direction", self.runs_per_direction, 2)
        if not self.eta_decades > 0:
            raise ValueError(f"eta_decades: got {self.eta_decades}; allowed: a number > 0")

    @classmethod
    def quick(cls) -> BoundsConfig:
        return cls(steps=60, runs_per_direction=5)


def _random_direction(gen: torch.Generator) -> Callable:
    def fn(k: int, theta: torch.Tensor) -> torch.Tensor:
        w = torch.randn(theta.shape, generator=gen, dtype=theta.dtype)
        return w / w.norm(dim=1, keepdim=True)

    return make_direction("prescribed", fn=fn)


def _step_quantities(traj: Trajectory) -> dict[str, torch.Tensor]:
    m = traj.metrics
    return {k: m[k][:-1] for k in ("J", "delta_mu", "eta", "log_odds_change", "var_plus", "var_minus", "curv_plus", "curv_minus") if k in m}


def run(config: BoundsConfig, progress: Progress, workdir: Path) -> Result:
    gen = torch.Generator().manual_seed(config.seed)
    tally = {key: [0, 0] for key in ("lemma1", "lemma2", "ceiling", "logistic")}
    tightness = {"lemma1": 0.0, "lemma2": 0.0}  # largest |error| / allowance seen: how close to binding
    second = {"half_better": 0, "steps": 0}
    tables, per_instance = [], []
    insts = random_instances(gen)
    advance = progress.task("bounds: random instances", len(insts) * 4 * config.steps)
    for name, policy, reward, token in insts:
        c = policy.constants()
        cap = theory.smoothness_step_cap(c.L_o)
        R = config.runs_per_direction
        eta = cap * torch.logspace(-config.eta_decades, math.log10(2.0), R, dtype=torch.float64)
        row = {"instance": name, "G_o": c.G_o, "L_o": c.L_o}
        for dname, direction in (("normalized-gradient", "normalized-gradient"), ("random", _random_direction(gen)),
                                 ("reinforce", make_direction("reinforce", G=4))):
            theta0 = policy.init(R, scale=config.init_scale, generator=gen)
            traj = simulate(policy, reward, theta0, steps=config.steps, direction=direction, step_size=eta,
                            curvature=True, generator=gen, on_step=advance, fast=False)
            q = _step_quantities(traj)
            e, dm, change, J = q["eta"], q["delta_mu"], q["log_odds_change"], q["J"]
            ok = torch.isfinite(change) & torch.isfinite(dm)
            # Lemma 1 / Lemma 6.
            premise = (e <= cap) & ok
            band = theory.lemma1_band(e, c.L_o, c.G_o)
            held = (change - dm * e).abs() <= band * (1 + 1e-9) + 1e-12
            tally["lemma1"][0] += int(premise.sum())
            tally["lemma1"][1] += int((premise & held).sum())
            ratio = ((change - dm * e).abs() / band)[premise & (band > 0)]
            tightness["lemma1"] = max(tightness["lemma1"], float(ratio.max()) if ratio.numel() else 0.0)
            # Lemma 2 (token level), T_psi1 = T_inf / log 2.
            if token:
                T_psi1 = c.T_inf / math.log(2)
                p2 = (e <= theory.lemma2_step_cap(c.G_p, T_psi1)) & ok & (J < 1)
                lower = dm * e - theory.lemma2_penalty(e, J.clamp(max=1 - 1e-16), c.L_p, c.G_p, c.T_inf, T_psi1)
                tally["lemma2"][0] += int(p2.sum())
                tally["lemma2"][1] += int((p2 & (change >= lower - 1e-12)).sum())
                shortfall = ((dm * e - change) / (dm * e - lower))[p2 & (dm * e > lower)]
                tightness["lemma2"] = max(tightness["lemma2"], float(shortfall.max()) if shortfall.numel() else 0.0)
            # Theorem 1(a): ceiling for runs whose every step satisfies the premise.
            all_in = (e <= cap).all(0)
            C0 = torch.cumsum(dm.nan_to_num(0.0) * e, 0)
            C0p = (c.L_o + 8 * c.G_o**2) * torch.cumsum(e**2, 0)
            ceiling = theory.stagnation_ceiling(J[0].expand_as(C0), C0, C0p)
            below = traj.metrics["J"][1:] <= ceiling * (1 + 1e-12) + 1e-15
            tally["ceiling"][0] += int(all_in.sum()) * config.steps
            tally["ceiling"][1] += int((below & all_in).sum())
            # App. F, second order: coefficient ½ (derived) against 1 (printed), small steps.
            small = ok & (e <= 0.05 * cap)
            vdiff = q["var_plus"] - q["var_minus"]
            err_half = (change - theory.log_odds_change_second_order(e, dm, q["var_plus"], q["var_minus"], q["curv_plus"], q["curv_minus"])).abs()
            err_printed = (change - (dm * e + vdiff * e**2)).abs()
            second["steps"] += int(small.sum())
            second["half_better"] += int((small & (err_half <= err_printed)).sum())
            tables.append(trajectory_table(traj, {"instance": [name] * R, "direction": [dname] * R, "eta": eta}))
        # Theorem 1(b) / Theorem 3: steps inside (13a) / (15a).
        rule = make_step_size("condition-15a", T_psi1="uniform") if token else make_step_size("condition-13a")
        theta0 = policy.init(R, scale=config.init_scale, generator=gen)
        conv = simulate(policy, reward, theta0, steps=config.steps, direction="normalized-gradient", step_size=rule,
                        generator=gen, on_step=advance, fast=False)
        bound = theory.logistic_lower_bound(conv.metrics["J"][0].expand_as(conv.metrics["M"]), conv.metrics["M"])
        above = conv.metrics["J"] >= bound * (1 - 1e-12)
        tally["logistic"][0] += above.numel()
        tally["logistic"][1] += int(above.sum())
        tables.append(trajectory_table(conv, {"instance": [name] * R, "direction": ["inside (13a)/(15a)"] * R,
                                              "eta": [math.nan] * R}))
        row["J_gain_inside_condition"] = float((conv.metrics["J"][-1] - conv.metrics["J"][0]).mean())
        per_instance.append(row)

    def check(key: str, title: str) -> Check:
        n, held = tally[key]
        return Check(title, n > 0 and held == n, f"{held} of {n} held", "all (and at least one checked)")

    checks = [
        check("lemma1", "Lemma 1 (27) / Lemma 6 (63): |Δ log-odds - Delta_mu·eta| <= (L_o + 8G_o²)·eta²"),
        check("lemma2", "Lemma 2 (30b): token-level lower bound on Δ log-odds"),
        check("ceiling", "Theorem 1(a): J(K) below the stagnation ceiling"),
        check("logistic", "Theorems 1(b)/3: J(K) above the logistic bound (13b)/(15b) with steps inside (13a)/(15a)"),
        Check("App. F's second-order term: ½(Var+ - Var- + curvature)·eta² (derived) beats (Var+ - Var-)·eta² (printed)",
              second["steps"] > 0 and second["half_better"] >= 0.9 * second["steps"],
              f"closer at {second['half_better']} of {second['steps']} small steps", ">= 90% of steps with eta <= 0.05/(2 sqrt L_o)",
              kind="claim"),
    ]
    summary = {
        "checked": {k: {"steps_checked": v[0], "held": v[1]} for k, v in tally.items()},
        "largest_fraction_of_allowance_used": tightness,
        "second_order": second,
        "instances": per_instance,
    }
    return Result({"metrics": pa.concat_tables(tables, promote_options="permissive")}, summary, checks)


def plot(out: Path) -> list[str]:
    t = read_table(out / "metrics.parquet")
    cols = columns(t, ("step", "eta", "delta_mu", "log_odds_change", "J", "M"))
    direction = np.asarray(t.column("direction").to_pylist())
    fig, (a1, a2) = plotting.panels(2, width=5)
    fixed = np.isfinite(cols["eta"]) & np.isfinite(cols["log_odds_change"]) & np.isfinite(cols["delta_mu"])
    x = cols["delta_mu"][fixed] * cols["eta"][fixed]
    y = cols["log_odds_change"][fixed]
    a1.scatter(x, y, s=2, alpha=0.3, c=np.log10(cols["eta"][fixed]), cmap="viridis", rasterized=True)
    lim = np.nanmax(np.abs(np.concatenate([x, y])))
    a1.plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
    a1.set_xlabel("Δμ·η (first order)")
    a1.set_ylabel("realized Δ log-odds")
    a1.set_title("Lemma 1: realized change vs first order (colour: log10 η)", fontsize=8)
    conv = direction == "inside (13a)/(15a)"
    M, J = cols["M"][conv], cols["J"][conv]
    starts = np.where(cols["step"][conv] == 0, np.arange(len(J)), 0)
    J0 = J[np.maximum.accumulate(starts)]  # each row's run's J(0): rows are run-major
    bound = theory.logistic_lower_bound(J0, M).numpy()
    a2.scatter(bound, J, s=2, alpha=0.3, rasterized=True)
    a2.plot([0, 1], [0, 1], "k-", lw=0.8)
    a2.set_xlabel("logistic lower bound (13b)/(15b)")
    a2.set_ylabel("J(k)")
    a2.set_title("Steps inside (13a)/(15a): every point above the diagonal", fontsize=8)
    fig.suptitle("The theory's inequalities on random instances")
    return [plotting.save(fig, out / "bounds.png")]


EXPERIMENT = Experiment(
    name="bounds",
    title="Lemmas 1-2 and Theorems 1 and 3 on random instances",
    description=__doc__.split("\n\n")[1],
    config=BoundsConfig,
    run=run,
    plot=plot,
)
