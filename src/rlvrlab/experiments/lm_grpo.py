"""The paper's Figure 2 on a real language model: cumulative gap alignment against held-out accuracy.

§6.2 trains Qwen2.5-Math-7B with GRPO and plots, at each evaluation, the held-out accuracy against
M_k = Σ_{j<k} max(Δμ_j·η_j, 0), the cumulative alignment of the steps with the Gradient Gap,
coloured by the normalized step: accuracy rises along M. Here the model is the tiny Qwen2 that
`rlvrlab lm pretrain` trains (or any causal LM given by `model`), GRPO runs on each task with
rlvrlab.lm.trainer, and Δμ·η is measured after every step from the post-step log-ratios of the
batch just trained on (rlvrlab.lm.diagnostics). Alongside: held-out accuracy and the estimated
ratio of each step to the second-order critical step over training.

Claims checked (reported either way): accuracy improves; accuracy rises with M (Spearman's rank
correlation over the evaluations > 0); the steps stay below the estimated critical step (median
ratio < 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from rlvrlab import _checks, plotting
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.io import read_table

__all__ = ["EXPERIMENT", "LmGrpoConfig", "plot", "run", "spearman"]


@dataclass(frozen=True)
class LmGrpoConfig:
    tasks: tuple[str, ...] = setting(("add", "arith", "countdown"), "tasks of rlvrlab.lm.tasks, one GRPO run each")
    model: str = setting("", "a Hugging Face causal LM directory; empty: the tiny base model (trained once, then cached)")
    preset: str = setting("grpo", "update rule of rlvrlab.updates")
    steps: int = setting(120, "GRPO steps per task")
    batch_size: int = setting(64, "completions per step (batch_size / group prompts)")
    group: int = setting(8, "completions per prompt")
    prompts: int = setting(400, "problems per task (20% held out)")
    lr: float = setting(3e-4, "Adam's learning rate")
    schedule: str = setting("constant", "constant, cosine or gap-adaptive")
    max_new_tokens: int = setting(48, "longest completion")
    eval_every: int = setting(10, "steps between held-out evaluations")
    eval_samples: int = setting(5, "completions per held-out prompt")
    seed: int = setting(0, "seed of the problems, sampling and batches")

    def __post_init__(self) -> None:
        from rlvrlab.lm.tasks import make_task

        for name in ("steps", "batch_size", "group", "prompts", "max_new_tokens", "eval_every", "eval_samples"):
            check_positive_int(name, getattr(self, name))
        check_positive_floats("lr", (self.lr,))
        if not self.tasks:
            _checks.fail("tasks", self.tasks, "at least one task")
        for t in self.tasks:
            make_task(t)
        self.train_config("")  # the trainer's own checks (preset, schedule, batch_size % group, ...)

    @classmethod
    def quick(cls) -> LmGrpoConfig:
        return cls(steps=30, batch_size=32, prompts=120, eval_every=5, eval_samples=4)

    def train_config(self, model: str, task: str = "add"):
        from rlvrlab.lm.trainer import TrainConfig

        return TrainConfig(model=model, task=task, preset=self.preset, prompts=self.prompts, batch_size=self.batch_size,
                           group=self.group, max_new_tokens=self.max_new_tokens, steps=self.steps, lr=self.lr,
                           schedule=self.schedule, eval_every=self.eval_every, eval_samples=self.eval_samples,
                           checkpoint_every=max(1, self.steps // 4), seed=self.seed)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation with average ranks for ties (nan with fewer than 3 points or no spread)."""
    def ranks(a: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return (start + (counts - 1) / 2)[inverse]

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def run(config: LmGrpoConfig, progress: Progress, workdir: Path) -> Result:
    from rlvrlab.lm.pretrain import PretrainConfig, pretrain
    from rlvrlab.lm.trainer import GRPOTrainer, summary_of

    model = config.model
    if not model:
        base = PretrainConfig()
        model = str(pretrain(base, on_step=progress.task("pretraining the tiny base model (once)", base.max_steps)))
    tables, summary, checks = [], {"model": model}, []
    for task in config.tasks:
        tc = config.train_config(model, task)
        trainer = GRPOTrainer(tc, workdir / "runs" / task, on_step=progress.task(f"GRPO on {task}", tc.steps))
        rows = trainer.train()
        names = list(dict.fromkeys(k for r in rows for k in r))
        table = {k: [float(r.get(k, math.nan)) for r in rows] for k in names}
        table["task"] = [task] * len(rows)
        tables.append(pa.table(table))
        s = summary_of(rows)
        acc = [(r["gap/M"], r["eval/accuracy"]) for r in rows if math.isfinite(r.get("eval/accuracy", math.nan))]
        s["spearman_M_accuracy"] = spearman(*zip(*acc)) if acc else math.nan
        summary[task] = s
        checks += [
            Check(f"{task}: held-out accuracy improves", s["accuracy_end"] > s["accuracy_start"],
                  f"{s['accuracy_start']:.3f} -> {s['accuracy_end']:.3f}", "higher at the end (GRPO learns)", "claim"),
            Check(f"{task}: accuracy rises with cumulative gap alignment M (Figure 2)", s["spearman_M_accuracy"] > 0,
                  f"Spearman rho = {s['spearman_M_accuracy']:.2f} over {len(acc)} evaluations", "rho > 0", "claim"),
            Check(f"{task}: steps below the estimated critical step", s["median_crit_ratio"] < 1,
                  f"median ratio {s['median_crit_ratio']:.2f}, {s['steps_past_crit']} of {s['steps']} steps above 1",
                  "median < 1", "claim"),
        ]
    metrics = pa.concat_tables(tables, promote_options="default")
    return Result({"metrics": metrics}, summary, checks)


def plot(out: Path) -> list[str]:
    t = read_table(out / "metrics.parquet")
    task = np.asarray(t.column("task").to_pylist())
    col = {k: np.asarray(t.column(k).to_numpy(zero_copy_only=False), float) for k in ("step", "gap/M", "eval/accuracy", "gap/crit_ratio")}
    fig, (a1, a2, a3) = plotting.panels(3, width=4.4)
    markers = "osD^v"
    lc = None
    for i, name in enumerate(dict.fromkeys(task)):
        sel = task == name
        step, M, acc, ratio = (col[k][sel] for k in ("step", "gap/M", "eval/accuracy", "gap/crit_ratio"))
        ev = np.isfinite(acc)
        frac = step / max(step.max(), 1)
        lc = plotting.colored_line(a1, M[ev], acc[ev], frac[ev], vmin=0, vmax=1)
        a1.scatter(M[ev], acc[ev], c=frac[ev], cmap="viridis", vmin=0, vmax=1, marker=markers[i % 5], s=22, label=name)
        a2.plot(step[ev], acc[ev], marker=markers[i % 5], ms=3, label=name)
        ok = np.isfinite(ratio) & (ratio > 0)
        if ok.any():
            window = min(9, int(ok.sum()))
            smooth = np.exp(np.convolve(np.log(ratio[ok]), np.ones(window) / window, mode="same"))
            a3.semilogy(step[ok], ratio[ok], ".", ms=2, alpha=0.35, color=f"C{i}")
            a3.semilogy(step[ok], smooth, color=f"C{i}", label=name)
    if lc is not None:
        fig.colorbar(lc, ax=a1, label="normalized step")
    a1.set_xlabel("cumulative gap alignment M = Σ max(Δμ·η, 0)")
    a1.set_ylabel("held-out accuracy")
    a1.legend(fontsize=7)
    a2.set_xlabel("step")
    a2.set_ylabel("held-out accuracy")
    a2.legend(fontsize=7)
    a3.axhline(1.0, color="k", ls="--", lw=0.8)
    a3.set_xlabel("step")
    a3.set_ylabel("step / estimated critical step")
    a3.legend(fontsize=7)
    fig.suptitle("GRPO on a tiny language model: gap alignment and accuracy (Figure 2)")
    return [plotting.save(fig, out / "lm_grpo.png")]


EXPERIMENT = Experiment(
    name="lm-grpo",
    title="GRPO on a tiny language model: cumulative gap alignment vs accuracy (Figure 2)",
    description=__doc__.split("\n\n")[1],
    config=LmGrpoConfig,
    run=run,
    plot=plot,
)
