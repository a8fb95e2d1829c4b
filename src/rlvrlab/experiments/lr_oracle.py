"""The learning-rate oracle: sweeps of fixed rates on language models, and the probe scored against them.

Two grids of ordinary `rlvrlab lm train` runs of tiny base models (rlvrlab.integrations.sweep.lm_sweep,
resumable run by run), each over one geometric grid of fixed Adam learning rates (100x):

- (a) per task: add, arith and countdown at their default length, preset grpo, several seeds. Its
  settings are warning-bench's, so a directory holding that corpus serves both (``runs_from``);
- (b) response length: one task whose worked solution is written ``repeat`` times
  (``add:...:repeat=k``, the same problems, a longer completion; a base model per length, trained
  to the same starting success) x presets grpo, dr-grpo and rloo (sum-aggregated, unnormalized).

Per cell (task or length, preset), over its seeds, from held-out accuracy alone:

- final accuracy of a run: the mean of its last two evaluations; of a rate: the mean over seeds,
  with a t-interval;
- the best fixed rate: the rate of the highest final accuracy;
- the measured critical rate: a rate *falls* when the seeds' mean held-out accuracy at some
  evaluation lies below the mean at the start by more than two standard errors of that difference
  (binomial, at the starting accuracy); the critical rate's bracket is [the largest rate of the
  first run of rates that do not fall, the next rate], and its value the geometric midpoint
  (rlvrlab.analysis.critical_rate). A diverged run scores 0 from the step it diverged.

Then, from (b), log(critical rate) against log(mean response length) per preset, with its slope
and 95% interval beside the theory's (-1 unnormalized, 0 for GRPO; §4, eq. 17-18), and the probe
(rlvrlab.lm.probe: `rlvrlab lm probe`) run for every cell and seed before training: its predicted
critical rate against the measured one, and, with ``recommended_runs``, a run at its recommended
rate against the best fixed rate. The probe's one setting (``probe_steps``) was chosen by looking
at its scans on seed 1 of grid (a) (``probe_tuned_on``); the score is reported on the other
(cell, seed) pairs too.

What Adam does to the theory's prediction: the theory's step is the raw gradient step, whose size
a length normalization rescales; Adam divides every coordinate by its running gradient scale, so a
constant rescaling of the loss (Dr. GRPO's 1/max_new_tokens, GRPO's 1/|o| where lengths are equal)
leaves its steps unchanged. The length axis measures what remains.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from scipy import stats as sps

from rlvrlab import _checks, plotting
from rlvrlab.analysis.stats import critical_rate, loglog_slope
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.io import read_table, table_rows
from rlvrlab.lm.diagnostics import vocabulary

__all__ = ["EXPERIMENT", "LrOracleConfig", "grid_settings", "measure_cell", "plot", "run"]

THEORY_SLOPE = {"grpo": 0.0, "dr-grpo": -1.0, "rloo": -1.0}  # §4: the critical step against T (eq. 17-18), raw gradient steps
WITHIN = 2.0  # issue 14: the predicted critical rate within 2x of the measured one
TOLERANCE = 0.02  # issue 14: the recommended rate's accuracy within 0.02 (or one standard error) of the best fixed rate's
MIN_PAIRS, MIN_CELLS = 10, 5  # fewer scored (cell, seed) pairs or cells decide nothing ("not enough data": quick settings)


@dataclass(frozen=True)
class LrOracleConfig:
    model: str = setting("", "base model of both grids; empty: the tiny base model for grid (a) and, for grid (b), one per "
                             "length trained on that length (each once, then cached)")
    tasks: tuple[str, ...] = setting(("add", "arith", "countdown"), "grid (a): tasks at their default length")
    lrs: tuple[float, ...] = setting((3e-5, 6e-5, 1.2e-4, 2.2e-4, 4.2e-4, 8e-4, 1.6e-3, 3e-3),
                                     "Adam's learning rates of both grids (geometric, 100x)")
    seeds: tuple[int, ...] = setting((0, 1, 2), "grid (a): seeds")
    steps: int = setting(60, "grid (a): GRPO steps per run")
    batch_size: int = setting(64, "completions per step")
    group: int = setting(8, "completions per prompt")
    prompts: int = setting(400, "problems per task (20% held out)")
    max_new_tokens: int = setting(48, "grid (a): longest completion")
    eval_every: int = setting(5, "steps between held-out evaluations")
    eval_samples: int = setting(2, "completions per held-out prompt per evaluation")
    fresh_samples: int = setting(4, "grid (a): fresh completions per prompt (gap_fresh/*; as warning-bench, whose runs it can share)")
    length_task: str = setting("add:min_digits=2:max_digits=2", "grid (b): the task whose solution is repeated")
    repeats: tuple[int, ...] = setting((1, 2, 3, 4, 6, 8), "grid (b): how many times the worked solution is written (the length axis)")
    length_presets: tuple[str, ...] = setting(("grpo", "dr-grpo", "rloo"), "grid (b): update rules")
    length_seeds: tuple[int, ...] = setting((0, 1), "grid (b): seeds")
    length_steps: int = setting(40, "grid (b): GRPO steps per run (the threshold shows early)")
    probe_steps: int = setting(4, "the probe's steps (rlvrlab.lm.probe; at most 10)")
    probe_fresh: int = setting(4, "the probe's completions per prompt and scanned rate")
    probe_tuned_on: tuple[int, ...] = setting((1,), "seeds of grid (a) whose probe scans chose probe_steps")
    recommended_runs: bool = setting(True, "train one run per cell and seed at the probe's recommended rate")
    adaptive_starts: tuple[float, ...] = setting((3e-5, 3e-3), "schedule probe (rlvrlab.lm.trainer): one run per cell, seed "
                                                              "and start rate (the grid's lowest and highest); none: no such runs", empty=True)
    probe_every: int = setting(20, "schedule probe: steps between scans")
    probe_rescan: str = setting("any", "schedule probe: what a re-scan may do to the aim, any or lower (rlvrlab.lm.config)")
    adaptive_seeds: tuple[int, ...] = setting((), "schedule probe: seeds of its runs; none: the grids' own (a rule chosen by "
                                                  "looking at runs is scored on other seeds)", empty=True)
    runs_from: str = setting("", "a directory of finished grid-(a) runs to use (e.g. warning-bench's runs/); empty: none")
    workers: int = setting(2, "runs trained at once (one torch thread each)")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "group", "prompts", "max_new_tokens", "eval_every", "eval_samples", "length_steps",
                     "probe_fresh", "workers"):
            check_positive_int(name, getattr(self, name))
        if not (isinstance(self.probe_steps, int) and 1 <= self.probe_steps <= 10):
            _checks.fail("probe_steps", self.probe_steps, "an integer from 1 to 10")
        check_positive_floats("lrs", self.lrs)
        if list(self.lrs) != sorted(set(self.lrs)) or len(self.lrs) < 3:
            _checks.fail("lrs", self.lrs, "at least 3 distinct increasing rates")
        for name in ("seeds", "repeats", "length_presets", "length_seeds"):
            if not getattr(self, name):
                _checks.fail(name, getattr(self, name), "at least one value")
        _checks.choose("probe_rescan", self.probe_rescan, ("any", "lower"))
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in self.adaptive_seeds):
            _checks.fail("adaptive_seeds", self.adaptive_seeds, "integers >= 0, or none (the grids' seeds)")
        if any(not (lr > 0) for lr in self.adaptive_starts):
            _checks.fail("adaptive_starts", self.adaptive_starts, "rates > 0, or none")
        if any(not isinstance(k, int) or k < 1 for k in self.repeats):
            _checks.fail("repeats", self.repeats, "integers >= 1")
        from rlvrlab.lm.sweep import expand_grid

        expand_grid(self.grid_a("model"))  # every TrainConfig's own checks, before any run
        for k in self.repeats:
            expand_grid(self.grid_b("model", k))

    @classmethod
    def quick(cls) -> LrOracleConfig:
        return cls(tasks=("add",), lrs=(1e-4, 4.2e-4, 1.6e-3), seeds=(0, 1), steps=10, batch_size=32, prompts=120, fresh_samples=2,
                   repeats=(1, 2), length_presets=("grpo",), length_seeds=(0,), length_steps=10, probe_steps=2,
                   probe_tuned_on=(1,), adaptive_starts=(1.6e-3,), probe_every=0)

    def grid_a(self, model: str) -> dict[str, Any]:
        return {"model": model, "steps": self.steps, "batch_size": self.batch_size, "group": self.group, "prompts": self.prompts,
                "max_new_tokens": self.max_new_tokens, "eval_every": self.eval_every, "eval_samples": self.eval_samples,
                "fresh_samples": self.fresh_samples, "kl_reference": True, "checkpoint_every": 20,
                "task": list(self.tasks), "preset": ["grpo"], "lr": list(self.lrs), "seed": list(self.seeds)}

    def length_spec(self, repeat: int) -> str:
        return f"{self.length_task}:repeat={repeat}"

    def length_tokens(self, repeat: int) -> int:
        """Longest completion of grid (b): 16 characters per pass of two columns' steps, 8 for the answer."""
        return 16 * repeat + 8

    def grid_b(self, model: str, repeat: int) -> dict[str, Any]:
        return {"model": model, "task": [self.length_spec(repeat)], "steps": self.length_steps, "batch_size": self.batch_size,
                "group": self.group, "prompts": self.prompts, "max_new_tokens": self.length_tokens(repeat),
                "eval_every": self.eval_every, "eval_samples": self.eval_samples, "fresh_samples": 0, "kl_reference": False,
                "checkpoint_every": 20, "preset": list(self.length_presets), "lr": list(self.lrs), "seed": list(self.length_seeds)}

    @property
    def n_eval(self) -> int:
        """Completions per held-out evaluation (the trainer holds out 20% of the problems)."""
        return max(1, round(0.2 * self.prompts)) * self.eval_samples


