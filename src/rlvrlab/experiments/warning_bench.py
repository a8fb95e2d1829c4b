"""Warn before a run collapses, and prove it: a labelled corpus of GRPO runs, rlvrlab's warnings
against the monitors practitioners install (rlwatch, rldoctor, rlprobe) and the single signals of
the literature, all scored on the same runs.

The corpus is a grid of ordinary `rlvrlab lm train` runs (rlvrlab.integrations.sweep.lm_sweep:
resumable run by run) of the tiny base model: tasks × learning rates (a geometric grid across each
task's collapse edge) × presets × seeds, with held-out accuracy every `eval_every` steps. Each run
is labelled from its held-out accuracy alone (rlvrlab.analysis.alarms.label_run: collapsed,
stalled or healthy; a collapsed run's onset is the first evaluation of its fall), with a noise
margin of two binomial standard errors of one evaluation at the starting accuracy. A run that
diverged (non-finite weights) scores 0 at the step it diverged.

Every detector sees a run's per-step metrics one step at a time (no look-ahead):
rlvrlab's rules (rlvrlab.analysis.alarms: the monitor's current rule on in-sample and on fresh
samples, the critical rate below the rate in use, a trend of the realized log-odds change), the
literature's single signals, and each peer's own detectors through its package (rlvrlab.analysis.peers,
at its defaults, and for rldoctor and rlprobe also checked every step instead of every 25).
A detector with a threshold runs twice: at its default, and tuned (by F1) on the runs of
`tune_seeds`; every score is measured on the other seeds' runs only. rlvrlab's best rule is the
one with the best F1 on the tuning runs, so that choosing it does not look at the scored runs.

The same corpus carries two statements of the paper (rlvrlab.analysis.corpus): the ‖g_GRPO‖
proxy of §6.2 against the unbiased Gap Alignment, and §3.2.1's vanishing gap (groups without
reward variance) against held-out progress.

A detector is scored twice: as a detector (any alarm on a collapsed run counts, however late) and
as a warning ("in time": only a collapsed run's alarms at or before its onset count).

Claims checked (reported either way): the corpus has at least 25% collapsed and 25% healthy runs;
rlvrlab's best rule is ahead of every peer package on F1, on F1 as a warning, and on median lead
time (steps from the first alarm to the onset) on the scored runs; in TRL it warns on the same
runs as in rlvrlab's trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rlvrlab import _checks, plotting
from rlvrlab.analysis import alarms
from rlvrlab.analysis.stats import bootstrap_ci
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.io import read_table, rows_table, table_rows
from rlvrlab.lm.diagnostics import vocabulary

__all__ = ["EXPERIMENT", "WarningBenchConfig", "plot", "run"]

RLVRLAB = ("rlvrlab/current", "rlvrlab/fresh", "rlvrlab/lr_crit", "rlvrlab/log_odds_trend")
TRL_AGREEMENT = 0.8  # share of the TRL subset whose warning must agree with rlvrlab's trainer's (a stated tolerance:
# the two trainers sample different batches, so runs near the collapse edge may go either way)
PROXY_RHO = 0.5  # a proxy "stands for" Δμ when it ranks steps alike: a rank correlation of at least 0.5 (stated, not tuned)
MIN_SCORED = 5  # collapsed and healthy scored runs each, below which detectors are not compared (quick mode)
# the per-step columns kept in metrics.parquet: what the detectors, the peers and the figures read
KEEP = ("step", "eval/accuracy", "learning_rate", "loss", "grad_norm", "entropy", "reward", "reward_std", "frac_reward_zero_std",
        "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "completions/mean_length",
        "completions/max_length", "completions/min_length", "completions/clipped_ratio", "advantage_std", "loss/abs_advantage")
GAP_KEYS = ("crit_ratio", "log_odds_change", "lr_crit", "delta_mu_eta", "eta", "M", "J", "zero_variance_groups",
            "grpo_norm_proxy", "var_plus", "var_minus")


@dataclass(frozen=True)
class WarningBenchConfig:
    model: str = setting("", "a Hugging Face causal LM directory; empty: the tiny base model (trained once, then cached)")
    tasks: tuple[str, ...] = setting(("add", "arith", "countdown"), "tasks of rlvrlab.lm.tasks")
    presets: tuple[str, ...] = setting(("grpo", "dr-grpo", "dapo"), "update rules of rlvrlab.updates")
    lrs: tuple[float, ...] = setting((3e-5, 6e-5, 1.2e-4, 2.2e-4, 4.2e-4, 8e-4, 1.6e-3, 3e-3),
                                     "Adam's learning rates, the same for every task: a geometric grid (100×) around the "
                                     "tasks' collapse edge, 3e-4 to 1e-3 on the tiny model")
    seeds: tuple[int, ...] = setting((0, 1, 2), "seeds of the runs")
    tune_seeds: tuple[int, ...] = setting((0,), "seeds whose runs tune the thresholds and choose rlvrlab's best rule; "
                                                "the other seeds' runs are scored")
    steps: int = setting(60, "GRPO steps per run")
    batch_size: int = setting(64, "completions per step")
    group: int = setting(8, "completions per prompt")
    prompts: int = setting(400, "problems per task (20% held out)")
    max_new_tokens: int = setting(48, "longest completion")
    eval_every: int = setting(5, "steps between held-out evaluations (the resolution of the onset)")
    eval_samples: int = setting(2, "completions per held-out prompt per evaluation")
    fresh_samples: int = setting(4, "completions per prompt never trained on, for the fresh-sample rule (gap_fresh/*)")
    trl_task: str = setting("add", "the task of the TRL subset: its rate grid × trl_seeds through GapGRPOTrainer (preset grpo), "
                                   "compared with rlvrlab's trainer on the same settings; empty: no TRL runs")
    trl_seeds: tuple[int, ...] = setting((0, 1), "seeds of the TRL subset")
    workers: int = setting(2, "runs trained at once (one torch thread each: rlvrlab lm sweep's faster layout on 2 cores)")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "group", "prompts", "max_new_tokens", "eval_every", "eval_samples", "workers"):
            check_positive_int(name, getattr(self, name))
        check_positive_floats("lrs", self.lrs)
        for name in ("tasks", "presets", "lrs", "seeds"):
            if not getattr(self, name):
                _checks.fail(name, getattr(self, name), "at least one value")
        if not set(self.tune_seeds) < set(self.seeds) or not self.tune_seeds:
            _checks.fail("tune_seeds", self.tune_seeds, f"a non-empty proper subset of seeds {self.seeds} (the rest are scored)")
        if self.trl_task and (self.trl_task not in self.tasks or "grpo" not in self.presets or not set(self.trl_seeds) <= set(self.seeds)):
            _checks.fail("trl_task", self.trl_task, f"empty, or one of tasks {self.tasks} with 'grpo' among the presets and "
                         "trl_seeds among the seeds (each TRL run is compared with rlvrlab's run of the same settings)")
        from rlvrlab.lm.sweep import expand_grid

        expand_grid(self.grid("model"))  # every TrainConfig's own checks, before any run

    @classmethod
    def quick(cls) -> WarningBenchConfig:
        return cls(tasks=("add",), presets=("grpo",), lrs=(1e-4, 4.2e-4, 1.6e-3), seeds=(0, 1), tune_seeds=(0,), steps=20,
                   batch_size=32, prompts=120, eval_every=5, eval_samples=2, fresh_samples=2, trl_task="")

    def grid(self, model: str) -> dict[str, Any]:
        return {"model": model, "steps": self.steps, "batch_size": self.batch_size, "group": self.group, "prompts": self.prompts,
                "max_new_tokens": self.max_new_tokens, "eval_every": self.eval_every, "eval_samples": self.eval_samples,
                "fresh_samples": self.fresh_samples, "kl_reference": True, "checkpoint_every": 20,
                "task": list(self.tasks), "preset": list(self.presets), "lr": list(self.lrs), "seed": list(self.seeds)}

    @property
    def n_eval(self) -> int:
        """Completions per held-out evaluation (the trainer holds out 20% of the problems)."""
        return max(1, round(0.2 * self.prompts)) * self.eval_samples


# --- the corpus ---------------------------------------------------------------------------------


def _rows(run_dir: Path) -> list[dict[str, float]]:
    return table_rows(read_table(run_dir / "metrics.parquet"))


def _label(rows: list[dict[str, float]], status: str, n_eval: int) -> alarms.RunLabel:
    evals = alarms.evals_from_rows(rows)
    if status == "diverged":  # non-finite weights solve nothing
        evals.append((int(rows[-1]["step"]) + 1, 0.0))
    a0 = evals[0][1]
    margin = 2 * math.sqrt(max(a0 * (1 - a0), 1e-12) / n_eval)  # two binomial standard errors of one evaluation
    return alarms.label_run(evals, margin=margin)


def _peer_alarms(rows: list[dict[str, float]]) -> tuple[dict[str, list[int]], str]:
    """Each peer detector's alarm steps, "<package>:<detector>" (at its defaults) and
    "<package>@1:<detector>" (rldoctor and rlprobe checked every step), with "<package>:any" for
    any of them; and a note naming the packages that are not installed."""
    from rlvrlab.analysis import peers

    out: dict[str, list[int]] = {}
    missing = []
    for package in peers.PEERS:
        try:
            variants = {package: peers.peer_alarms(package, rows)}
            if package != "rlwatch":
                variants[f"{package}@1"] = peers.peer_alarms(package, rows, check_every=1)
        except ValueError as err:
            if "pip install" not in str(err):
                raise
            missing.append(package)
            continue
        for name, found in variants.items():
            for det, steps in found.items():
                out[f"{name}:{det}"] = steps
            out[f"{name}:any"] = sorted({s for steps in found.values() for s in steps})
    note = f"not installed (pip install 'rlvrlab[peers]'): {', '.join(missing)}" if missing else ""
    return out, note


def _trl_cell(params: dict[str, Any]) -> pa.Table:
    """One TRL run of the subset (a sweep cell): the TrainConfig ``params`` through GapGRPOTrainer."""
    import tempfile

    from rlvrlab.integrations.trl_matched import train_matched
    from rlvrlab.lm.config import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:  # the sweep keeps the cell's table; the run directory is scratch
        return rows_table(train_matched(TrainConfig(**params), Path(tmp) / "run"))


def in_time(scored: list[alarms.ScoredRun]) -> list[alarms.ScoredRun]:
    """The runs with a collapsed run's alarms after its onset dropped: what a warning is for. A
    healthy run's alarms all stay (a false alarm is false whenever it comes)."""
    return [alarms.ScoredRun(r.label, tuple(a for a in r.alarms if r.label.kind != "collapsed" or a <= r.label.onset))
            for r in scored]


