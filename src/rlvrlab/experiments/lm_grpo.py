"""The paper's Figure 2 on a real language model: cumulative gap alignment against held-out accuracy.

§6.2 trains Qwen2.5-Math-7B with GRPO and plots, at each evaluation, the held-out accuracy against
M_k = Σ_{j<k} max(Δμ_j·η_j, 0), the cumulative alignment of the steps with the Gradient Gap,
coloured by the normalized step: accuracy rises along M. Here the model is the tiny Qwen2 that
`rlvrlab lm pretrain` trains (or any causal LM given by `model`), GRPO runs on each task with
rlvrlab.lm.trainer, and Δμ·η is measured after every step from the post-step log-ratios of the
batch just trained on (rlvrlab.lm.diagnostics), and from `fresh_samples` completions per prompt
that the step never saw (unbiased: the in-sample estimate is optimistic). Each task runs at every
rate of `lrs`: one the theory should call safe and one it should call too large. Alongside:
held-out accuracy, the estimated ratio of each step to the second-order critical step, and the
diagnostics prompt by prompt (the trainer's `prompt_table`).

Claims checked (reported either way), at the smallest rate: accuracy improves and rises with M,
in-sample and unbiased (Spearman's ρ over the evaluations > 0; within one run that ranks the
evaluations by step, so also interval by interval: the alignment gained between two evaluations
against the accuracy gained, ρ's 95% CI above 0, rlvrlab.analysis.corpus.alignment_against_progress);
the ratio over the first `warning_steps` steps (median > 1) tells in advance which runs end below
their starting accuracy (by more than LOSS_MARGIN); and §4's success-rate scaling prompt by
prompt (eq. 18: η_crit/Δμ = 2/(var− − var+) ∝ (1 − J_q)¹, the variances pooled over the prompts
of each task and value of J_q, from the fresh completions, whose groups of `fresh_samples` give
J_q on a finer grid; rlvrlab.analysis.corpus.prompt_success_scaling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from rlvrlab import _checks, plotting
from rlvrlab.analysis.stats import spearman
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.io import read_table
from rlvrlab.lm.diagnostics import vocabulary

__all__ = ["EXPERIMENT", "LmGrpoConfig", "plot", "run"]

LOSS_MARGIN = 0.05  # a run "loses accuracy" when it ends more than this below its start (evaluation noise is ~0.03)
SLOPE_HALF_WIDTH = 0.25  # an exponent's CI must be at most this wide on each side to decide (success-scaling's rule)


@dataclass(frozen=True)
class LmGrpoConfig:
    tasks: tuple[str, ...] = setting(("add", "arith", "countdown"),
                                     "tasks of rlvrlab.lm.tasks or .jsonl / .parquet question-answer files, one GRPO run each")
    model: str = setting("", "a Hugging Face causal LM directory; empty: the tiny base model (trained once, then cached)")
    preset: str = setting("grpo", "update rule of rlvrlab.updates")
    steps: int = setting(120, "GRPO steps per task")
    batch_size: int = setting(64, "completions per step (batch_size / group prompts)")
    group: int = setting(8, "completions per prompt")
    prompts: int = setting(400, "problems per task (20% held out)")
    lrs: tuple[float, ...] = setting((3e-4, 1e-3), "Adam's learning rates, one run per task each (smallest: Figure 2)")
    fresh_samples: int = setting(16, "completions per prompt for unbiased diagnostics (never trained on; the per-prompt "
                                     "success-rate scaling reads their groups); 0: off")
    warning_steps: int = setting(5, "steps whose median critical-step ratio is the early warning")
    schedule: str = setting("constant", "constant, cosine or gap-adaptive")
    max_new_tokens: int = setting(48, "longest completion")
    eval_every: int = setting(5, "steps between held-out evaluations")
    eval_samples: int = setting(4, "completions per held-out prompt")
    seed: int = setting(0, "seed of the problems, sampling and batches")

    def __post_init__(self) -> None:
        from rlvrlab.lm.tasks import check_task_spec

        for name in ("steps", "batch_size", "group", "prompts", "max_new_tokens", "eval_every", "eval_samples"):
            check_positive_int(name, getattr(self, name))
        check_positive_floats("lrs", self.lrs)
        check_positive_int("warning_steps", self.warning_steps)
        if not self.tasks:
            _checks.fail("tasks", self.tasks, "at least one task")
        for t in self.tasks:
            check_task_spec(t)
        labels = [_label(t) for t in self.tasks]
        if len(set(labels)) < len(labels):
            _checks.fail("tasks", self.tasks, "tasks with distinct names (a file is named by its stem)")
        self.train_config("", "add", self.lrs[0])  # the trainer's own checks (preset, schedule, batch_size % group, ...)

    @classmethod
    def quick(cls) -> LmGrpoConfig:
        return cls(steps=25, batch_size=32, prompts=120, fresh_samples=8)

    def train_config(self, model: str, task: str, lr: float):
        from rlvrlab.lm.trainer import TrainConfig

        return TrainConfig(model=model, task=task, preset=self.preset, prompts=self.prompts, batch_size=self.batch_size,
                           group=self.group, max_new_tokens=self.max_new_tokens, steps=self.steps, lr=lr, fresh_samples=self.fresh_samples,
                           schedule=self.schedule, eval_every=self.eval_every, eval_samples=self.eval_samples,
                           checkpoint_every=max(1, self.steps // 4), seed=self.seed, prompt_table=True)


def _label(task: str) -> str:
    """A task's name in run names: its own, or a file's stem (a path would leave the run directory)."""
    from rlvrlab.lm.tasks import TASKS

    return task if task in TASKS else Path(task).stem


def _table(rows: list[dict], task: str, lr: float, run_name: str) -> pa.Table:
    """The run's rows, with the columns of DESIGN.md's vocabulary (J, log_odds, delta_mu, eta, M)."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    table = {k: np.array([float(r.get(k, math.nan)) for r in rows]) for k in names}
    table.update(vocabulary(table))
    n = len(rows)
    return pa.table({"run": [run_name] * n, "task": [task] * n, "lr": [lr] * n, **table})