# --- measuring a cell ---------------------------------------------------------------------------


def _evals(rows: list[dict[str, float]], status: str, steps: int) -> dict[int, float]:
    """Held-out accuracy by step; a diverged run scores 0 at every evaluation it did not reach."""
    ev = {int(r["step"]): float(r["eval/accuracy"]) for r in rows if math.isfinite(r.get("eval/accuracy", math.nan))}
    if status == "diverged":
        every = sorted(ev)[1] - sorted(ev)[0] if len(ev) > 1 else steps
        for s in range(max(ev, default=0) + every, steps + every, every):
            ev[min(s, steps)] = 0.0
    return ev


def measure_cell(lrs: list[float], curves: dict[float, list[dict[int, float]]], n_eval: int) -> dict[str, Any]:
    """Final accuracy per rate, the best fixed rate and the measured critical rate of one cell.

    curves: rate -> one {step: held-out accuracy} per seed (every seed evaluated at the same steps)
    n_eval: completions per evaluation
    """
    per_rate = []
    falls = []
    for lr in lrs:
        runs = curves[lr]
        steps = sorted(set.intersection(*(set(c) for c in runs)))
        mean = np.asarray([np.mean([c[s] for c in runs]) for s in steps])
        a0, S = mean[0], len(runs)
        se_diff = math.sqrt(2 * max(a0 * (1 - a0), 1.0 / n_eval) / (n_eval * S))  # a difference of two seed-means of evaluations
        falls.append(bool((mean[1:] < a0 - 2 * se_diff).any()))
        finals = np.asarray([np.mean([c[s] for s in sorted(c)[-2:]]) for c in runs])
        half = float(sps.t.ppf(0.975, S - 1) * finals.std(ddof=1) / math.sqrt(S)) if S > 1 else math.nan
        per_rate.append({"lr": lr, "accuracy_start": float(a0), "accuracy_final": float(finals.mean()),
                         "accuracy_final_se": float(finals.std(ddof=1) / math.sqrt(S)) if S > 1 else math.nan,
                         "accuracy_final_low": float(finals.mean() - half), "accuracy_final_high": float(finals.mean() + half),
                         "falls": falls[-1], "seeds": S})
    best = max(per_rate, key=lambda r: r["accuracy_final"])
    crit = critical_rate(lrs, [not f for f in falls])
    return {"per_rate": per_rate, "best_lr": best["lr"], "best_accuracy": best["accuracy_final"],
            "best_accuracy_se": best["accuracy_final_se"], "critical_rate": crit.rate, "critical_low": crit.low,
            "critical_high": crit.high}


