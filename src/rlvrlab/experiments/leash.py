"""What RLVR did to the support of a tiny model ("The Invisible Leash", METHODS.md §A).

A base model and GRPO-trained descendants of it (one per seed; or any pair given by `base` and
`rl`, sharing a tokenizer) each draw `samples` completions of every evaluation problem. From them:
pass@k for k = 1 … samples (the unbiased estimator), the support counts P/E/S/O per problem at
the largest budget (solved: at least one correct completion) with SRR, NDR, SDS and NSCR, the
token entropy (teacher-forced, full vocabulary) and the answer entropy (over extracted answers,
unparseable ones as one answer "NA"), for base and RLVR model alike.

Claims checked (the papers' qualitative findings, reported either way): RLVR raises pass@1;
at the largest budget the RLVR model's support shrinks (S > E, NSCR < 0); answer entropy falls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from rlvrlab import _checks, plotting
from rlvrlab.analysis.pair import evaluation_problems, model_pair
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_int, setting
from rlvrlab.io import read_table

__all__ = ["EXPERIMENT", "LeashConfig", "plot", "run"]


@dataclass(frozen=True)
class LeashConfig:
    base: str = setting("", "the base model's directory; empty: the tiny base model (trained once, then cached)")
    rl: str = setting("", "the RLVR model's directory; empty: GRPO descendants of the base, one per seed (cached)")
    task: str = setting("add", "a task of rlvrlab.lm.tasks, or a .jsonl / .parquet question-answer file")
    problems: int = setting(48, "evaluation problems (not among the GRPO training prompts)")
    samples: int = setting(256, "completions per problem and model: the largest k")
    max_new_tokens: int = setting(48, "longest completion")
    temperature: float = setting(1.0, "sampling temperature of both models")
    seeds: tuple[int, ...] = setting((0, 1), "GRPO seeds (one descendant each) when rl is empty")
    rl_steps: int = setting(100, "GRPO steps of each descendant")
    rl_lr: float = setting(3e-4, "GRPO learning rate (lm-grpo's safe rate)")
    rl_preset: str = setting("grpo", "update rule of the descendants")

    def __post_init__(self) -> None:
        from rlvrlab.lm.tasks import check_task_spec

        for name in ("problems", "samples", "max_new_tokens", "rl_steps"):
            check_positive_int(name, getattr(self, name))
        _checks.positive("temperature", self.temperature)
        _checks.positive("rl_lr", self.rl_lr)
        if not self.rl and not self.seeds:
            _checks.fail("seeds", self.seeds, "at least one seed when rl is empty")
        check_task_spec(self.task)

    @classmethod
    def quick(cls) -> LeashConfig:
        return cls(problems=16, samples=32, seeds=(0,), rl_steps=30)


def run(config: LeashConfig, progress: Progress, workdir: Path) -> Result:
    from rlvrlab.analysis import answer_entropy, check_pair, pass_at_k, sample_answers, support_metrics, token_entropy
    from rlvrlab.lm.tasks import load_task
    from rlvrlab.lm.trainer import load_model

    base_dir, rl_dirs = model_pair(config.base, config.rl, task=config.task, seeds=config.seeds, steps=config.rl_steps,
                                   lr=config.rl_lr, preset=config.rl_preset, max_new_tokens=config.max_new_tokens,
                                   on_task=progress.task)
    task = load_task(config.task)
    problems = evaluation_problems(task, config.problems, seeds=() if config.rl else config.seeds)  # never a descendant's training prompt
    base, tok = load_model(base_dir)
    ks = [k for k in (2 ** i for i in range(20)) if k <= config.samples]
    ks += [config.samples] if ks[-1] != config.samples else []

    def measure(model, label):
        tick = progress.task(f"sampling {config.samples} completions x {len(problems)} problems: {label}", 1)
        out = sample_answers(model, tok, task, problems, config.samples, max_new_tokens=config.max_new_tokens,
                             temperature=config.temperature)
        tick(1)
        c = np.asarray(out["correct"])
        return {"correct": c, "pass": {k: float(np.mean(pass_at_k(config.samples, c, k))) for k in ks},
                "token_entropy": float(np.mean([token_entropy(model, r) for r in out["rollouts"]])),
                "answer_entropy": float(np.mean([answer_entropy(a) for a in out["answers"]]))}

    rl_models = {}
    for label, path in rl_dirs.items():  # every model loaded and paired before any is measured: a bad --rl fails at once
        model, rl_tok = load_model(path)
        check_pair(base, tok, model, rl_tok)
        rl_models[label] = model
    results = {"base": measure(base, "base")}
    for label, model in rl_models.items():
        results[label] = measure(model, label)
    passk = pa.table({"model": [m for m in results for _ in ks], "k": [k for _ in results for k in ks],
                      "pass_at_k": [results[m]["pass"][k] for m in results for k in ks]})
    support_rows, summary = [], {"base": base_dir, "rl": rl_dirs, "ks": ks}
    for label in rl_dirs:
        s = support_metrics(results["base"]["correct"] > 0, results[label]["correct"] > 0)
        support_rows.append({"model": label, **{k: float(v) for k, v in s.items()}})
    support = pa.Table.from_pylist(support_rows)
    entropy = pa.Table.from_pylist([{"model": m, "token_entropy": r["token_entropy"], "answer_entropy": r["answer_entropy"],
                                     "pass_at_1": r["pass"][1], f"pass_at_{ks[-1]}": r["pass"][ks[-1]]} for m, r in results.items()])
    for row in entropy.to_pylist():
        summary[row["model"]] = row
    for row in support_rows:
        summary[row["model"]]["support"] = {k: v for k, v in row.items() if k != "model"}

    mean = lambda key: float(np.mean([summary[m][key] for m in rl_dirs]))  # noqa: E731 (over the RLVR models)
    total = {k: sum(r[k] for r in support_rows) for k in ("P", "E", "S", "O")}
    nscr = (total["E"] - total["S"]) / max(total["P"] + total["E"] + total["S"], 1)
    b = summary["base"]
    checks = [
        Check("RLVR raises pass@1", mean("pass_at_1") > b["pass_at_1"], f"{b['pass_at_1']:.3f} -> {mean('pass_at_1'):.3f}",
              "higher for the RLVR models (mean over them)", "claim"),
        Check(f"at k = {ks[-1]} the RLVR models' support shrinks", total["S"] > total["E"] and nscr < 0,
              f"P {total['P']}, E {total['E']}, S {total['S']}, O {total['O']} (summed over RLVR models); NSCR {nscr:.3f}",
              "S > E and NSCR < 0 (the paper: SRR 0.94, NDR 0.02, NSCR -0.05 for a 1.5B pair)", "claim"),
        Check("RLVR lowers answer entropy", mean("answer_entropy") < b["answer_entropy"],
              f"{b['answer_entropy']:.3f} -> {mean('answer_entropy'):.3f} (token entropy {b['token_entropy']:.3f} -> "
              f"{mean('token_entropy'):.3f})", "lower for the RLVR models (token entropy may rise)", "claim"),
        Check(f"pass@{ks[-1]}: the base catches up", b[f"pass_at_{ks[-1]}"] >= mean(f"pass_at_{ks[-1]}") - 0.02,
              f"base {b[f'pass_at_{ks[-1]}']:.3f}, RLVR {mean(f'pass_at_{ks[-1]}'):.3f}",
              "base within 0.02 of (or above) the RLVR models at the largest k", "claim"),
    ]
    summary["support_total"] = {**total, "NSCR": nscr}
    return Result({"metrics": passk, "support": support, "entropy": entropy}, summary, checks)


def plot(out: Path) -> list[str]:
    passk, support, entropy = (read_table(out / f"{n}.parquet").to_pylist() for n in ("metrics", "support", "entropy"))
    fig, (a1, a2, a3) = plotting.panels(3, width=4.2)
    models = list(dict.fromkeys(r["model"] for r in passk))
    for i, m in enumerate(models):
        rows = [r for r in passk if r["model"] == m]
        a1.semilogx([r["k"] for r in rows], [r["pass_at_k"] for r in rows], marker="o", ms=3, base=2,
                    color="k" if m == "base" else f"C{i}", label=m)
    a1.set_xlabel("k")
    a1.set_ylabel("pass@k")
    a1.legend(fontsize=7)
    kinds = ("P", "E", "S", "O")
    width = 0.8 / max(len(support), 1)
    for i, r in enumerate(support):
        a2.bar(np.arange(4) + i * width, [r[k] for k in kinds], width, label=f"{r['model']}: NSCR {r['NSCR']:.2f}",
               color=f"C{i + 1}")
    a2.set_xticks(np.arange(4) + 0.4 - width / 2, ["P (both)", "E (RL only)", "S (base only)", "O (neither)"], fontsize=7)
    a2.set_ylabel("problems")
    a2.legend(fontsize=7)
    x = np.arange(len(entropy))
    a3.bar(x - 0.2, [r["token_entropy"] for r in entropy], 0.4, label="token entropy")
    a3.bar(x + 0.2, [r["answer_entropy"] for r in entropy], 0.4, label="answer entropy")
    a3.set_xticks(x, [r["model"] for r in entropy], fontsize=7)
    a3.set_ylabel("nats")
    a3.legend(fontsize=7)
    fig.suptitle("What RLVR did to the support: pass@k, P/E/S/O at the largest k, entropies")
    return [plotting.save(fig, out / "leash.png")]


EXPERIMENT = Experiment(
    name="leash",
    title="The Invisible Leash on a tiny model: pass@k, support (P/E/S/O) and entropy, base vs RLVR",
    description=__doc__.split("\n\n")[1],
    config=LeashConfig,
    run=run,
    plot=plot,
)