def _score_row(name: str, family: str, setting_: str, scored: list[alarms.ScoredRun]) -> dict[str, Any]:
    """The detector's score (alarms.score), and its score as a warning: counting only the alarms of
    a collapsed run at or before its onset (``in_time_*``)."""
    # percentile intervals: BCa's jackknife is undefined for a median of leads that are mostly one value (step 1's alarm)
    s, w = alarms.score(scored, method="percentile"), alarms.score(in_time(scored), method="percentile")
    return {"detector": name, "family": family, "setting": setting_, **s.row(),
            "in_time_recall": w.recall, "in_time_recall_low": w.recall_ci[0], "in_time_recall_high": w.recall_ci[1],
            "in_time_f1": w.f1, "in_time_f1_low": w.f1_ci[0], "in_time_f1_high": w.f1_ci[1]}


def _f1_difference_ci(a: list[alarms.ScoredRun], b: list[alarms.ScoredRun]) -> tuple[float, float]:
    """95% bootstrap interval of F1(a) − F1(b) over the same runs (paired, stratified by label)."""
    def arrays(kind: str) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(bool(x.alarms), bool(y.alarms)) for x, y in zip(a, b) if x.label.kind == kind]
        return np.asarray([p[0] for p in pairs], float), np.asarray([p[1] for p in pairs], float)

    (ca, cb), (ha, hb) = arrays("collapsed"), arrays("healthy")
    if min(len(ca), len(ha)) < 2:
        return math.nan, math.nan
    idx_c, idx_h = np.arange(len(ca), dtype=float), np.arange(len(ha), dtype=float)

    def diff(ic: np.ndarray, ih: np.ndarray, axis: int = -1) -> np.ndarray:
        ic, ih = ic.astype(int), ih.astype(int)
        return alarms.f1_score(ca[ic], ha[ih], axis) - alarms.f1_score(cb[ic], hb[ih], axis)

    return bootstrap_ci(diff, idx_c, idx_h, method="percentile")