# --- the run -----------------------------------------------------------------------------------


_RUN_KEYS = ("model", "task", "preset", "seed", "batch_size", "group", "prompts", "max_new_tokens", "steps", "eval_every",
             "eval_samples", "checkpoint_every")  # what a run at another rate shares with the grid's runs of its cell
_PROBE_KEYS = tuple(k for k in _RUN_KEYS if k != "checkpoint_every")  # the run settings a cell's probe is made with


def grid_settings(runs: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, preset) -> the settings every run of the cell shares (_RUN_KEYS but the seed), read from
    the config.json of the cell's seed-0 grid run under ``runs`` (lr-oracle's run directories)."""
    out = {}
    for path in Path(runs).glob("*/config.json"):
        s = json.loads(path.read_text())["settings"]
        if s["seed"] == 0:
            out[(s["task"], s["preset"])] = {k: s[k] for k in _RUN_KEYS if k != "seed"}
    return out


def _probe_cell(params: dict[str, Any]) -> pa.Table:
    """One probe (a sweep cell): the TrainConfig ``params`` probed with the cell's probe settings."""
    import tempfile

    from rlvrlab.lm.config import TrainConfig
    from rlvrlab.lm.probe import probe

    settings = dict(params)
    steps, fresh = settings.pop("probe_steps"), settings.pop("probe_fresh")
    with tempfile.TemporaryDirectory() as tmp:
        r = probe(TrainConfig(**settings), tmp, steps=steps, fresh=fresh)
    return pa.Table.from_pylist([{**r.summary(), "scan": ",".join(f"{lr:.4g}:{j:.4f}" for lr, j in zip(r.rates, r.J))}])


