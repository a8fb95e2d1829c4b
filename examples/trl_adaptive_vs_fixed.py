"""TRL's GRPOTrainer at a too-large fixed rate, at a safe fixed rate, and gap-adaptive from the large one.

    python examples/trl_adaptive_vs_fixed.py [--model DIR] [--task add] [--steps 80] [--large 1e-3] [--safe 3e-4]

The tiny base model of `make demo` (trained once and cached when --model is not given) on one of
rlvrlab's tasks, with GapGRPOTrainer and `matched_config` (GRPO loss, float32, Adam): 8 prompts ×
8 completions of at most 48 tokens per step. For each run it prints the success rate of the
training batches over the first 5 and the last 10 steps, the median crit_ratio of the first 5
steps, the learning rate at steps 10 and 20 and at the end, and the monitor's warnings.
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import datasets
import torch
from transformers import PrinterCallback

from rlvrlab.integrations.trl import GapConfig, GapGRPOTrainer, GapWarning, matched_config
from rlvrlab.lm.pretrain import PretrainConfig, pretrain
from rlvrlab.lm.tasks import make_task
from rlvrlab.lm.trainer import load_model


def run(model: str, task_name: str, steps: int, lr: float, schedule: str, out: Path) -> dict:
    task = make_task(task_name)
    problems = {p.prompt: p for p in task.sample(400, seed=0)}

    def correct(prompts, completions, **kwargs):
        return [float(task.verify(c, problems[p])) for p, c in zip(prompts, completions)]

    m, tok = load_model(model)
    args = matched_config(str(out), max_steps=steps, per_device_train_batch_size=64, num_generations=8,
                          max_completion_length=48, learning_rate=lr, seed=0, use_cpu=not torch.cuda.is_available())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GapWarning)
        trainer = GapGRPOTrainer(model=m, args=args, reward_funcs=correct, processing_class=tok,
                                 train_dataset=datasets.Dataset.from_dict({"prompt": list(problems)}),
                                 gap=GapConfig(gap_schedule=schedule))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    h = trainer.gap_history
    J = [r["gap/J"] for r in h]
    early = [r["gap/crit_ratio"] for r in h[:5] if r["gap/crit_ratio"] == r["gap/crit_ratio"]]
    return {"success_first5": statistics.mean(J[:5]), "success_last10": statistics.mean(J[-10:]),
            "early_ratio_median": statistics.median(early) if early else float("nan"),
            "lr": {s: h[s - 1]["learning_rate"] for s in (10, 20, len(h)) if s <= len(h)},
            "warnings": [str(w.message) for w in caught if issubclass(w.category, GapWarning)]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a model directory (default: the tiny base model of `make demo`)")
    ap.add_argument("--task", default="add")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--large", type=float, default=1e-3, help="the too-large rate (collapses rlvrlab's lm-grpo runs)")
    ap.add_argument("--safe", type=float, default=3e-4)
    ap.add_argument("--out", default="runs/trl_adaptive_vs_fixed")
    a = ap.parse_args(argv)
    model = a.model or str(pretrain(PretrainConfig()))
    results = {}
    for name, lr, schedule in ((f"fixed {a.large:g}", a.large, "trl"), (f"gap-adaptive from {a.large:g}", a.large, "gap-adaptive"),
                               (f"fixed {a.safe:g}", a.safe, "trl")):
        r = results[name] = run(model, a.task, a.steps, lr, schedule, Path(a.out) / name.replace(" ", "_"))
        print(f"{name:24s} success first 5 {r['success_first5']:.3f}, last 10 {r['success_last10']:.3f}; early ratio "
              f"{r['early_ratio_median']:.2f}; lr " + ", ".join(f"step {s}: {v:.3g}" for s, v in r["lr"].items()), flush=True)
        for message in r["warnings"]:
            print(f"{'':24s} warning: {message[:110]}...")
    return results


if __name__ == "__main__":
    main()