def run(config: LmGrpoConfig, progress: Progress, workdir: Path) -> Result:
    from rlvrlab.analysis.corpus import MIN_INTERVALS, alignment_against_progress, prompt_success_scaling
    from rlvrlab.lm.pretrain import PretrainConfig, pretrain
    from rlvrlab.lm.trainer import GRPOTrainer, gap_warnings, summary_of

    model = config.model
    if not model:
        base = PretrainConfig()
        model = str(pretrain(base, on_step=progress.task("pretraining the tiny base model (once)", base.max_steps)))
    tables, prompt_tables, summary, checks, warned = [], [], {"model": model}, [], []
    safe: dict[str, list[dict]] = {}  # the runs at the smallest rate: Figure 2's
    for task in config.tasks:
        for lr in config.lrs:
            run_name = f"{_label(task)}-lr{lr:g}"
            tc = config.train_config(model, task, lr)
            trainer = GRPOTrainer(tc, workdir / "runs" / run_name, on_step=progress.task(f"GRPO on {task}, lr {lr:g}", tc.steps),
                                  on_warning=lambda message: None)  # the summary lists them, from the rows
            rows = trainer.train()
            tables.append(_table(rows, task, lr, run_name))
            pt = trainer.monitor.prompt_table()
            prompt_tables.append(pt.append_column("run", pa.array([run_name] * pt.num_rows)).append_column(
                "task", pa.array([task] * pt.num_rows)))
            s = summary_of(rows)
            evals = [r for r in rows if math.isfinite(r.get("eval/accuracy", math.nan))]
            acc = [r["eval/accuracy"] for r in evals]
            s["evaluations"] = len(acc)
            s["spearman_M_accuracy"] = spearman([r["gap/M"] for r in evals], acc)
            if config.fresh_samples:  # the same with M from completions the steps never saw (unbiased)
                s["spearman_fresh_M_accuracy"] = spearman([r["gap_fresh/M"] for r in evals], acc)
            early = [r["gap/crit_ratio"] for r in rows[1 : 1 + config.warning_steps] if not math.isnan(r.get("gap/crit_ratio", math.nan))]
            s["early_median_crit_ratio"] = float(np.median(early)) if early else math.nan
            s["lost_accuracy"] = s["accuracy_end"] < s["accuracy_start"] - LOSS_MARGIN
            fresh = [(r["gap/delta_mu_eta"], r["gap_fresh/delta_mu_eta"]) for r in rows
                     if math.isfinite(r.get("gap_fresh/delta_mu_eta", math.nan)) and math.isfinite(r.get("gap/delta_mu_eta", math.nan))]
            if fresh:  # how optimistic the in-sample estimate is: median of in-sample / fresh over steps
                ins, out = np.array(fresh).T
                s["in_sample_over_fresh_delta_mu_eta"] = float(np.median(ins) / np.median(out)) if np.median(out) else math.nan
            s["warnings"] = list(gap_warnings(rows).values())
            summary[run_name] = s
            warned.append((run_name, s["early_median_crit_ratio"] > 1, s["lost_accuracy"]))
            if lr == min(config.lrs):
                safe[run_name] = rows
                checks.append(Check(f"{task} at lr {lr:g}: held-out accuracy improves", s["accuracy_end"] > s["accuracy_start"],
                                    f"{s['accuracy_start']:.3f} -> {s['accuracy_end']:.3f}", "higher at the end (GRPO learns)", "claim"))
                for key, which in (("spearman_M_accuracy", ""), ("spearman_fresh_M_accuracy", " unbiased")):
                    if key in s:
                        checks.append(Check(f"{task} at lr {lr:g}: accuracy rises with cumulative gap alignment{which} M (Figure 2)",
                                            s[key] > 0, f"Spearman rho = {s[key]:.2f} over {len(acc)} evaluations", "rho > 0", "claim"))
    agree = sum(w == lost for _, w, lost in warned)
    detail = "; ".join(f"{n}: early ratio {summary[n]['early_median_crit_ratio']:.2f}, "
                       f"accuracy {summary[n]['accuracy_start']:.2f} -> {summary[n]['accuracy_end']:.2f}" for n, _, _ in warned)
    checks.append(Check("the critical-step ratio over the first steps warns of the runs that lose accuracy",
                        agree == len(warned), f"{agree} of {len(warned)} runs: {detail}",
                        f"median ratio over the first {config.warning_steps} steps > 1 exactly for the runs that end "
                        f"more than {LOSS_MARGIN} below their start",
                        "claim"))
    summary["early_warning_agreement"] = f"{agree}/{len(warned)}"
    # Figure 2 interval by interval, over the runs at the smallest rate
    intervals = alignment_against_progress(safe)
    summary["figure2_intervals"] = intervals
    for key, which in (("in_sample", "in-sample"), ("unbiased", "unbiased")):
        res = intervals[key]
        if key == "unbiased" and not config.fresh_samples:
            continue
        lo, hi = res.get("spearman_ci", (math.nan, math.nan))
        checks.append(Check(f"Figure 2 interval by interval ({which} M): the evaluations' intervals that align more gain more accuracy",
                            lo > 0, f"Spearman rho = {res.get('spearman', math.nan):.2f} [{lo:.2f}, {hi:.2f}] over {res['intervals']} "
                            f"intervals of the runs at lr {min(config.lrs):g}", "rho's 95% CI above 0", "claim",
                            enough=bool(math.isfinite(lo) and res["intervals"] >= MIN_INTERVALS)))
    # §4's success-rate scaling, prompt by prompt, from the runs at the smallest rate
    prompts = pa.concat_tables(prompt_tables, promote_options="default")
    prefix = "gap_fresh/" if config.fresh_samples else "gap/"
    cols = {k: np.asarray(prompts.column(k).to_numpy(zero_copy_only=False)) for k in
            ("J", "var_plus", "var_minus", "crit_ratio", "mean_length", "lr", "task", "prefix")}
    sel = (cols["prefix"] == prefix) & (cols["lr"] == min(config.lrs))
    scaling = prompt_success_scaling(cols["J"][sel], cols["var_plus"][sel], cols["var_minus"][sel], cols["crit_ratio"][sel],
                                     length=cols["mean_length"][sel], groups=cols["task"][sel],
                                     G=config.fresh_samples or config.group)
    summary["success_rate_scaling"] = scaling
    e, rows_fit, med = scaling["exponent"], scaling["exponent_prompt_level"], scaling["exponent_bucket_medians"]
    lo, hi = e["ci95"]
    excludes = math.isfinite(e["slope"]) and not lo <= 1 <= hi  # decided against the theory, however wide
    narrow = math.isfinite(e["slope"]) and (hi - lo) / 2 <= SLOPE_HALF_WIDTH
    checks.append(Check("prompt by prompt: eta_crit/Delta_mu ∝ (1-J)^1 (eq. 18)", narrow and not excludes,
                        f"exponent {e['slope']:.2f} [{lo:.2f}, {hi:.2f}] over {e['cells']} (task, J_q) cells of "
                        f"{scaling['prompts']} mixed prompt-steps, variances pooled per cell ({e['censored_cells']} cells and "
                        f"{scaling['censored']:.0%} of the prompts without a threshold); prompt by prompt {rows_fit['slope']:.2f} "
                        f"[{rows_fit['ci95'][0]:.2f}, {rows_fit['ci95'][1]:.2f}], bucket medians {med['slope']:.2f} "
                        f"[{med['ci95'][0]:.2f}, {med['ci95'][1]:.2f}]; ratio η/η_crit against J_q: Spearman ρ = "
                        f"{scaling['ratio_spearman']:.2f}",
                        f"95% CI contains 1 and is at most ±{SLOPE_HALF_WIDTH} wide (decided either way when it excludes 1)",
                        "claim", enough=narrow or excludes))
    metrics = pa.concat_tables(tables, promote_options="default")
    return Result({"metrics": metrics, "prompts": prompts}, summary, checks)