def _recommended_cell(params: dict[str, Any]) -> pa.Table:
    """One run at a probe's recommended rate, or of schedule probe (a sweep cell): its held-out
    accuracy by step, and for schedule probe the rates it took."""
    import tempfile

    from rlvrlab.lm.config import TrainConfig
    from rlvrlab.lm.sweep import train_run

    with tempfile.TemporaryDirectory() as tmp:
        record = train_run(TrainConfig(**params), tmp)
        rows = table_rows(read_table(Path(tmp) / "metrics.parquet")) if (Path(tmp) / "metrics.parquet").exists() else []
    ev = _evals(rows, record["status"], params["steps"])
    lrs = {int(r["step"]): r.get("learning_rate", math.nan) for r in rows}
    return pa.Table.from_pylist([{"step": s, "accuracy": a, "status": record["status"], "rate": lrs.get(s, math.nan),
                                  "seconds": record["seconds"]} for s, a in sorted(ev.items())])


def _link_runs(source: Path, target: Path, names: list[str]) -> None:
    """Finished runs of ``source`` that ``target`` lacks, linked in (a run directory is read, never written, once finished)."""
    target.mkdir(parents=True, exist_ok=True)
    for n in names:
        if (source / n).is_dir() and not (target / n).exists():
            (target / n).symlink_to((source / n).resolve(), target_is_directory=True)


def run(config: LrOracleConfig, progress: Progress, workdir: Path) -> Result:
    from rlvrlab.integrations.sweep import lm_sweep, run_sweep
    from rlvrlab.lm.pretrain import PretrainConfig, pretrain
    from rlvrlab.lm.sweep import expand_grid

    model = config.model
    if not model:
        base = PretrainConfig()
        model = str(pretrain(base, on_step=progress.task("pretraining the tiny base model (once)", base.max_steps)))
    grids = {("a", None): config.grid_a(model)}
    for k in config.repeats:
        cfg = PretrainConfig(tasks=(config.length_spec(k),), mix=(1.0,), max_new_tokens=config.length_tokens(k))
        base_k = config.model or str(pretrain(cfg, on_step=progress.task(f"base model of repeat={k} (once)", cfg.max_steps)))
        grids[("b", k)] = config.grid_b(base_k, k)
    if config.runs_from:
        _link_runs(Path(config.runs_from), workdir / "runs", [n for n, _ in expand_grid(grids[("a", None)])])
    tables = []
    for key, grid in grids.items():
        n = len(expand_grid(grid))
        advance = progress.task(f"grid ({key[0]}){'' if key[1] is None else f' repeat={key[1]}'}: {n} GRPO runs (resumable)", n)
        t = lm_sweep(grid, workdir / "runs", workers=config.workers, on_run=lambda row, trained: advance(1))
        tables.append(t.append_column("grid", pa.array([key[0]] * t.num_rows)))
    runs = pa.concat_tables(tables, promote_options="permissive").to_pylist()
    unfinished = [r for r in runs if r["status"] not in ("finished", "diverged")]
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} of {len(runs)} runs did not end (run again to resume them); first: "
                           f"{unfinished[0]['run']}: {unfinished[0]['status']} {unfinished[0]['message']}")

    # the probe for every cell and seed, before training (its own steps, never the runs')
    cells = {}
    for r in runs:
        cells.setdefault((r["task"], r["preset"], r["seed"]), r)
    probe_params = []
    for (task, preset, seed), r in cells.items():
        settings = {k: r[k] for k in _PROBE_KEYS}
        probe_params.append({**settings, "probe_steps": config.probe_steps, "probe_fresh": config.probe_fresh})
    advance = progress.task(f"{len(probe_params)} probes", len(probe_params))
    probes = run_sweep(_probe_cell, probe_params, workdir / "probes", workers=config.workers, on_cell=advance)
    recommended = None
    if config.recommended_runs:
        todo = []
        for p in probes.to_pylist():
            rate = p["recommended_rate"]
            if math.isfinite(rate) and rate > 0:
                r = cells[(p["task"], p["preset"], p["seed"])]
                todo.append({k: r[k] for k in _RUN_KEYS} | {"lr": float(f"{rate:.3g}")})
        advance = progress.task(f"{len(todo)} runs at the recommended rates", len(todo))
        recommended = run_sweep(_recommended_cell, todo, workdir / "recommended", workers=config.workers, on_cell=advance)
    adaptive = None
    if config.adaptive_starts:
        rule = {"schedule": "probe", "probe_every": config.probe_every, "probe_steps": config.probe_steps,
                "probe_fresh": config.probe_fresh} | ({"probe_rescan": config.probe_rescan} if config.probe_rescan != "any" else {})
        if config.adaptive_seeds:  # one run per (task, preset) and seed given, on the settings of the cell's first seed
            first = {}
            for r in cells.values():
                first.setdefault((r["task"], r["preset"]), r)
            starts = [r | {"seed": seed} for r in first.values() for seed in config.adaptive_seeds]
        else:
            starts = list(cells.values())
        todo = [{k: r[k] for k in _RUN_KEYS} | {"lr": lr} | rule for r in starts for lr in config.adaptive_starts]
        advance = progress.task(f"{len(todo)} runs of schedule probe", len(todo))
        adaptive = run_sweep(_recommended_cell, todo, workdir / "adaptive", workers=config.workers, on_cell=advance)
    return analyse(config, runs, workdir / "runs", probes, recommended, adaptive)


