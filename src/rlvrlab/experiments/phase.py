"""Phase diagrams of the step size: final J over (learning rate × response length T).

For REINFORCE, Dr. GRPO, GRPO and GRPO without its 1/|o| (`grpo-sum`), on the contextual token
bandit (rlvrlab.simulate.instances), each cell (preset, T, J0, instance) trains at every learning
rate of a log grid for a fixed number of steps, with the preset's exact expected update (eq. 4,
eq. 5, Dr. GRPO's with a constant normalizer) or its sampled update (G responses per prompt).

Criterion: a run converges when its objective J (the mean over prompts) ends at or above
`target_J`. Too small a rate converges too slowly for the step budget; too large a rate
overshoots: some prompts' policies collapse onto wrong tokens, from which no gradient returns
(J_c = 0 gives ∇J_c = 0), and J stalls below the target. The critical learning rate of a cell is
the upper edge of its convergence window: the first failing rate above the first converging one,
refined by bisection in log(rate) against its converging neighbour (rlvrlab.analysis.critical_rate).
Cells that converge at every rate of the grid, or at none, are censored and left out of the fit.

The cells of one (preset, T, instance) differ only in J0 and are computed together (phase_group):
their grids in one batched simulate, their bisections advancing together, each step's runs in one
simulate that keeps only where they end; the results are those of the cells one at a time.

Predicted against measured (issue 14): in every cell the critical rate is also predicted from the
run's own statistics (rlvrlab.simulate.critical.predict_critical_rate): along `predict_steps` steps
of the cross-prompt controller on the cell's instance (a safe rate: half the smallest per-prompt
critical step at each step; the preset's expected update, whichever `update` trains), each
prompt's exact critical step along the update — the step at which its log-odds gain turns
negative — is recorded, and the prediction is

    min    the smallest over the prompts and the steps (the issue's definition)
    tolerant  the (m + 1)-th smallest over the prompts, m = ⌊C·(1 − target_J)⌋ the prompts the
           criterion can lose, minimized over the steps

beside the second-order prediction at the start (rlvrlab.simulate.instances.predicted_critical_rates,
prompt level). "Measured" is the critical rate above (the convergence window's upper edge: final
mean J >= target_J after `steps` steps at a fixed rate). Each prediction's ratio to it, per cell
with a finite measurement, and the share of cells within 1.5× and 2× are reported either way.

The theory's prediction (eq. 17 vs 18): with T_psi1 ∝ T, REINFORCE's and Dr. GRPO's effective
step grows like T relative to what (15a)/(18) allow, so their critical rate should fall like
1/T; GRPO divides by |o| and its critical rate should be roughly flat in T. We fit the slope of
log(critical rate) on log T with a 95% t-interval (rlvrlab.analysis.loglog_slope) within
instances — an intercept per instance, since the instance shifts a cell's rate at every T (the
pooled fit, which leaves that shift in the residuals, is reported beside it) — either way; a check decides only when its interval is at most `max_ci_width` wide (wider: the
check is marked not enough data, whichever way it came out). The contrast itself is tested
directly: the slope of log(rate_GRPO / rate_REINFORCE) on log T over the cells paired by
(T, J0, instance), with its t-interval, should contain 1 and exclude 0.

Which slopes are independent evidence. Every response has exactly T tokens here, and the
expected update is linear in the advantage weights, so an update that is another one times a
function of T alone has a critical rate that is the other's times that function, and a slope
shifted by a known amount: Dr. GRPO with a constant normalizer N is REINFORCE / N (RLOO in
expectation is REINFORCE itself), so its slope is REINFORCE's to the bisection's precision — not
a second test. `grpo-sum` (GRPO's mean-std advantage, responses summed over tokens: no 1/|o|) is
unnormalized with a different per-prompt weighting (1/σ_c amplifies nearly lost and nearly
solved prompts), so its −1 is a test independent of REINFORCE's; it is T × GRPO, so its slope is
GRPO's − 1 and not independent of GRPO's 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch

from rlvrlab import _checks, plotting
from rlvrlab.analysis.stats import critical_rates, loglog_slope
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.integrations.sweep import run_sweep
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.policies.independent import IndependentSoftmax
from rlvrlab.simulate import Trajectory, simulate
from rlvrlab.simulate.critical import predict_critical_rate
from rlvrlab.simulate.instances import initial_theta, predicted_critical_rates, token_bandit
from rlvrlab.updates import PRESETS, get_preset, make_direction

__all__ = ["EXPERIMENT", "VARIANTS", "PhaseConfig", "phase_cell", "phase_cells", "phase_group", "phase_groups", "plot", "run",
           "slope_difference"]

THEORY_SLOPE = {"reinforce": -1.0, "rloo": -1.0, "dr-grpo": -1.0, "grpo": 0.0, "dapo": 0.0, "gspo": 0.0, "grpo-sum": -1.0}

# Update rules phase adds to rlvrlab.updates.PRESETS: a preset with fields overridden.
VARIANTS: dict[str, tuple[str, dict]] = {
    "grpo-sum": ("grpo", {"aggregation": "seq-mean-token-sum"}),  # GRPO's advantage without 1/|o|: unnormalized
}


def _preset(name: str, drgrpo_norm: float) -> tuple[str, dict]:
    """(the rlvrlab.updates preset, its overrides) of an update rule of phase."""
    base, overrides = VARIANTS.get(name, (name, {}))
    return base, dict(overrides, **({"norm": drgrpo_norm} if base == "dr-grpo" else {}))


@dataclass(frozen=True)
class PhaseConfig:
    presets: tuple[str, ...] = setting(("reinforce", "dr-grpo", "grpo", "grpo-sum"),
                                       "update rules (rlvrlab.updates.presets, or grpo-sum: GRPO without 1/|o|)")
    lengths: tuple[int, ...] = setting((1, 2, 4, 8, 16, 32), "response lengths T")
    J0s: tuple[float, ...] = setting((0.2, 0.5), "initial mean success rates")
    lr_min: float = setting(0.1, "smallest learning rate of the grid")
    lr_max: float = setting(1e5, "largest learning rate of the grid")
    lr_points: int = setting(13, "learning rates in the log-spaced grid")
    steps: int = setting(150, "training steps per run")
    seeds: int = setting(8, "random instances (contexts, β) per cell (8: every slope's 95% CI at most 0.5 wide)")
    prompts: int = setting(40, "prompts C sharing the parameters")
    dim: int = setting(5, "context dimension d")
    vocab: int = setting(4, "tokens V")
    rho: float = setting(0.5, "a response passes with at least ⌈ρT⌉ right tokens")
    update: Literal["expected", "sampled"] = setting("expected", "the preset's exact expected update, or sampled with G responses")
    G: int = setting(8, "responses per prompt for sampled updates")
    drgrpo_norm: float = setting(0.0, "Dr. GRPO's constant normalizer; 0 means the largest T of the grid")
    target_J: float = setting(0.9, "a run converges when its final mean J reaches this")
    max_ci_width: float = setting(0.5, "a slope check decides only when its 95% CI is at most this wide (else: not enough data)")
    bisection: int = setting(5, "bisection steps refining each critical rate")
    predict_steps: int = setting(10, "steps of the safe (cross-prompt) run the critical rate is predicted from; 0: no prediction")
    predict_fraction: float = setting(0.5, "the safe run's step: this fraction of the smallest per-prompt critical step")
    backend: Literal["local", "ray"] = setting("local", "sweep backend")
    workers: int = setting(2, "sweep worker processes")

    def __post_init__(self) -> None:
        for name in ("lr_points", "steps", "seeds", "prompts", "dim", "workers"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("vocab", self.vocab, 2)
        check_positive_int("G", self.G, 2)
        check_positive_int("bisection", self.bisection, 0)
        check_positive_int("predict_steps", self.predict_steps, 0)
        if not 0 < self.predict_fraction <= 1:
            raise ValueError(f"predict_fraction: got {self.predict_fraction}; allowed: a number in (0, 1]")
        check_positive_floats("lr_min/lr_max", (self.lr_min, self.lr_max))
        if self.lr_max <= self.lr_min:
            raise ValueError(f"lr_max: got {self.lr_max}; allowed: a number > lr_min = {self.lr_min}")
        _checks.positive("max_ci_width", self.max_ci_width)
        for p in self.presets:
            _checks.choose("presets", p, {**PRESETS, **VARIANTS})
        for T in self.lengths:
            check_positive_int("lengths", T)
        for J0 in self.J0s:
            if not 0 < J0 < 1:
                raise ValueError(f"J0s: got {J0}; allowed: numbers in (0, 1)")
        if len(set(self.J0s)) != len(self.J0s):
            raise ValueError(f"J0s: got {list(self.J0s)}; allowed: distinct numbers in (0, 1)")
        if not 0 < self.target_J < 1:
            raise ValueError(f"target_J: got {self.target_J}; allowed: a number in (0, 1)")
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho: got {self.rho}; allowed: a number in (0, 1]")

    @classmethod
    def quick(cls) -> PhaseConfig:
        return cls(lengths=(1, 4, 16), J0s=(0.3,), lr_points=9, steps=60, seeds=2, prompts=24, bisection=3, predict_steps=3)
    # quick's slope intervals are 1-2 wide: its slope checks read "not enough data"


def _direction(params: dict):
    preset, overrides = _preset(params["preset"], params["drgrpo_norm"])
    if params["update"] == "expected":
        return make_direction("expected", preset=preset, **overrides)
    return make_direction("preset", preset=preset, G=params["G"], **overrides)


def _train(params: dict, policy, reward, theta0: torch.Tensor, lrs: list[float], *, measure: bool = True):
    """One batched simulate, run r from theta0[r] at rate lrs[r]: the final J of each run (R,) and the
    trajectory (measure=False: only where the runs end)."""
    gen = torch.Generator().manual_seed(1000 + params["seed"])
    every = max(1, params["steps"] // 50) if measure else params["steps"]
    traj = simulate(policy, reward, theta0, steps=params["steps"], direction=_direction(params),
                    step_size=torch.tensor(lrs, dtype=torch.float64), generator=gen, record_every=every, measure=measure)
    return traj.metrics["J"][-1].numpy(), traj


def _runs(traj, runs: list[int]):
    """The trajectory of some of a batch's runs (its recorded metrics)."""
    return Trajectory(traj.step, {k: v[:, runs] for k, v in traj.metrics.items()}, {}, traj.theta[runs], traj.constants)