def run(config: WarningBenchConfig, progress: Progress, workdir: Path) -> Result:
    from rlvrlab.integrations.sweep import lm_sweep
    from rlvrlab.lm.pretrain import PretrainConfig, pretrain

    model = config.model
    if not model:
        base = PretrainConfig()
        model = str(pretrain(base, on_step=progress.task("pretraining the tiny base model (once)", base.max_steps)))
    grid = config.grid(model)
    n_runs = len(config.tasks) * len(config.presets) * len(config.lrs) * len(config.seeds)
    advance = progress.task(f"{n_runs} GRPO runs (resumable)", n_runs)
    table = lm_sweep(grid, workdir / "runs", workers=config.workers, on_run=lambda row, trained: advance(1))

    runs = [r for r in table.to_pylist() if r["status"] in ("finished", "diverged")]
    if len(runs) < n_runs:
        failed = [f"{r['run']}: {r['status']} {r['message']}" for r in table.to_pylist() if r["status"] not in ("finished", "diverged")]
        raise RuntimeError(f"{len(failed)} of {n_runs} runs did not end (run again to resume them); first: {failed[0]}")
    table_trl = None
    if config.trl_task:  # the TRL subset: the same settings through GapGRPOTrainer
        from rlvrlab.integrations.sweep import run_sweep
        from rlvrlab.lm.sweep import expand_grid

        subset = [c for _, c in expand_grid({**grid, "task": config.trl_task, "preset": "grpo", "seed": list(config.trl_seeds)})]
        cells = [c.identity() for c in subset]  # named by the non-default settings: a setting added later keeps the cells
        advance_trl = progress.task(f"{len(cells)} TRL runs (GapGRPOTrainer)", len(cells))
        table_trl = run_sweep(_trl_cell, cells, workdir / "trl", workers=config.workers, on_cell=advance_trl)
    return analyse(config, runs, workdir / "runs", table_trl, model)


