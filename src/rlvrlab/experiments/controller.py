"""A learning rate chosen by the theory, against fixed rates, on the contextual token bandit.

Contenders, each on the same instances (C prompts sharing θ: every cell is a multi-prompt
instance), lengths T and initial J0, for a fixed number of steps with exact expected updates:

    grpo-best        GRPO at the best fixed rate of a grid, chosen per cell (an oracle)
    grpo-typical     GRPO at one typical rate for every cell
    dr-grpo          Dr. GRPO at the typical rate (constant normalizer: the largest T)
    gap-adaptive     GRPO's direction, eta_k = fraction · the second-order critical step along it,
                     capped by (18): one setting for every cell, no retuning
    prompt-adaptive  §7: each prompt's contribution scaled to its own critical step, typical rate
    cross-prompt     GRPO's direction, the whole step scaled so that no prompt in the batch is pushed
                     past its own threshold: eta_k = fraction · the smallest over the prompts the step
                     helps of the exact step at which the prompt's log-odds gain turns negative
                     (rlvrlab.simulate.critical.cross_prompt_step_size), capped at the grid's largest rate
    capped-line      GRPO's direction, the step along it with the largest exact gain of the objective GRPO
                     ascends, Σ_c 2·arcsin(√J_c), among the steps that lower no prompt's log J_c by
                     more than `line_max_loss`
                     (rlvrlab.simulate.critical.capped_line_step_size), scanned up to the grid's largest rate

Outcomes per run: final J, the first step with J >= `target_J` (∞ if never; J is read at every
step, the trajectories kept are thinned to about 50 rows), the number of
prompts collapsed onto a wrong token during training (J_c ends below 0.01 from above it) and of
prompts that never started (J_c below 0.01 throughout). Each adaptive contender is compared with the
oracle cell by cell: the same final J (within 0.01) and steps to `target_J` within 1.5x of the
oracle's (where the oracle never reaches the target, a contender that never does either matches it). And per cell, the critical rate of fixed-rate
GRPO measured as in `phase` (upper edge of the rates whose final J reaches `target_J`, on a log grid
spanning `lrs`; rlvrlab.analysis.critical_rate), against the rate the second-order analysis predicts
at the start (rlvrlab.simulate.instances.predicted_critical_rates): the step at which the objective's
second-order log-odds change turns negative along GRPO's update, and the smallest such step over
the prompts (prompt level). Their ratios are reported; where the second order predicts no
threshold (Var- <= Var+), the prediction is infinite and is said so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rlvrlab import _checks, plotting
from rlvrlab.analysis.stats import critical_rate
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.integrations.sweep import BACKENDS, run_sweep
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.simulate import Trajectory, simulate
from rlvrlab.simulate.critical import capped_line_step_size, cross_prompt_step_size
from rlvrlab.simulate.instances import initial_theta, predicted_critical_rates, prompt_outcomes, token_bandit
from rlvrlab.updates import make_direction, make_step_size

__all__ = ["CONTENDERS", "ControllerConfig", "EXPERIMENT", "controller_cell", "plot", "run"]

CONTENDERS = ("grpo-best", "grpo-typical", "dr-grpo", "gap-adaptive", "prompt-adaptive", "cross-prompt", "capped-line")
ADAPTIVE = ("gap-adaptive", "prompt-adaptive", "cross-prompt", "capped-line")


@dataclass(frozen=True)
class ControllerConfig:
    lengths: tuple[int, ...] = setting((2, 8, 32), "response lengths T")
    J0s: tuple[float, ...] = setting((0.2, 0.5), "initial mean success rates")
    seeds: int = setting(3, "random instances per (T, J0)")
    first_seed: int = setting(0, "the instances are first_seed ... first_seed + seeds - 1 (other instances: a held-out score)")
    steps: int = setting(300, "training steps")
    lrs: tuple[float, ...] = setting((1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0), "GRPO's grid for grpo-best")
    typical_lr: float = setting(10.0, "the one rate of grpo-typical, dr-grpo and prompt-adaptive")
    adaptive_fraction: float = setting(0.5, "gap-adaptive and prompt-adaptive: fraction of the critical step")
    cross_fraction: float = setting(0.5, "cross-prompt: fraction of the smallest per-prompt critical step")
    line_max_loss: float = setting(2.0, "capped-line: the most a step may lower any prompt's log J_c (chosen on instances 0-2)")
    target_J: float = setting(0.95, "success rate a run should reach")
    prompts: int = setting(40, "prompts sharing the parameters")
    dim: int = setting(5, "context dimension")
    vocab: int = setting(4, "tokens")
    rho: float = setting(0.5, "pass with at least ⌈ρT⌉ right tokens")
    bisection: int = setting(4, "bisection steps for the measured critical rate")
    backend: str = setting("local", "sweep backend: local or ray")
    workers: int = setting(2, "sweep worker processes")

    def __post_init__(self) -> None:
        for name in ("seeds", "steps", "prompts", "dim", "workers"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("vocab", self.vocab, 2)
        check_positive_int("bisection", self.bisection, 0)
        check_positive_int("first_seed", self.first_seed, 0)
        check_positive_floats("line_max_loss", (self.line_max_loss,))
        check_positive_floats("lrs", self.lrs)
        check_positive_floats("typical_lr", (self.typical_lr,))
        if not 0 < self.cross_fraction <= 1:
            raise ValueError(f"cross_fraction: got {self.cross_fraction}; allowed: a number in (0, 1]")
        for T in self.lengths:
            check_positive_int("lengths", T)
        for J0 in self.J0s:
            if not 0 < J0 < 1:
                raise ValueError(f"J0s: got {J0}; allowed: numbers in (0, 1)")
        _checks.choose("backend", self.backend, BACKENDS)

    @classmethod
    def quick(cls) -> ControllerConfig:
        return cls(lengths=(2, 8), J0s=(0.3,), seeds=1, steps=120, prompts=24, lrs=(1.0, 10.0, 100.0, 1000.0), bisection=2)


def _outcome(traj, target: float) -> dict[str, list]:
    J = traj.metrics["J"].numpy()
    hit = J >= target
    first = [int(traj.step[np.argmax(hit[:, r])]) if hit[:, r].any() else math.inf for r in range(J.shape[1])]
    return {"final_J": J[-1].tolist(), "steps_to_target": first, **prompt_outcomes(traj)}


def controller_cell(params: dict) -> dict[str, pa.Table]:
    """All contenders on one (T, J0, instance), plus GRPO's measured and predicted critical rates."""
    T, J0, seed = params["T"], params["J0"], params["seed"]
    policy, reward, beta = token_bandit(seed, T, prompts=params["prompts"], dim=params["dim"], vocab=params["vocab"], rho=params["rho"])
    theta0 = initial_theta(policy, reward, beta, J0)
    model = policy.bind(reward)
    grpo = make_direction("expected", preset="grpo")
    target, steps, typical = params["target_J"], params["steps"], params["typical_lr"]
    rows: dict[str, list] = {"contender": [], "lr": [], "final_J": [], "steps_to_target": [], "collapsed_prompts": [],
                             "never_started_prompts": []}
    trajectories: list[pa.Table] = []

    def add(name: str, lrs: list[float], trajs) -> None:
        full, traj = trajs
        out = _outcome(full, target)
        rows["contender"] += [name] * len(lrs)
        rows["lr"] += lrs
        for k, v in out.items():
            rows[k] += v
        trajectories.append(trajectory_table(traj, {"contender": [name] * len(lrs), "lr": lrs}))

    every = max(1, steps // 50)
    kept = [i for i in range(steps + 1) if i % every == 0 or i == steps]

    def train(direction, step, R: int = 1):  # every step recorded, for the steps to the target; ~50 rows kept
        traj = simulate(policy, reward, theta0.expand(R, -1).clone(), steps=steps, direction=direction, step_size=step,
                        per_prompt=True, record_every=1)
        thin = {k: v[kept] for k, v in traj.metrics.items()}
        return traj, Trajectory(traj.step[kept], thin, {k: v[kept] for k, v in traj.prompt_metrics.items()}, traj.theta,
                                traj.constants)

    lrs = list(params["lrs"])
    add("grpo-grid", lrs, train(grpo, torch.tensor(lrs, dtype=torch.float64), len(lrs)))
    add("grpo-typical", [typical], train(grpo, typical))
    add("dr-grpo", [typical], train(make_direction("expected", preset="dr-grpo", norm=float(params["norm"])), typical))
    add("gap-adaptive", [math.nan], train(grpo, make_step_size("gap-adaptive", fraction=params["adaptive_fraction"])))
    add("prompt-adaptive", [typical], train(make_direction("prompt-adaptive", preset="grpo", lr=typical,
                                                           fraction=params["adaptive_fraction"]), typical))
    add("cross-prompt", [math.nan], train(grpo, cross_prompt_step_size(fraction=params["cross_fraction"], eta_max=max(params["lrs"]))))
    add("capped-line", [math.nan], train(grpo, capped_line_step_size(max_loss=params["line_max_loss"], eta_max=max(params["lrs"]))))
    # grpo-best: the grid's best final J (ties: fewer steps to the target)
    grid = [i for i, c in enumerate(rows["contender"]) if c == "grpo-grid"]
    best = min(grid, key=lambda i: (-rows["final_J"][i], rows["steps_to_target"][i]))
    for k in rows:
        rows[k].append("grpo-best" if k == "contender" else rows[k][best])

    # measured critical rate (phase's criterion, on phase's log grid) and the second-order predictions at the start
    def converged(rates: list[float]) -> np.ndarray:
        traj = simulate(policy, reward, theta0.expand(len(rates), -1).clone(), steps=steps, direction=grpo,
                        step_size=torch.tensor(rates, dtype=torch.float64), record_every=max(1, steps // 50))
        return traj.metrics["J"][-1].numpy() >= target

    log_grid = np.geomspace(min(lrs), max(lrs), len(lrs)).tolist()
    measured = critical_rate(log_grid, converged(log_grid), lambda lr: bool(converged([lr])[0]), bisection=params["bisection"]).rate
    pred_obj, pred_prompt = predicted_critical_rates(model, theta0, "grpo")
    n = len(rows["contender"])
    rows.update(measured_crit=[measured] * n, predicted_crit_objective=[pred_obj] * n, predicted_crit_prompt=[pred_prompt] * n)
    return {"trajectories": pa.concat_tables(trajectories, promote_options="permissive"), "outcomes": pa.table(rows)}


def run(config: ControllerConfig, progress: Progress, workdir: Path) -> Result:
    base = {k: getattr(config, k) for k in ("steps", "typical_lr", "adaptive_fraction", "cross_fraction", "line_max_loss",
                                              "target_J", "prompts", "dim", "vocab", "rho", "bisection")}
    base.update(lrs=list(config.lrs), norm=float(max(config.lengths)))
    cells = [dict(base, T=T, J0=J0, seed=s) for T in config.lengths for J0 in config.J0s
             for s in range(config.first_seed, config.first_seed + config.seeds)]
    tables = run_sweep(controller_cell, cells, workdir / "sweep", backend=config.backend, workers=config.workers,
                       on_cell=progress.task("controller: (T, J0, instance) cells", len(cells)))
    table = tables["outcomes"]
    cols = columns(table, ("final_J", "steps_to_target", "collapsed_prompts", "never_started_prompts", "measured_crit",
                           "predicted_crit_objective", "predicted_crit_prompt", "T", "J0", "seed"))
    who = np.asarray(table.column("contender").to_pylist())
    stats = {}
    for c in CONTENDERS:
        sel = who == c
        steps = cols["steps_to_target"][sel]
        stats[c] = {"mean_final_J": float(cols["final_J"][sel].mean()),
                    "reached_target": float(np.isfinite(steps).mean()),
                    "median_steps_to_target": float(np.median(steps)) if np.isfinite(steps).any() else math.inf,
                    "runs_with_collapsed_prompts": float((cols["collapsed_prompts"][sel] > 0).mean()),
                    "runs_with_prompts_never_started": float((cols["never_started_prompts"][sel] > 0).mean())}
    one = who == "grpo-best"  # one row per cell
    oracle_J, oracle_steps = cols["final_J"][one], cols["steps_to_target"][one]
    vs_oracle = {}
    for c in ADAPTIVE:
        sel = who == c  # one row per cell, in the oracle's cell order (controller_cell writes each once)
        dJ = cols["final_J"][sel] - oracle_J
        with np.errstate(invalid="ignore"):
            ratio = np.where(np.isfinite(oracle_steps), cols["steps_to_target"][sel] / oracle_steps, np.nan)
        same_J = dJ >= -0.01
        fast = cols["steps_to_target"][sel] <= 1.5 * oracle_steps  # inf <= inf: where neither reaches the target, a match
        vs_oracle[c] = {"final_J_minus_oracle": dJ.tolist(), "steps_over_oracle": ratio.tolist(),
                        "cells_same_final_J": float(same_J.mean()), "cells_steps_within_1.5x": float(fast.mean()),
                        "cells_both": float((same_J & fast).mean()),
                        "median_steps_over_oracle": float(np.median(np.where(np.isfinite(ratio), ratio, np.inf)))}

    def ratio(pred: np.ndarray) -> np.ndarray:  # measured / predicted where both are finite
        meas = cols["measured_crit"][one]
        ok = np.isfinite(meas) & np.isfinite(pred) & (pred > 0)
        return np.where(ok, meas / np.where(ok, pred, 1.0), np.nan)

    ratio_obj = ratio(cols["predicted_crit_objective"][one])
    ratio_prompt = ratio(cols["predicted_crit_prompt"][one])
    no_prediction = int((~np.isfinite(cols["predicted_crit_objective"][one])).sum())
    no_measurement = int((~np.isfinite(cols["measured_crit"][one])).sum())
    ad, best, typ = stats["gap-adaptive"], stats["grpo-best"], stats["grpo-typical"]
    checks = [
        Check("gap-adaptive (one setting) matches the best fixed rate chosen per cell", ad["mean_final_J"] >= best["mean_final_J"] - 0.01,
              f"mean final J: gap-adaptive {ad['mean_final_J']:.3f}, grpo-best {best['mean_final_J']:.3f}, grpo-typical {typ['mean_final_J']:.3f}",
              "within 0.01 of grpo-best", kind="claim"),
        Check("gap-adaptive never collapses a prompt", ad["runs_with_collapsed_prompts"] == 0,
              f"runs with a prompt collapsed during training: gap-adaptive {ad['runs_with_collapsed_prompts']:.0%}, "
              f"grpo-best {best['runs_with_collapsed_prompts']:.0%}, grpo-typical {typ['runs_with_collapsed_prompts']:.0%}",
              "none", kind="claim"),
        Check("the second-order analysis at the start predicts GRPO's critical rate within a factor 10",
              bool(np.isfinite(ratio_obj).any() and np.all((ratio_obj[np.isfinite(ratio_obj)] > 0.1) & (ratio_obj[np.isfinite(ratio_obj)] < 10)))
              and no_prediction == 0,
              f"measured / predicted where both finite (objective level): {np.round(ratio_obj[np.isfinite(ratio_obj)], 2).tolist()}; "
              f"no threshold predicted in {no_prediction} cells, none measured in {no_measurement}; prompt level: "
              f"{np.round(ratio_prompt[np.isfinite(ratio_prompt)], 1).tolist()}",
              "a finite prediction within 0.1x-10x in every cell", kind="claim"),
    ]
    for c, what in (("cross-prompt", "no prompt pushed past its threshold"),
                    ("capped-line", f"the best exact step for GRPO's objective lowering no log J_c by more than {config.line_max_loss:g}")):
        vs, st = vs_oracle[c], stats[c]
        checks.append(Check(
            f"{c} ({what}) matches the best fixed rate per cell: the same final J and steps to J = {config.target_J} within "
            "1.5x of the oracle's",
            vs["cells_both"] == 1.0,
            f"cells with final J within 0.01 of the oracle's: {vs['cells_same_final_J']:.0%}; steps within 1.5x: "
            f"{vs['cells_steps_within_1.5x']:.0%} (median {vs['median_steps_over_oracle']:.3g}x); mean final J {c} "
            f"{st['mean_final_J']:.3f}, oracle {best['mean_final_J']:.3f}; median steps {st['median_steps_to_target']:g} vs "
            f"{best['median_steps_to_target']:g}", "both in every cell", kind="claim"))
    summary = {"contenders": stats, "vs_oracle": vs_oracle, "critical_rate_ratio_objective": ratio_obj.tolist(),
               "critical_rate_ratio_prompt_level": ratio_prompt.tolist(), "cells_without_predicted_threshold": no_prediction,
               "cells_without_measured_threshold": no_measurement, "cells": len(cells)}
    return Result({"metrics": tables["trajectories"], "outcomes": table}, summary, checks)


def plot(out: Path) -> list[str]:
    t = read_table(out / "outcomes.parquet")
    cols = columns(t, ("final_J", "steps_to_target", "T", "J0", "measured_crit", "predicted_crit_objective", "predicted_crit_prompt"))
    who = np.asarray(t.column("contender").to_pylist())
    fig, (a1, a2, a3) = plotting.panels(3, width=4.6)
    one = who == "grpo-best"  # one row per cell; every contender's rows are in the same cell order
    oracle_J, oracle_steps = cols["final_J"][one], cols["steps_to_target"][one]
    others = [c for c in CONTENDERS if c != "grpo-best"]
    for i, c in enumerate(others):
        sel = who == c
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, sel.sum())
        a1.scatter(i + jitter, cols["final_J"][sel] - oracle_J, s=14)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = cols["steps_to_target"][sel] / oracle_steps  # inf: the contender never reaches the target
        shown = np.isfinite(oracle_steps)  # cells where the oracle reaches the target
        a2.scatter(i + jitter[shown], np.clip(ratio[shown], 0.05, 200), s=14)
    for ax in (a1, a2):
        ax.set_xticks(range(len(others)), others, rotation=25, fontsize=7)
    a1.axhline(-0.01, color="k", lw=0.8, ls="--")
    a1.set_ylabel("final J − the best fixed rate's (every cell)")
    a1.set_title("within 0.01: above the dashed line", fontsize=8)
    a2.set_yscale("log")
    a2.axhline(1.5, color="k", lw=0.8, ls="--")
    a2.set_ylabel("steps to the target / the best fixed rate's")
    a2.set_title("cells where the oracle reaches the target; never: 200", fontsize=8)
    meas, pred = cols["measured_crit"][one], cols["predicted_crit_prompt"][one]
    finite = np.isfinite(meas) & np.isfinite(pred)
    if finite.any():
        a3.loglog(pred[finite], meas[finite], "o")
        lim = [min(pred[finite].min(), meas[finite].min()), max(pred[finite].max(), meas[finite].max())]
        a3.loglog(lim, lim, "k--", lw=0.8)
    a3.set_xlabel("predicted critical rate (second order, prompt level)")
    a3.set_ylabel("measured critical rate of fixed-rate GRPO")
    a3.set_title(f"{int((~finite).sum())} cells without a finite prediction or measurement", fontsize=8)
    fig.suptitle("Theory-guided step sizes against the best fixed rate per cell")
    return [plotting.save(fig, out / "controller.png")]


EXPERIMENT = Experiment(
    name="controller",
    title="A learning rate chosen by the theory against fixed rates",
    description=__doc__.split("\n\n")[1],
    config=ControllerConfig,
    run=run,
    plot=plot,
)