def plot(out: Path) -> list[str]:
    from rlvrlab.analysis.corpus import prompt_success_scaling

    t = read_table(out / "metrics.parquet")
    task, run_name = (np.asarray(t.column(k).to_pylist()) for k in ("task", "run"))
    col = {k: np.asarray(t.column(k).to_numpy(zero_copy_only=False), float)
           for k in ("lr", "step", "gap/M", "eval/accuracy", "gap/crit_ratio") + (("gap_fresh/M",) if "gap_fresh/M" in t.column_names else ())}
    lowest = col["lr"].min()
    tasks = list(dict.fromkeys(task))
    fig, (a1, a2, a3, a4) = plotting.panels(4, width=4.4)
    for name in dict.fromkeys(run_name):
        sel = run_name == name
        i, low = tasks.index(task[sel][0]), col["lr"][sel][0] == lowest
        style = dict(color=f"C{i}", ls="-" if low else "--")
        label = f"{task[sel][0]}, lr {col['lr'][sel][0]:g}"
        step, M, acc, ratio = (col[k][sel] for k in ("step", "gap/M", "eval/accuracy", "gap/crit_ratio"))
        ev = np.isfinite(acc)
        if low:  # Figure 2: the run at the safe rate, coloured by normalized step; in-sample M solid, unbiased M hollow
            frac = step / max(step.max(), 1)
            a1.plot(M[ev], acc[ev], color=f"C{i}", lw=0.8, alpha=0.6)
            a1.scatter(M[ev], acc[ev], c=frac[ev], cmap="viridis", vmin=0, vmax=1, marker="osD^v"[i % 5], s=22,
                       label=f"{task[sel][0]}, in-sample M")
            if "gap_fresh/M" in col:
                Mf = col["gap_fresh/M"][sel]
                a1.plot(Mf[ev], acc[ev], color=f"C{i}", lw=0.8, ls=":", alpha=0.6)
                a1.scatter(Mf[ev], acc[ev], facecolors="none", edgecolors=f"C{i}", marker="osD^v"[i % 5], s=22,
                           label=f"{task[sel][0]}, unbiased M")
        a2.plot(step[ev], acc[ev], marker="o", ms=3, label=label, **style)
        ok = np.isfinite(ratio) & (ratio > 0)
        if ok.any():
            window = np.ones(min(5, int(ok.sum())))  # running geometric mean, over the points inside the range
            smooth = np.exp(np.convolve(np.log(ratio[ok]), window, "same") / np.convolve(np.ones(ok.sum()), window, "same"))
            a3.semilogy(step[ok], smooth, label=label, **style)
    a1.set_xlabel("cumulative gap alignment M = Σ max(Δμ·η, 0)")
    a1.set_ylabel("held-out accuracy")
    a1.set_title(f"lr {lowest:g}; colour: normalized step", fontsize=8)
    a2.set_xlabel("step")
    a2.set_ylabel("held-out accuracy")
    a3.axhline(1.0, color="k", ls=":", lw=0.8)
    a3.set_xlabel("step")
    a3.set_ylabel("step / estimated critical step (running mean)")
    if (out / "prompts.parquet").exists():  # §4's success-rate scaling, prompt by prompt
        pt = read_table(out / "prompts.parquet")
        c = {k: np.asarray(pt.column(k).to_numpy(zero_copy_only=False)) for k in
             ("J", "var_plus", "var_minus", "crit_ratio", "lr", "run", "prefix")}
        prefix = "gap_fresh/" if (c["prefix"] == "gap_fresh/").any() else "gap/"
        for i, tk in enumerate(tasks):
            sel = (c["prefix"] == prefix) & (c["lr"] == lowest) & np.char.startswith(c["run"].astype(str), _label(tk) + "-")
            if not sel.any():
                continue
            b = prompt_success_scaling(c["J"][sel], c["var_plus"][sel], c["var_minus"][sel], c["crit_ratio"][sel])["buckets"]
            x = np.array([1 - r["J"] for r in b])
            y = np.array([r["pooled_eta_crit_per_delta_mu"] for r in b])
            a4.loglog(x, y, "o-", color=f"C{i}", ms=4, label=tk)
        xs = np.geomspace(1 / 20, 1, 20)
        a4.loglog(xs, xs * np.nanmedian(y / x) if np.isfinite(y).any() else xs, "k:", lw=1, label="slope 1 (eq. 18)")
        a4.set_xlabel("1 − J_q (prompt's group)")
        a4.set_ylabel("η_crit/Δμ = 2/(mean var− − mean var+) per J_q")
        a4.set_title(f"per prompt, {prefix.rstrip('/')} completions, lr {lowest:g}", fontsize=8)
    for ax in (a1, a2, a3, a4):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle("GRPO on a tiny language model: gap alignment, accuracy, the critical step, and its success-rate scaling")
    return [plotting.save(fig, out / "lm_grpo.png")]


EXPERIMENT = Experiment(
    name="lm-grpo",
    title="GRPO on a tiny language model: cumulative gap alignment vs accuracy (Figure 2)",
    description=__doc__.split("\n\n")[1],
    config=LmGrpoConfig,
    run=run,
    plot=plot,
)