def analyse(config: LrOracleConfig, runs: list[dict[str, Any]], run_dir: Path, probes: pa.Table,
            recommended: pa.Table | None, adaptive: pa.Table | None = None) -> Result:
    """Every cell's curve, best fixed rate and measured critical rate; the slopes against length;
    the probe's predictions and its recommended runs against them."""
    by_cell: dict[tuple[str, str, str], dict[float, list[dict[int, float]]]] = {}
    lengths: dict[tuple[str, str, str], list[float]] = {}
    metric_parts = []
    for r in runs:
        rows = table_rows(read_table(run_dir / r["run"] / "metrics.parquet"))
        col = {k: np.asarray([x.get(k, math.nan) for x in rows], float)
               for k in ("step", "eval/accuracy", "learning_rate", "gap/J", "gap/M", "gap/eta", "gap/delta_mu_eta", "gap/lr_crit",
                         "gap_fresh/lr_crit", "completions/mean_length")}
        metric_parts.append(pa.table({"run": [r["run"]] * len(rows), **vocabulary(col), **col}))
        cell = (r["grid"], r["task"], r["preset"])
        by_cell.setdefault(cell, {}).setdefault(r["lr"], []).append(_evals(rows, r["status"], r["steps"]))
        first = [x for x in rows if math.isfinite(x.get("completions/mean_length", math.nan))]
        if first and r["lr"] == min(config.lrs):  # the base model's response length: the first step's completions
            lengths.setdefault(cell, []).append(min(first, key=lambda x: x["step"])["completions/mean_length"])
    probe_rows = probes.to_pylist()
    rec_rows = recommended.to_pylist() if recommended is not None else []
    adaptive_rows = adaptive.to_pylist() if adaptive is not None else []
    cell_rows, rate_rows, probe_out, adaptive_out = [], [], [], []
    for (grid, task, preset), curves in sorted(by_cell.items()):
        m = measure_cell(sorted(curves), curves, config.n_eval)
        repeat = int(task.rsplit("repeat=", 1)[1]) if "repeat=" in task else math.nan
        length = float(np.mean(lengths.get((grid, task, preset), [math.nan])))
        mine = [p for p in probe_rows if p["task"] == task and p["preset"] == preset]
        rec = {}
        for p in rec_rows:
            if p["task"] == task and p["preset"] == preset:
                rec.setdefault(p["seed"], []).append((p["step"], p["accuracy"], p["status"]))
        rec_finals = [np.mean([a for _, a, _ in sorted(v)[-2:]]) for v in rec.values()]
        rec_final = float(np.mean(rec_finals)) if rec_finals else math.nan
        tolerance = max(TOLERANCE, m["best_accuracy_se"] if math.isfinite(m["best_accuracy_se"]) else 0.0)
        for p in mine:
            ratio = p["critical_rate"] / m["critical_rate"] if math.isfinite(m["critical_rate"]) else math.nan
            probe_out.append({"grid": grid, "task": task, "preset": preset, "seed": p["seed"], "predicted": p["critical_rate"],
                              "recommended": p["recommended_rate"], "second_order": p["second_order_rate"], "J0": p["J0"],
                              "measured": m["critical_rate"], "measured_low": m["critical_low"], "measured_high": m["critical_high"],
                              "ratio": ratio, "within": bool(math.isfinite(ratio) and 1 / WITHIN <= ratio <= WITHIN),
                              "second_order_ratio": p["second_order_rate"] / m["critical_rate"] if math.isfinite(m["critical_rate"]) else math.nan,
                              "tuning": grid == "a" and p["seed"] in config.probe_tuned_on, "scan": p["scan"]})
        # schedule probe from each start: final accuracy (over seeds), collapse, steps to 90% of the best run's final
        best_curves = curves[m["best_lr"]]
        goal = 0.9 * m["best_accuracy"]
        best_steps = float(np.mean([min([s for s, a in sorted(c.items()) if a >= goal], default=math.inf) for c in best_curves]))
        for lr in config.adaptive_starts:
            mine_a = {}
            for p in adaptive_rows:
                if p["task"] == task and p["preset"] == preset and p["lr"] == lr:
                    mine_a.setdefault(p["seed"], []).append((p["step"], p["accuracy"]))
            if not mine_a:
                continue
            finals = [np.mean([a for _, a in sorted(v)[-2:]]) for v in mine_a.values()]
            reach = float(np.mean([min([s for s, a in sorted(v) if a >= goal], default=math.inf) for v in mine_a.values()]))
            start = np.mean([sorted(v)[0][1] for v in mine_a.values()])
            fell = any(min(a for _, a in v) <= start / 2 for v in mine_a.values())
            adaptive_out.append({"grid": grid, "task": task, "preset": preset, "start_lr": lr, "accuracy_final": float(np.mean(finals)),
                                 "best_accuracy": m["best_accuracy"], "tolerance": tolerance,
                                 "ok": bool(np.mean(finals) >= m["best_accuracy"] - tolerance), "collapsed": bool(fell),
                                 "steps_to_90pct": reach, "best_steps_to_90pct": best_steps,
                                 "fast": bool(reach <= 1.5 * best_steps), "seeds": len(finals)})
        cell_rows.append({"grid": grid, "task": task, "preset": preset, "repeat": repeat, "length": length, "best_lr": m["best_lr"],
                          "best_accuracy": m["best_accuracy"], "best_accuracy_se": m["best_accuracy_se"],
                          "critical_rate": m["critical_rate"], "critical_low": m["critical_low"], "critical_high": m["critical_high"],
                          "recommended_accuracy": rec_final, "recommended_runs": len(rec_finals), "tolerance": tolerance,
                          "recommended_ok": bool(rec_finals) and rec_final >= m["best_accuracy"] - tolerance,
                          "probe_median": float(np.median([p["critical_rate"] for p in mine])) if mine else math.nan})
        rate_rows += [{"grid": grid, "task": task, "preset": preset, **x} for x in m["per_rate"]]

    # (b): the critical rate against response length, per preset
    slopes = {}
    for preset in config.length_presets:
        pts = [c for c in cell_rows if c["grid"] == "b" and c["preset"] == preset]
        fit = loglog_slope([c["length"] for c in pts], [c["critical_rate"] for c in pts])
        slopes[preset] = {"slope": fit.slope, "low": fit.low, "high": fit.high, "points": fit.n, "theory": THEORY_SLOPE.get(preset)}
    scored = [p for p in probe_out if not p["tuning"]]
    ratios = [p["ratio"] for p in probe_out if math.isfinite(p["ratio"])]
    share = lambda ps: sum(p["within"] for p in ps) / len(ps) if ps else math.nan  # noqa: E731
    rec_cells = [c for c in cell_rows if c["recommended_runs"]]
    summary: dict[str, Any] = {
        "cells": [{k: c[k] for k in ("grid", "task", "preset", "length", "best_lr", "best_accuracy", "critical_low", "critical_high",
                                     "probe_median", "recommended_accuracy", "recommended_ok")} for c in cell_rows],
        "slopes": slopes,
        "probe_within_2x": {"all": share(probe_out), "scored": share(scored), "pairs": len(probe_out), "scored_pairs": len(scored),
                            "tuned_on": f"grid (a), seeds {list(config.probe_tuned_on)}"},
        "probe_ratio_range": [min(ratios), max(ratios)] if ratios else [],
        "second_order_within_2x": sum(1 / WITHIN <= p["second_order_ratio"] <= WITHIN for p in probe_out) / max(len(probe_out), 1),
        "recommended_ok": f"{sum(c['recommended_ok'] for c in rec_cells)}/{len(rec_cells)}",
        "runs": len(runs), "run_hours_on_workers": round(sum(r["seconds"] for r in runs if math.isfinite(r["seconds"])) / 3600
                                                         / config.workers, 3),
    }
    checks = [Check(f"the probe's predicted critical rate is within {WITHIN:g}x of the measured one in at least 90% of (cell, seed) pairs",
                    share(scored) >= 0.9, f"{share(scored):.0%} of {len(scored)} scored pairs ({share(probe_out):.0%} of all "
                    f"{len(probe_out)}); ratio predicted/measured {summary['probe_ratio_range']}",
                    ">= 90% within 2x (measured: the geometric midpoint of the bracket)", "claim",
                    enough=len(scored) >= MIN_PAIRS)]
    if rec_cells:
        checks.append(Check("training at the probe's recommended rate ends within 0.02 (or one SE) of the best fixed rate, every cell",
                            all(c["recommended_ok"] for c in rec_cells),
                            "; ".join(f"{c['task']}/{c['preset']}: {c['recommended_accuracy']:.3f} vs best {c['best_accuracy']:.3f}"
                                      for c in rec_cells), "every cell", "claim", enough=len(rec_cells) >= MIN_CELLS))
    if adaptive_out:
        summary["adaptive"] = {"ok": f"{sum(a['ok'] for a in adaptive_out)}/{len(adaptive_out)}",
                               "collapsed": sum(a["collapsed"] for a in adaptive_out),
                               "fast": f"{sum(a['fast'] for a in adaptive_out)}/{len(adaptive_out)}",
                               "rescan": config.probe_rescan, "seeds": list(config.adaptive_seeds) or "the grids'"}
        checks.append(Check("schedule probe, from the grid's lowest and highest rate, ends within 0.02 (or one SE) of the best "
                            "fixed rate in every cell, never collapses, and reaches 90% of the best run's accuracy in at most 1.5x its steps",
                            all(a["ok"] and not a["collapsed"] and a["fast"] for a in adaptive_out),
                            f"within: {summary['adaptive']['ok']}, collapsed: {summary['adaptive']['collapsed']}, "
                            f"fast enough: {summary['adaptive']['fast']} (cell x start; re-scans: {config.probe_rescan}; seeds: "
                            f"{summary['adaptive']['seeds']})", "every cell and start", "claim",
                            enough=len({(a["task"], a["preset"]) for a in adaptive_out}) >= MIN_CELLS))
    for preset, s in slopes.items():
        if math.isfinite(s["slope"]) and s["theory"] is not None:
            other = -1.0 if s["theory"] == 0 else 0.0  # the other preset family's slope: the interval must tell them apart
            both = s["low"] <= other <= s["high"] and s["low"] <= s["theory"] <= s["high"]
            checks.append(Check(f"{preset}: the critical rate against response length has the theory's slope ({s['theory']:g})",
                                s["low"] <= s["theory"] <= s["high"] and not both,
                                f"slope {s['slope']:.2f} [{s['low']:.2f}, {s['high']:.2f}] over {s['points']} lengths"
                                + (f"; the interval contains {s['theory']:g} and {other:g}: it cannot tell 0 from -1" if both else ""),
                                f"the 95% interval contains {s['theory']:g} and not {other:g} (the theory's slopes are for raw "
                                "gradient steps; these runs use Adam)", "claim", enough=not both))
        else:
            summary.setdefault("not_enough_data", []).append(f"{preset}: {s['points']} lengths with a measured critical rate (3 needed)")
    tables = {"metrics": pa.concat_tables(metric_parts), "cells": pa.Table.from_pylist(cell_rows), "rates": pa.Table.from_pylist(rate_rows),
              "probes": pa.Table.from_pylist(probe_out)}
    if adaptive_out:
        tables["adaptive"] = pa.Table.from_pylist(adaptive_out)
    return Result(tables, summary, checks)