def analyse(config: WarningBenchConfig, runs: list[dict[str, Any]], run_dir: Path, table_trl: pa.Table | None,
            model: str) -> Result:
    """Labels, every detector's alarms, the scores and the TRL comparison, from the corpus's run
    directories under ``run_dir`` (``runs``: their rows of the sweep's runs table) and the TRL
    subset's rows (``table_trl``, or None)."""
    rows = {r["run"]: _rows(run_dir / r["run"]) for r in runs}
    labels = {r["run"]: _label(rows[r["run"]], r["status"], config.n_eval) for r in runs}
    tune = [r["run"] for r in runs if r["seed"] in config.tune_seeds]
    scored = [r["run"] for r in runs if r["seed"] not in config.tune_seeds]

    # every detector's alarm steps on every run: rlvrlab's and the literature's at default and tuned, the peers'
    found: dict[str, dict[str, list[int]]] = {}  # detector (with setting) -> run -> alarm steps
    family: dict[str, tuple[str, str]] = {}
    tuned_params: dict[str, dict[str, Any]] = {}
    made_as: dict[str, tuple[str, dict[str, Any]]] = {}  # rlvrlab's and the literature's keys -> (detector, parameters)
    for name, factory in alarms.DETECTORS.items():
        fam = "rlvrlab" if name in RLVRLAB else "literature"
        params = alarms.tune(factory, alarms.GRIDS[name], [rows[n] for n in tune], [labels[n] for n in tune])
        tuned_params[name] = params
        for setting_, kw in (("default", {}), ("tuned", params)):
            key = f"{name} ({setting_})"
            made_as[key] = (name, kw)
            found[key] = {n: alarms.alarm_steps(factory(**kw), rows[n]) for n in rows}
            family[key] = (fam, setting_ if setting_ == "default" else "tuned: " + ", ".join(f"{k}={v}" for k, v in kw.items()))
    peer_found: dict[str, dict[str, list[int]]] = {}
    peer_note = ""
    for n in rows:
        per_run, peer_note = _peer_alarms(rows[n])
        for det, steps in per_run.items():
            peer_found.setdefault(det, {})[n] = steps
    for det, per_run in peer_found.items():
        found[det] = per_run
        family[det] = ("peer" if det.endswith(":any") else "peer detector", "default" if "@1" not in det else "checked every step")

    def scored_runs(key: str, names: list[str]) -> list[alarms.ScoredRun]:
        return [alarms.ScoredRun(labels[n], tuple(found[key][n])) for n in names]

    score_rows = [_score_row(key, *family[key], scored_runs(key, scored)) for key in found]
    on_tune = {key: alarms.score(scored_runs(key, tune), intervals=False) for key in found if family[key][0] == "rlvrlab"}
    ranked = sorted(on_tune, key=lambda k: (np.nan_to_num(on_tune[k].f1, nan=-1), np.nan_to_num(on_tune[k].lead_median, nan=-1e9)))
    best = ranked[-1]
    best_trl = [k for k in ranked if not k.startswith("rlvrlab/fresh")][-1]  # TRL runs have no fresh samples

    # the TRL subset: the same settings through GapGRPOTrainer, the same labels and detectors
    trl_rows, trl_summary = [], {}
    if table_trl is not None:
        from rlvrlab.lm.config import DEFAULT_SETTINGS

        settings = set(DEFAULT_SETTINGS)  # a TRL cell's columns that are its settings (its non-default ones; None: the default)
        setting = lambda r, k: DEFAULT_SETTINGS[k] if r.get(k) is None else r[k]  # noqa: E731
        by_cell: dict[tuple[float, int], list[dict[str, float]]] = {}
        for r in table_trl.to_pylist():
            by_cell.setdefault((setting(r, "lr"), setting(r, "seed")), []).append(
                {k: (math.nan if v is None else float(v)) for k, v in r.items() if k not in settings})
        mine = {(r["lr"], r["seed"]): r["run"] for r in runs if r["task"] == config.trl_task and r["preset"] == "grpo"}
        watched = list(dict.fromkeys(["rlvrlab/current (default)", best_trl]))
        agree = {"label": 0, **{w: 0 for w in watched}}
        for (lr, seed), rs in by_cell.items():
            rs.sort(key=lambda r: r["step"])
            status = "diverged" if rs[-1].get("diverged", math.nan) == 1 else "finished"
            if status == "diverged":
                rs = rs[:-1]
            lab, own = _label(rs, status, config.n_eval), mine[(lr, seed)]
            row = {"lr": lr, "seed": seed, "status": status, "label_trl": lab.kind, "label_own": labels[own].kind,
                   "accuracy_start_trl": lab.start, "accuracy_final_trl": lab.final, "accuracy_final_own": labels[own].final}
            agree["label"] += lab.kind == labels[own].kind
            for w in watched:
                name, kw = made_as[w]
                first_trl = alarms.first_alarm(alarms.DETECTORS[name](**kw), rs)
                first_own = min(found[w][own]) if found[w][own] else None
                row[f"first_alarm_trl/{w}"] = math.nan if first_trl is None else float(first_trl)
                row[f"first_alarm_own/{w}"] = math.nan if first_own is None else float(first_own)
                agree[w] += (first_trl is None) == (first_own is None)
            trl_rows.append(row)
        trl_summary = {"task": config.trl_task, "runs": len(by_cell), "rule": best_trl,
                       "agreement": {k: f"{v}/{len(by_cell)}" for k, v in agree.items()}}

    # --- tables ------------------------------------------------------------------------------------
    run_rows = []
    for r in runs:
        lab = labels[r["run"]]
        run_rows.append({"run": r["run"], "task": r["task"], "preset": r["preset"], "lr": r["lr"], "seed": r["seed"],
                         "status": r["status"], "scored": r["seed"] not in config.tune_seeds, "label": lab.kind,
                         "onset": math.nan if lab.onset is None else float(lab.onset), "accuracy_start": lab.start,
                         "accuracy_final": lab.final, "margin": lab.margin, "seconds": r["seconds"],
                         **{f"first_alarm/{k}": float(min(v[r["run"]])) if v[r["run"]] else math.nan for k, v in found.items()}})
    metric_parts = []
    for n, rs in rows.items():
        cols = list(KEEP) + [p + k for p in ("gap/", "gap_fresh/") for k in GAP_KEYS]
        kept = {c: np.asarray([r.get(c, math.nan) for r in rs], float) for c in cols}
        metric_parts.append(pa.table({"run": [n] * len(rs), **vocabulary(kept), **kept}))
    alarm_rows = [{"run": n, "detector": key, "step": s} for key, per_run in found.items() for n, steps in per_run.items()
                  for s in steps]

    # --- headline and checks ------------------------------------------------------------------------
    counts = alarms.label_counts([labels[n] for n in rows])
    share = {k: v / len(rows) for k, v in counts.items()}
    by_name = {row["detector"]: row for row in score_rows}
    b = by_name[best]
    packages = sorted(k for k in found if k.endswith(":any") and "@1" not in k)
    packages_every = sorted(k for k in found if k.endswith(":any") and "@1" in k)
    versus = {}
    for p in packages + packages_every:
        lo, hi = _f1_difference_ci(scored_runs(best, scored), scored_runs(p, scored))
        lo_w, hi_w = _f1_difference_ci(in_time(scored_runs(best, scored)), in_time(scored_runs(p, scored)))
        versus[p] = {"f1_difference": b["f1"] - by_name[p]["f1"], "f1_difference_ci": [lo, hi],
                     "in_time_f1_difference": b["in_time_f1"] - by_name[p]["in_time_f1"],
                     "in_time_f1_difference_ci": [lo_w, hi_w],
                     "lead_median_difference": b["lead_median"] - by_name[p]["lead_median"]}
    seconds = sum(r["seconds"] for r in runs if math.isfinite(r["seconds"]))
    summary: dict[str, Any] = {
        "model": model, "runs": len(rows), "labels": counts, "scored_runs": len(scored), "tuning_runs": len(tune),
        "run_seconds_total": round(seconds, 1), "run_hours_on_workers": round(seconds / 3600 / config.workers, 3),
        "best_rlvrlab_rule": best, "best_rlvrlab_rule_tuned_on": f"seeds {list(config.tune_seeds)}",
        "tuned_parameters": tuned_params, "peers": peer_note or "all installed",
        "score_table": [{k: row[k] for k in ("detector", "family", "setting", "f1", "f1_low", "f1_high", "recall",
                                               "false_alarm_rate", "precision", "in_time_recall", "in_time_f1", "in_time_f1_low",
                                               "in_time_f1_high", "lead_median", "lead_median_low",
                                               "lead_median_high", "lead_q25", "lead_q75")} for row in score_rows
                        if row["family"] != "peer detector"],
        "best_versus_peers": versus,
    }
    if trl_summary:
        summary["trl_subset"] = trl_summary
    checks = [Check("the corpus has at least 25% collapsed and 25% healthy runs",
                    share["collapsed"] >= 0.25 and share["healthy"] >= 0.25,
                    ", ".join(f"{k} {v} ({share[k]:.0%})" for k, v in counts.items()), ">= 25% collapsed and >= 25% healthy",
                    "claim")]
    n_scored = {k: sum(labels[n].kind == k for n in scored) for k in ("collapsed", "healthy")}
    enough = min(n_scored.values()) >= MIN_SCORED
    if not enough:
        summary["comparison"] = (f"not enough data: {n_scored['collapsed']} collapsed and {n_scored['healthy']} healthy scored "
                                 f"runs (at least {MIN_SCORED} of each are needed to compare detectors)")
    if packages and enough:
        worst_f1 = max(by_name[p]["f1"] for p in packages + packages_every)
        worst_lead = max(np.nan_to_num(by_name[p]["lead_median"], nan=-1e9) for p in packages + packages_every)
        detail = "; ".join(f"{p}: F1 {by_name[p]['f1']:.2f}, median lead {by_name[p]['lead_median']:.1f}"
                           for p in packages + packages_every)
        ours = f"{best}: F1 {b['f1']:.2f} [{b['f1_low']:.2f}, {b['f1_high']:.2f}], median lead {b['lead_median']:.1f} steps"
        checks += [
            Check("rlvrlab's best rule is ahead of every peer monitor on F1", b["f1"] > worst_f1,
                  f"{ours}; {detail} (on {len(scored)} scored runs)", "a higher F1 than every peer package (any detector firing)",
                  "claim"),
            Check("rlvrlab's best rule is ahead of every peer monitor on F1 as a warning (alarms at or before the onset)",
                  b["in_time_f1"] > max(by_name[p]["in_time_f1"] for p in packages + packages_every),
                  f"{best}: in-time F1 {b['in_time_f1']:.2f} [{b['in_time_f1_low']:.2f}, {b['in_time_f1_high']:.2f}]; "
                  + "; ".join(f"{p}: {by_name[p]['in_time_f1']:.2f}" for p in packages + packages_every),
                  "a higher F1 than every peer package when an alarm after a collapse's onset does not count as a warning",
                  "claim"),
            Check("rlvrlab's best rule warns earlier than every peer monitor (median lead time)",
                  np.nan_to_num(b["lead_median"], nan=-1e9) > worst_lead, f"{ours}; {detail}",
                  "a longer median lead (steps from the first alarm to the onset) than every peer package", "claim"),
        ]
    if trl_rows:
        n = len(trl_rows)
        fires = [(math.isfinite(r[f"first_alarm_trl/{best_trl}"]), math.isfinite(r[f"first_alarm_own/{best_trl}"])) for r in trl_rows]
        agreed = sum(a == b for a, b in fires)
        checks.append(Check("in TRL the monitor's best rule warns on the same runs as in rlvrlab's trainer",
                            agreed >= TRL_AGREEMENT * n,
                            f"{best_trl}: {agreed} of {n} runs ({config.trl_task}, the rate grid x seeds {list(config.trl_seeds)}): warned in both "
                            f"or in neither; labels agree in {trl_summary['agreement']['label']}",
                            f"agreement in at least {TRL_AGREEMENT:.0%} of the runs", "claim"))
    # two of the paper's statements read on the same corpus (rlvrlab.analysis.corpus)
    from rlvrlab.analysis.corpus import (MIN_INTERVALS, alignment_against_progress, figure2_relation, proxy_against_gap,
                                         vanishing_gap_against_progress)

    tasks = {r["run"]: r["task"] for r in runs}
    fell = {n for n in rows if labels[n].kind == "collapsed"}
    proxy = proxy_against_gap(rows, tasks)
    proxy["figure2_without_collapsed"] = figure2_relation({n: v for n, v in rows.items() if n not in fell}, tasks)
    vanishing = vanishing_gap_against_progress(rows, fell)
    summary["grpo_proxy"], summary["vanishing_gap"] = proxy, vanishing
    intervals = alignment_against_progress(rows, fell, tasks)
    summary["figure2_intervals"] = intervals
    res = intervals["unbiased"]
    rho, (lo, hi) = res.get("spearman_at_same_step", math.nan), res.get("spearman_at_same_step_ci", (math.nan, math.nan))
    n = res.get("intervals_at_same_step", 0)
    checks.append(Check("Figure 2 interval by interval: at the same step, the runs whose steps aligned more gained more accuracy (§6.2)",
                        lo > 0, f"Spearman ρ = {rho:.2f} [{lo:.2f}, {hi:.2f}] over {n} evaluation intervals of runs that did not "
                        f"collapse, unbiased ΔM and Δaccuracy centred per task and step (raw ρ {res.get('spearman', math.nan):.2f}; "
                        f"in-sample ΔM at the same step {intervals['in_sample'].get('spearman_at_same_step', math.nan):.2f})",
                        "ρ's 95% CI above 0", "claim", enough=bool(math.isfinite(lo) and n >= MIN_INTERVALS)))
    lo, hi = proxy["spearman_pooled_ci"]
    checks.append(Check("the ‖g_GRPO‖ proxy orders steps like the unbiased Gap Alignment it stands for (§6.2)",
                        lo > PROXY_RHO, f"Spearman ρ = {proxy['spearman_pooled']:.2f} [{lo:.2f}, {hi:.2f}] over {proxy['steps']} steps "
                        f"(median per run {proxy['spearman_median_per_run']:.2f}); proxy / Δμ median {proxy['ratio_median']:.2f}",
                        f"ρ's 95% CI above {PROXY_RHO} (proxy against Δμ from fresh samples, gap_fresh/delta_mu_eta / η)", "claim"))
    if math.isfinite(vanishing["spearman"]):
        lo, hi = vanishing["spearman_ci"]
        checks.append(Check("a vanishing gap stalls learning: more groups without reward variance, less held-out progress (§3.2.1)",
                            hi < 0, f"Spearman ρ = {vanishing['spearman']:.2f} [{lo:.2f}, {hi:.2f}] over {vanishing['intervals']} "
                            f"evaluation intervals of runs that did not collapse; accuracy change {vanishing['change_lowest_quarter']:+.3f} "
                            f"in the quarter with the fewest such groups, {vanishing['change_highest_quarter']:+.3f} in the quarter "
                            "with the most", "ρ < 0 with its 95% CI below 0", "claim"))
    tables = {"metrics": pa.concat_tables(metric_parts), "runs": pa.Table.from_pylist(run_rows),
              "scores": pa.Table.from_pylist(score_rows),
              "alarms": pa.Table.from_pylist(alarm_rows) if alarm_rows else pa.table({"run": [], "detector": [], "step": []})}
    if trl_rows:
        tables["trl"] = pa.Table.from_pylist(trl_rows)
    return Result(tables, summary, checks)