# A run's last bits depend on where it sits in its batch: MKL computes the rows of a matrix product
# in blocks of TILE and the rows left over one by one, as it computes a product of one row, while a
# product of 2 to TILE - 1 rows takes yet another path. Near a convergence window's edge a run's
# outcome can turn on those bits (batching the default diagram's runs naively moves 15 of its 108
# critical rates), so batched runs sit where they would in the cell's own batches: TILE·⌊L/TILE⌋ of
# its L grid rates in blocks, the rest left over, and each bisection run left over after a block.
# With that, the tables are those of the cells computed one at a time, bit for bit. Only the
# products with the features depend on a row's place (every other operation is row by row, and
# TILE·C·T·V entries leave the vectorized loops' tails where they were), so a bisection run is put
# after a block by the policy's lead rows of zeros rather than after TILE copies simulated for
# nothing: the same bits, at a third of the runs (issue 12; benchmarks/phase_full.py).
TILE = 4


def _grid_batches(cells: int, L: int) -> list[list[tuple[int, int]]]:
    """The cells' grids as batches of runs (cell, rate index): in each, the first TILE·⌊L/TILE⌋ rates
    of every cell, then the rest, which stay fewer than TILE (a single cell's batch when L < TILE)."""
    body, left = TILE * (L // TILE), L % TILE
    per = 1 if L < TILE else cells if left == 0 else max(1, (TILE - 1) // left)
    return [[(c, i) for c in chunk for i in range(body)] + [(c, i) for c in chunk for i in range(body, L)]
            for chunk in (range(s, min(s + per, cells)) for s in range(0, cells, per))]


def phase_group(params: dict) -> dict[str, pa.Table]:
    """The cells of one (preset, T, instance), one per J0 of ``params["J0s"]``, computed together.

    The cells differ only in θ0 (their J0) and in the rates they run at, and the simulator is
    batched over runs: the learning-rate grids of the cells are one simulate (or a few, see TILE),
    then their bisections advance together (analysis.critical_rates), one simulate per bisection
    step, whose runs need only their final J (simulate's measure=False). Every run sits where it
    would in the cell's own batches (TILE; a bisection run after the policy's lead rows), so the
    tables are those of the cells one at a time.
    Sampled updates (update="sampled") draw from one generator per simulate: their draws depend on
    the batch. Returns every cell's tables, with a J0 column."""
    lrs = np.geomspace(params["lr_min"], params["lr_max"], params["lr_points"]).tolist()
    J0s, L = list(params["J0s"]), len(lrs)
    policy, reward, beta = token_bandit(params["seed"], params["T"], prompts=params["prompts"], dim=params["dim"],
                                        vocab=params["vocab"], rho=params["rho"])
    theta0 = torch.cat([initial_theta(policy, reward, beta, J0) for J0 in J0s])  # (n, d): one row per cell
    final = np.empty((len(J0s), L))
    grids = []  # (cell, its runs in the batch by rate, the batch's trajectory)
    for batch in _grid_batches(len(J0s), L):
        got, traj = _train(params, policy, reward, theta0[[c for c, _ in batch]], [lrs[i] for _, i in batch])
        final[tuple(zip(*batch))] = got
        run_of = {run: r for r, run in enumerate(batch)}
        grids += [(c, [run_of[c, i] for i in range(L)], traj) for c in dict.fromkeys(c for c, _ in batch)]
    ok = final >= params["target_J"]  # (n, L)

    # bisection runs, up to TILE - 1 left over after a block of TILE rows in every product with the
    # features: zero rows (the policy's lead) in place of the TILE runs simulated only to fill the block
    placed = IndependentSoftmax(policy.vocab, policy.length, features=policy.features, lead=TILE)

    def refine(cells: list[int], rates: list[float]) -> list[bool]:
        flags = []
        for s in range(0, len(cells), TILE - 1):
            runs, at = cells[s:s + TILE - 1], rates[s:s + TILE - 1]
            got, _ = _train(params, placed, reward, theta0[runs], at, measure=False)
            flags += (got >= params["target_J"]).tolist()
        return flags

    crits = critical_rates(lrs, ok, refine, bisection=params["bisection"])
    predicted = [_predict(params, policy.bind(reward), theta0[c : c + 1]) for c in range(len(J0s))]
    tables: dict[str, list[pa.Table]] = {"trajectories": [], "grid": [], "critical": [], "prediction": []}
    for c, runs, traj in grids:
        cell = {"trajectories": trajectory_table(_runs(traj, runs), {"lr": lrs}),
                "grid": pa.table({"lr": lrs, "final_J": final[c].tolist(), "converged": ok[c].tolist()}),
                "critical": pa.table({"lr": [crits[c].rate], "lr_crit_low": [crits[c].low], "lr_crit_high": [crits[c].high],
                                      **{k: [v] for k, v in predicted[c][0].items()}}),
                "prediction": predicted[c][1]}
        for name, t in cell.items():
            tables[name].append(t.add_column(0, "J0", pa.array([J0s[c]] * t.num_rows)))
    return {name: pa.concat_tables(parts) for name, parts in tables.items()}


def tolerated_prompts(prompts: int, target_J: float) -> int:
    """m = ⌊C·(1 − target_J)⌋: how many prompts a run can lose entirely and still reach target_J."""
    return math.floor(prompts * (1 - target_J) + 1e-9)


def _no_prediction_steps() -> pa.Table:
    """The safe run's per-step record when there is none (predict_steps = 0): no rows, its columns."""
    return pa.table({"k": pa.array([], pa.int64()), "J": pa.array([], pa.float64()), "eta": pa.array([], pa.float64()),
                     "m_min": pa.array([], pa.float64()), "m_tolerant": pa.array([], pa.float64())})


def _predict(params: dict, model, theta0: torch.Tensor) -> tuple[dict[str, float], pa.Table]:
    """The cell's predicted critical rates (pred_min, pred_tolerant, pred_second_order) and the safe
    run's record per step (k, J, eta, m_min, m_tolerant); nan and no rows where predict_steps = 0."""
    K = params["predict_steps"]
    name, overrides = _preset(params["preset"], params["drgrpo_norm"])
    preset = get_preset(name, **overrides)
    second = predicted_critical_rates(model, theta0, preset)[1] if K else math.nan
    if K == 0:
        return {"pred_min": math.nan, "pred_tolerant": math.nan, "pred_second_order": second}, _no_prediction_steps()
    direction = make_direction("expected", preset=name, **overrides)
    pred = predict_critical_rate(model, theta0, direction, steps=K, fraction=params["predict_fraction"], eta_max=params["lr_max"])
    m = tolerated_prompts(params["prompts"], params["target_J"])
    rates = {"pred_min": pred.rate(), "pred_tolerant": pred.rate(tolerated=m), "pred_second_order": second}
    steps = pa.table({"k": list(range(K)), "J": pred.J.tolist(), "eta": pred.eta.tolist(), "m_min": pred.per_step().tolist(),
                      "m_tolerant": pred.per_step(tolerated=m).tolist()})
    return rates, steps


def phase_cell(params: dict) -> dict[str, pa.Table]:
    """One cell of the sweep alone: the learning-rate grid, then bisection on the window's upper edge."""
    group = {k: v for k, v in params.items() if k != "J0"}
    return {name: t.drop_columns(["J0"]) for name, t in phase_group(dict(group, J0s=[params["J0"]])).items()}


def phase_cells(config: PhaseConfig) -> list[dict]:
    """The sweep's cells: one per (preset, T, J0, instance), with every setting a cell needs."""
    norm = config.drgrpo_norm or float(max(config.lengths))
    base = {k: getattr(config, k) for k in ("lr_min", "lr_max", "lr_points", "steps", "prompts", "dim", "vocab", "rho",
                                              "update", "G", "target_J", "bisection", "predict_steps", "predict_fraction")}
    return [dict(base, preset=p, T=T, J0=J0, seed=s, drgrpo_norm=norm)
            for p in config.presets for T in config.lengths for J0 in config.J0s for s in range(config.seeds)]


def phase_groups(config: PhaseConfig) -> list[dict]:
    """The cells grouped by (preset, T, instance), their J0s in ``J0s``: what phase_group computes."""
    groups: dict[tuple, dict] = {}
    for cell in phase_cells(config):
        key = (cell["preset"], cell["T"], cell["seed"])
        groups.setdefault(key, dict({k: v for k, v in cell.items() if k != "J0"}, J0s=[]))["J0s"].append(cell["J0"])
    return list(groups.values())


def _in_cell_order(table: pa.Table, cells: list[dict]) -> pa.Table:
    """Rows and columns as a sweep over the cells themselves writes them: cell by cell in the order of
    phase_cells, the cell's settings first."""
    rank = {(c["preset"], c["T"], c["J0"], c["seed"]): i for i, c in enumerate(cells)}
    keys = zip(*(table.column(k).to_pylist() for k in ("preset", "T", "J0", "seed")))
    order = np.argsort([rank[k] for k in keys], kind="stable")
    names = list(cells[0]) + [n for n in table.column_names if n not in cells[0]]
    return table.take(pa.array(order)).select(names)


def run(config: PhaseConfig, progress: Progress, workdir: Path) -> Result:
    cells, groups = phase_cells(config), phase_groups(config)
    norm = cells[0]["drgrpo_norm"]
    groups.sort(key=lambda g: -g["T"])  # the longest first, so that the workers finish together
    tables = run_sweep(phase_group, groups, workdir / "sweep", backend=config.backend, workers=config.workers,
                       on_cell=progress.task("phase: (preset, T, instance) cells, their J0s together", len(groups)))
    tables = {name: _in_cell_order(t, cells) for name, t in tables.items()}
    if "prediction" not in tables:  # predict_steps = 0: every cell's table is empty, and a sweep keeps no empty part
        tables["prediction"] = _no_prediction_steps()
    cols = columns(tables["critical"], ("preset", "T", "J0", "seed", "lr", "lr_crit_low", "lr_crit_high"))
    preset = np.asarray(tables["critical"].column("preset").to_pylist())
    checks, slopes = [], {}
    wide = config.max_ci_width
    for p in config.presets:
        for J0 in config.J0s:
            sel = (preset == p) & (cols["J0"] == J0)
            slope, lo, hi, n, _ = loglog_slope(cols["T"][sel].astype(float), cols["lr"][sel], groups=cols["seed"][sel])
            pooled = loglog_slope(cols["T"][sel].astype(float), cols["lr"][sel])
            censored = int(sel.sum() - pooled.n)
            slopes[f"{p} J0={J0}"] = {"slope": slope, "ci95": [lo, hi], "ci95_width": hi - lo, "cells_fitted": n,
                                      "cells_censored": censored, "pooled": {"slope": pooled.slope, "ci95": [pooled.low, pooled.high]}}
            expected = THEORY_SLOPE.get(p, math.nan)
            inside = bool(lo <= expected <= hi) if math.isfinite(slope) else False
            checks.append(Check(f"{p}, J0={J0}: critical rate ∝ T^{expected:g} (eq. 17 vs 18)", inside,
                                f"slope {slope:.2f} [{lo:.2f}, {hi:.2f}] (width {hi - lo:.2f}, within instances) from {n} cells "
                                f"({censored} censored); pooled {pooled.slope:.2f} [{pooled.low:.2f}, {pooled.high:.2f}]"
                                if math.isfinite(slope) else f"no fit: {n} uncensored cells, {censored} censored",
                                f"95% CI contains {expected:g}, at most {wide:g} wide", kind="claim",
                                enough=bool(hi - lo <= wide)))
    diffs = {}
    for a, b in (("grpo", "reinforce"), ("dr-grpo", "reinforce")):
        if a not in config.presets or b not in config.presets:
            continue
        for J0 in config.J0s:
            fit = slope_difference(tables["critical"], a, b, J0)
            diffs[f"{a} - {b} J0={J0}"] = fit
            if a != "grpo":  # Dr. GRPO is REINFORCE / N: its difference is 0 by construction, reported, not a claim
                continue
            d, lo, hi, n = fit["slope"], fit["ci95"][0], fit["ci95"][1], fit["cells_paired"]
            expected = THEORY_SLOPE[a] - THEORY_SLOPE[b]
            checks.append(Check(f"{a} - {b}, J0={J0}: slope difference {expected:g} (eq. 17 vs 18: GRPO's 1/|o|)",
                                bool(math.isfinite(d) and lo <= expected <= hi and lo > 0),
                                f"difference {d:.2f} [{lo:.2f}, {hi:.2f}] (width {hi - lo:.2f}) from {n} paired cells"
                                if math.isfinite(d) else f"no fit: {n} paired cells",
                                f"95% CI contains {expected:g} and excludes 0, at most {wide:g} wide", kind="claim",
                                enough=bool(hi - lo <= wide)))
    summary = {"slopes": slopes, "slope_differences": diffs,
               "criterion": f"critical rate = upper edge of the rates whose final mean J reaches {config.target_J}",
               "update": config.update, "drgrpo_norm": norm, "cells": len(cells),
               "independence": "dr-grpo's expected update is reinforce's / drgrpo_norm (same slope: not independent); grpo-sum "
                               "is T x grpo (slope grpo's - 1), with a per-prompt weighting 1/sigma_c reinforce lacks"}
    if config.predict_steps:
        crit = columns(tables["critical"], ("lr", "lr_crit_low", "lr_crit_high", *PREDICTORS))
        summary["prediction"] = {p: prediction_stats(crit[p], crit["lr"], crit["lr_crit_low"]) for p in PREDICTORS}
        summary["prediction"]["measured"] = (f"phase's critical rate: the upper edge of the fixed rates whose final mean J after "
                                             f"{config.steps} steps reaches {config.target_J} (bisection {config.bisection})")
        summary["prediction"]["tolerated_prompts"] = tolerated_prompts(config.prompts, config.target_J)
        # the same predictions from fewer safe steps: does looking further along the run help?
        per_step = columns(tables["prediction"], ("m_min", "m_tolerant"))
        by_steps = {}
        for K in sorted({1, min(3, config.predict_steps), config.predict_steps}):
            for p in ("m_min", "m_tolerant"):
                m = per_step[p].reshape(len(cells), config.predict_steps)[:, :K].min(1)
                st = prediction_stats(m, crit["lr"], crit["lr_crit_low"])
                by_steps[f"{p.replace('m_', 'pred_')}, K={K}"] = {k: st[k] for k in ("within_1.5x", "within_2x", "ratio_median",
                                                                                     "ratio_min", "ratio_max")}
        summary["prediction"]["by_safe_steps"] = by_steps
        for p, what in (("pred_min", "the smallest per-prompt critical step"),
                        ("pred_tolerant", f"the {tolerated_prompts(config.prompts, config.target_J) + 1}-th smallest per-prompt critical step")):
            st = summary["prediction"][p]
            checks.append(Check(f"predicted from a short safe run ({p}): the critical rate within 1.5x of the measured in >= 90% of cells",
                                st["cells_predicted"] == st["cells"] and st["within_1.5x"] >= 0.9,
                                f"{what} over {config.predict_steps} safe steps: within 1.5x in {st['within_1.5x']:.0%}, 2x in "
                                f"{st['within_2x']:.0%} of {st['cells_measured']} measured cells, predicted/measured "
                                f"{st['ratio_min']:.3g}-{st['ratio_max']:.3g} (median {st['ratio_median']:.3g}); a prediction in "
                                f"{st['cells_predicted']} of {st['cells']} cells",
                                "a finite prediction in every cell, within 1.5x of the measured in >= 90%", kind="claim"))
    return Result({"metrics": tables["trajectories"], "grid": tables["grid"], "critical": tables["critical"],
                   "prediction": tables["prediction"]}, summary, checks)


PREDICTORS = ("pred_min", "pred_tolerant", "pred_second_order")


def slope_difference(critical: pa.Table, a: str, b: str, J0: float) -> dict:
    """The slope of log(rate_a / rate_b) on log T over the cells of presets a and b paired by (T, J0 = J0,
    instance), with its 95% t-interval (loglog_slope, an intercept per instance as in the slope
    checks): the difference of the two presets' slopes, fitted on paired cells so that what an
    instance does to both rates cancels. Pairs where either rate is censored are left out."""
    c = columns(critical, ("T", "J0", "seed", "lr"))
    names = np.asarray(critical.column("preset").to_pylist())
    rate = {(name, T, s): r for name, T, J, s, r in zip(names, c["T"], c["J0"], c["seed"], c["lr"]) if J == J0}
    keys = sorted({(T, s) for name, T, s in rate if name == a} & {(T, s) for name, T, s in rate if name == b})
    T = np.array([k[0] for k in keys], dtype=float)
    ratio = np.array([rate[(a, *k)] / rate[(b, *k)] for k in keys])
    fit = loglog_slope(T, ratio, groups=[k[1] for k in keys]) if len(keys) else None
    if fit is None:
        return {"slope": math.nan, "ci95": [math.nan, math.nan], "ci95_width": math.nan, "cells_paired": 0}
    return {"slope": fit.slope, "ci95": [fit.low, fit.high], "ci95_width": fit.high - fit.low, "cells_paired": fit.n}


def prediction_stats(predicted: np.ndarray, measured: np.ndarray, measured_low: np.ndarray) -> dict:
    """How predicted critical rates (n,) compare with measured ones (n,; nan where censored): ratios
    predicted/measured where the measurement is finite, the share of those cells within 1.5x and 2x
    (a cell without a finite prediction counts as outside), and for the cells censored above the
    grid (measured nan, low finite) how many predictions lie at or above low / 1.5."""
    ok = np.isfinite(measured)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = predicted[ok] / measured[ok]
    finite = ratio[np.isfinite(ratio) & (ratio > 0)]

    def share(band: float) -> float:
        return float(np.mean((ratio >= 1 / band) & (ratio <= band))) if ok.any() else math.nan

    above = ~ok & np.isfinite(measured_low)
    return {"cells": int(len(measured)), "cells_measured": int(ok.sum()), "cells_predicted": int(np.isfinite(predicted).sum()),
            "within_1.5x": share(1.5), "within_2x": share(2.0),
            "ratio_min": float(finite.min()) if len(finite) else math.nan, "ratio_max": float(finite.max()) if len(finite) else math.nan,
            "ratio_median": float(np.median(finite)) if len(finite) else math.nan,
            "ratio_log10_sd": float(np.log10(finite).std()) if len(finite) else math.nan,
            "censored_above_grid": int(above.sum()),
            "censored_consistent": int((predicted[above] >= measured_low[above] / 1.5).sum())}


def plot(out: Path) -> list[str]:
    grid = read_table(out / "grid.parquet")
    crit = read_table(out / "critical.parquet")
    g = columns(grid, ("T", "J0", "lr", "final_J"))
    gp = np.asarray(grid.column("preset").to_pylist())
    c = columns(crit, ("T", "J0", "lr", "lr_crit_low", "lr_crit_high"))
    cp = np.asarray(crit.column("preset").to_pylist())
    presets = list(dict.fromkeys(gp.tolist()))
    J0 = sorted(set(g["J0"].tolist()))[0]
    fig, axes = plotting.panels(len(presets), width=4.0)
    lengths = sorted(set(g["T"].tolist()))
    lrs = sorted(set(g["lr"].tolist()))
    for ax, p in zip(axes, presets):
        Z = np.full((len(lengths), len(lrs)), np.nan)
        for i, T in enumerate(lengths):
            for j, lr in enumerate(lrs):
                sel = (gp == p) & (g["T"] == T) & (g["lr"] == lr) & (g["J0"] == J0)
                Z[i, j] = np.median(g["final_J"][sel])
        im = ax.imshow(Z, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis",
                       extent=(math.log10(lrs[0]), math.log10(lrs[-1]), -0.5, len(lengths) - 0.5))
        for i, T in enumerate(lengths):
            sel = (cp == p) & (c["T"] == T) & (c["J0"] == J0) & np.isfinite(c["lr"])
            if sel.any():
                ax.plot(np.log10(np.median(c["lr"][sel])), i, "r*", ms=9)
        ax.set_yticks(range(len(lengths)), [str(T) for T in lengths])
        ax.set_xlabel("log10 learning rate")
        ax.set_ylabel("response length T")
        ax.set_title(f"{p}: final J (J0 = {J0:g}; ★ critical rate)", fontsize=9)
    fig.colorbar(im, ax=axes[-1], label="median final J")
    files = [plotting.save(fig, out / "phase_heatmaps.png")]

    fig, (ax,) = plotting.panels(1, width=5.5)
    for p in presets:
        for J0v in sorted(set(c["J0"].tolist())):
            sel = (cp == p) & (c["J0"] == J0v) & np.isfinite(c["lr"])
            if not sel.any():
                continue
            line = ax.loglog(c["T"][sel], c["lr"][sel], "o", alpha=0.6, label=f"{p}, J0={J0v:g}")[0]
            fit = loglog_slope(c["T"][sel].astype(float), c["lr"][sel])
            if math.isfinite(fit.slope):
                Ts = np.array(sorted(set(c["T"][sel].tolist())), dtype=float)
                ax.loglog(Ts, np.exp(fit.intercept + fit.slope * np.log(Ts)), "-", color=line.get_color(), lw=1)
                # the theory's slope through the fit's centre (mean log T, its fitted log rate)
                x_mid = np.log(c["T"][sel]).mean()
                th = THEORY_SLOPE.get(p, math.nan)
                ax.loglog(Ts, np.exp(fit.intercept + fit.slope * x_mid + th * (np.log(Ts) - x_mid)), ":", color=line.get_color(), lw=1)
    ax.set_xlabel("response length T")
    ax.set_ylabel("critical learning rate")
    ax.set_title("critical rate vs T (solid: fit; dotted: theory's slope)", fontsize=9)
    ax.legend(fontsize=6)
    files.append(plotting.save(fig, out / "phase_critical.png"))
    if "pred_min" in crit.column_names and np.isfinite(columns(crit, ("pred_min",))["pred_min"]).any():
        files.append(plot_prediction(crit, out / "phase_prediction.png"))
    return files


def plot_prediction(crit: pa.Table, path: Path) -> str:
    """Predicted against measured critical rate, one point per cell, the 1.5x and 2x bands drawn;
    cells censored above the grid at their lower bound (▷), infinite predictions at the top (▲)."""
    c = columns(crit, ("lr", "lr_crit_low", *PREDICTORS))
    labels = {"pred_min": "safe run: smallest per-prompt critical step", "pred_tolerant": "safe run: tolerating the prompts J can lose",
              "pred_second_order": "second order at the start (prompt level)"}
    fig, axes = plotting.panels(len(PREDICTORS), width=4.3, height=4.0)
    x_all = np.where(np.isfinite(c["lr"]), c["lr"], c["lr_crit_low"])
    for ax, p in zip(axes, PREDICTORS):
        y = c[p]
        finite_y = y[np.isfinite(y) & (y > 0)]
        lo = min(x_all[np.isfinite(x_all)].min(), finite_y.min() if len(finite_y) else np.inf) / 3
        hi = max(x_all[np.isfinite(x_all)].max(), finite_y.max() if len(finite_y) else 0) * 3
        line = np.array([lo, hi])
        ax.fill_between(line, line / 2, line * 2, color="0.9", label="2x")
        ax.fill_between(line, line / 1.5, line * 1.5, color="0.78", label="1.5x")
        ax.loglog(line, line, "k-", lw=0.8)
        meas, cens = np.isfinite(c["lr"]), ~np.isfinite(c["lr"]) & np.isfinite(c["lr_crit_low"])
        fin = np.isfinite(y) & (y > 0)
        ax.loglog(c["lr"][meas & fin], y[meas & fin], "o", ms=4, alpha=0.7, label="measured")
        ax.loglog(c["lr_crit_low"][cens & fin], y[cens & fin], ">", ms=5, alpha=0.7, label="censored above the grid")
        top = ~fin & np.isfinite(x_all)
        ax.loglog(x_all[top], np.full(top.sum(), hi / 1.5), "^", ms=5, color="r", label="no finite prediction")
        ratio = y[meas] / c["lr"][meas]
        inside = float(np.mean((ratio >= 1 / 1.5) & (ratio <= 1.5))) if meas.any() else math.nan
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured critical rate (fixed-rate runs)")
        ax.set_ylabel("predicted critical rate")
        ax.set_title(f"{labels[p]}\n{inside:.0%} of measured cells within 1.5x", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("Predicted against measured critical rate (one point per cell)")
    return plotting.save(fig, path)


EXPERIMENT = Experiment(
    name="phase",
    title="Step-size phase diagrams: REINFORCE, Dr. GRPO and GRPO over learning rate × length",
    description=__doc__.split("\n\n")[1],
    config=PhaseConfig,
    run=run,
    plot=plot,
)