# --- figures -------------------------------------------------------------------------------------


def plot(out: Path) -> list[str]:
    cells = read_table(out / "cells.parquet").to_pylist()
    rates = read_table(out / "rates.parquet").to_pylist()
    probes = read_table(out / "probes.parquet").to_pylist()
    figures = []
    shown = [c for c in cells if c["grid"] == "a"] + [c for c in cells if c["grid"] == "b" and c["preset"] == "grpo"]
    fig, axes = plotting.panels(len(shown), width=3.4)
    for ax, c in zip(np.atleast_1d(axes), shown):
        pts = sorted((r for r in rates if r["task"] == c["task"] and r["preset"] == c["preset"]), key=lambda r: r["lr"])
        x = [r["lr"] for r in pts]
        y = np.asarray([r["accuracy_final"] for r in pts])
        ax.errorbar(x, y, yerr=[y - [r["accuracy_final_low"] for r in pts], [r["accuracy_final_high"] for r in pts] - y],
                    fmt="k-o", ms=3, lw=0.8, capsize=2, label="final accuracy (95% CI over seeds)")
        ax.axhline(pts[0]["accuracy_start"], color="0.6", ls=":", lw=0.8, label="start")
        if math.isfinite(c["critical_low"]):
            ax.axvspan(c["critical_low"], c["critical_high"] if math.isfinite(c["critical_high"]) else max(x), color="C3",
                       alpha=0.12, label="measured critical rate")
        for p in probes:
            if p["task"] == c["task"] and p["preset"] == c["preset"] and math.isfinite(p["predicted"]):
                ax.axvline(p["predicted"], color="C3", lw=0.8, ls="--")
                ax.axvline(p["recommended"], color="C2", lw=0.8, ls="--")
        if math.isfinite(c["recommended_accuracy"]):
            ax.plot([c["probe_median"] / 2], [c["recommended_accuracy"]], "*", color="C2", ms=9, label="run at the recommended rate")
        ax.plot([], [], color="C3", ls="--", lw=0.8, label="probe: predicted critical")
        ax.plot([], [], color="C2", ls="--", lw=0.8, label="probe: recommended")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_title(c["task"].replace("add:min_digits=2:max_digits=2:", "add2:") + f" / {c['preset']}", fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("held-out accuracy at the end")
    np.atleast_1d(axes)[0].legend(fontsize=5)
    fig.suptitle("Accuracy against learning rate, with the probe's prediction (made before training)")
    figures.append(plotting.save(fig, out / "lr_oracle_accuracy.png"))

    fig, (ax, ax2) = plotting.panels(2, width=4.2)
    for i, preset in enumerate(sorted({c["preset"] for c in cells if c["grid"] == "b"})):
        pts = sorted((c for c in cells if c["grid"] == "b" and c["preset"] == preset), key=lambda c: c["length"])
        ok = [c for c in pts if math.isfinite(c["critical_rate"])]
        if ok:
            L = np.asarray([c["length"] for c in ok])
            mid = np.asarray([c["critical_rate"] for c in ok])
            ax.errorbar(L * (1 + 0.03 * i), mid, yerr=[mid - [c["critical_low"] for c in ok], [c["critical_high"] for c in ok] - mid],
                        fmt="o-", color=f"C{i}", ms=4, capsize=2, label=preset)
    if ax.lines:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no length with a measured critical rate", ha="center", transform=ax.transAxes, fontsize=7)
    ax.set_xlabel("mean response length (tokens)")
    ax.set_ylabel("measured critical learning rate")
    ax.set_title("critical rate against response length (bracket on the grid)", fontsize=8)
    lo, hi = math.inf, 0.0
    for p in probes:
        if math.isfinite(p["measured"]) and math.isfinite(p["predicted"]) and p["predicted"] > 0:
            ax2.plot(p["measured"], p["predicted"], "o" if p["grid"] == "a" else "s", color="C1" if p["tuning"] else "C0", ms=4, alpha=0.8)
            lo, hi = min(lo, p["measured"], p["predicted"]), max(hi, p["measured"], p["predicted"])
    if hi > 0:
        xs = np.geomspace(lo / 3, hi * 3, 10)
        ax2.plot(xs, xs, "k-", lw=0.8)
        for f, ls in ((1.5, "--"), (2.0, ":")):
            ax2.plot(xs, xs * f, "k", ls=ls, lw=0.7, label=f"{f:g}x")
            ax2.plot(xs, xs / f, "k", ls=ls, lw=0.7)
    ax2.plot([], [], "o", color="C1", label="tuning (grid a, tuned seed)")
    ax2.plot([], [], "o", color="C0", label="scored: grid (a) other seeds")
    ax2.plot([], [], "s", color="C0", label="scored: grid (b)")
    if hi > 0:
        ax2.set_xscale("log")
        ax2.set_yscale("log")
    ax2.set_xlabel("measured critical rate (midpoint of the bracket)")
    ax2.set_ylabel("probe's predicted critical rate")
    ax2.legend(fontsize=5)
    figures.append(plotting.save(fig, out / "lr_oracle_critical.png"))
    return figures


EXPERIMENT = Experiment(
    name="lr-oracle",
    title="The learning-rate oracle: fixed-rate sweeps on language models, and the probe's recommended rate against them",
    description=__doc__.split("\n\n")[1],
    config=LrOracleConfig,
    run=run,
    plot=plot,
)