# --- figures --------------------------------------------------------------------------------------


_COLORS = {"rlvrlab": "C3", "literature": "C0", "peer": "C2"}


def plot(out: Path) -> list[str]:
    scores = read_table(out / "scores.parquet").to_pylist()
    runs = read_table(out / "runs.parquet").to_pylist()
    metrics = read_table(out / "metrics.parquet")
    alarm_rows = read_table(out / "alarms.parquet").to_pylist()
    figures = []

    # lead time against false-alarm rate, one point per detector (peers as packages), with intervals
    fig, (ax, ax2) = plotting.panels(2, width=5.2)
    for s in scores:
        if s["family"] == "peer detector":
            continue
        color = _COLORS[s["family"]]
        marker = "o" if s["setting"] == "default" or s["family"] == "peer" else "s"
        x, y = s["false_alarm_rate"], s["lead_median"]
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        ax.errorbar(x, y, xerr=[[max(x - s["false_alarm_low"], 0)], [max(s["false_alarm_high"] - x, 0)]]
                    if math.isfinite(s["false_alarm_low"]) else None,
                    yerr=[[max(y - s["lead_median_low"], 0)], [max(s["lead_median_high"] - y, 0)]]
                    if math.isfinite(s["lead_median_low"]) else None, fmt=marker, color=color, ms=4, lw=0.7, capsize=2)
        ax.annotate(s["detector"].replace(" (default)", "").replace(" (tuned)", "*"), (x, y), fontsize=5,
                    xytext=(3, 2), textcoords="offset points")
        f1, w = s["f1"], s["in_time_f1"]
        ax2.errorbar(f1, w, xerr=[[max(f1 - s["f1_low"], 0)], [max(s["f1_high"] - f1, 0)]] if math.isfinite(s["f1_low"]) else None,
                     yerr=[[max(w - s["in_time_f1_low"], 0)], [max(s["in_time_f1_high"] - w, 0)]]
                     if math.isfinite(s["in_time_f1_low"]) else None, fmt=marker, color=color, ms=4, lw=0.7, capsize=2)
        ax2.annotate(s["detector"].replace(" (default)", "").replace(" (tuned)", "*"), (f1, w), fontsize=5,
                     xytext=(3, 2), textcoords="offset points")
    ax.axhline(0, color="k", ls=":", lw=0.8)
    ax.set_xlabel("false-alarm rate on healthy runs")
    ax.set_ylabel("median lead time (steps before the onset)")
    ax2.plot([0, 1], [0, 1], color="k", ls=":", lw=0.8)
    ax2.set_xlabel("F1 (any alarm on a collapsed run counts)")
    ax2.set_ylabel("F1 as a warning (alarms at or before the onset)")
    for a, (fam, c) in zip((ax, ax, ax), _COLORS.items()):
        a.plot([], [], "o", color=c, label=fam)
    ax.legend(fontsize=6, title="o default, □/* tuned", title_fontsize=6)
    fig.suptitle("Collapse warnings on the scored runs: lead time, false alarms, F1 (95% bootstrap intervals)")
    figures.append(plotting.save(fig, out / "warning_bench_scores.png"))

    # three example runs: a collapse, a stall, a healthy run; the curves the detectors watch and their alarms
    examples = []
    for kind in ("collapsed", "stalled", "healthy"):
        candidates = [r for r in runs if r["label"] == kind and r["scored"]] or [r for r in runs if r["label"] == kind]
        if candidates:
            examples.append(sorted(candidates, key=lambda r: (r["lr"], r["run"]))[len(candidates) // 2])
    if examples:
        shown = [s["detector"] for s in scores if s["family"] in ("rlvrlab", "literature") and s["setting"] == "default"]
        shown += [s["detector"] for s in scores if s["family"] == "peer"]
        fig, axes = plotting.panels(len(examples), width=4.6, height=5.6)
        axes = np.atleast_1d(axes)
        run_col = np.asarray(metrics.column("run").to_pylist())
        for ax, ex in zip(axes, examples):
            sel = run_col == ex["run"]
            col = {k: np.asarray(metrics.column(k).to_numpy(zero_copy_only=False), float)[sel]
                   for k in ("step", "eval/accuracy", "reward", "entropy", "grad_norm", "kl", "gap/crit_ratio")}
            step = col["step"]
            ev = np.isfinite(col["eval/accuracy"])
            lanes = len(shown)
            ax.plot(step[ev], col["eval/accuracy"][ev], "k-o", ms=3, label="held-out accuracy")
            ax.plot(step, col["reward"], color="0.6", lw=0.8, label="reward")
            for k, c in (("entropy", "C0"), ("grad_norm", "C1"), ("kl", "C2"), ("gap/crit_ratio", "C3")):
                v = col[k]
                ok = np.isfinite(v) & (v > 0)
                if ok.any():  # each curve scaled to [0, 1] over the run (their units differ)
                    lv = np.log(v[ok])
                    ax.plot(step[ok], (lv - lv.min()) / max(np.ptp(lv), 1e-9), color=c, lw=0.7, alpha=0.8, label=f"log {k} (scaled)")
            if math.isfinite(ex["onset"]):
                ax.axvline(ex["onset"], color="k", ls="--", lw=0.8, label="onset")
            for i, det in enumerate(shown):  # an alarm raster under the curves
                y = -0.1 - 0.08 * i
                steps = [a["step"] for a in alarm_rows if a["run"] == ex["run"] and a["detector"] == det]
                ax.scatter(steps, [y] * len(steps), marker="|", s=25, color=_COLORS["rlvrlab" if det.startswith("rlvrlab") else
                                                                                     "peer" if ":" in det else "literature"])
                ax.text(step.max() + 1, y, det.replace(" (default)", ""), fontsize=4.5, va="center")
            ax.set_ylim(-0.15 - 0.08 * lanes, 1.05)
            ax.set_xlabel("step")
            ax.set_title(f"{ex['label']}: {ex['task']}, {ex['preset']}, lr {ex['lr']:g}, seed {ex['seed']}", fontsize=7)
        axes[0].legend(fontsize=5, loc="upper right")
        fig.suptitle("Example runs: what each detector watched, and when it alarmed (ticks)")
        figures.append(plotting.save(fig, out / "warning_bench_examples.png"))
    return figures


EXPERIMENT = Experiment(
    name="warning-bench",
    title="Warn before a run collapses: rlvrlab's warnings against peer monitors on a labelled corpus of GRPO runs",
    description=__doc__.split("\n\n")[1],
    config=WarningBenchConfig,
    run=run,
    plot=plot,
)
