"""What RLVR did to the support of a tiny model ("The Invisible Leash", METHODS.md §A).

A base model and GRPO-trained descendants of it (one per seed; or any pair given by `base` and
`rl`, sharing a tokenizer) each draw `samples` completions of every evaluation problem. From them:
pass@k for k = 1 … samples (the unbiased estimator), the support counts P/E/S/O per problem at
the largest budget (solved: at least one correct completion) with SRR, NDR, SDS and NSCR, the
token entropy (teacher-forced, full vocabulary) and the answer entropy (over extracted answers,
unparseable ones as one answer "NA"), for base and RLVR model alike.

Claims checked (the papers' qualitative findings, reported either way): RLVR raises pass@1;
at the largest budget the RLVR model's support shrinks (S > E, NSCR < 0); answer entropy falls;
at the largest budget the base catches up (RLVR's lead in pass@k at most CATCH_UP at 95%).
Uncertainty is over problems: pass@1's gain with a 95% t-interval over the per-problem gains
(pass_gain; the same interval for RLVR's lead at the largest k), S − E with a 95% percentile
bootstrap interval over problems (support_shift).
The pass@1 check decides only when that interval excludes 0; the others only when the RLVR
models gained (the interval above 0: otherwise the pair shows no RLVR effect to analyse), and
S > E only with at least MIN_DISCORDANT problems in S or E (with fewer, not even a one-sided sign
test could reach 5%). Undecided checks read "not enough data" (Check.enough), not "not seen".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy import stats

from rlvrlab import _checks, plotting
from rlvrlab.analysis.pair import evaluation_problems, model_pair
from rlvrlab.analysis.stats import bootstrap_ci
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_int, setting
from rlvrlab.io import read_table

__all__ = ["EXPERIMENT", "MIN_DISCORDANT", "LeashConfig", "pass_gain", "plot", "run", "support_shift"]

CATCH_UP = 0.02  # the base has caught up when RLVR's lead at the largest k is at most this, at 95% confidence
MIN_DISCORDANT = 5  # problems in S or E: 0.5^5 < 0.05 <= 0.5^4, the fewest a one-sided sign test can decide on


def pass_gain(base: np.ndarray, rl: np.ndarray, *, confidence: float = 0.95) -> dict[str, float]:
    """The RLVR models' pass@k gain over the base with its t-interval over problems.

    base: (C,) the base's pass@k per problem; rl: (M, C) each RLVR model's (the same k). The per-problem gain is
    the mean over the M models minus the base; {"gain", "low", "high", "problems"} (nan interval
    with one problem or when every problem's gain is the same)."""
    base, rl = np.asarray(base, dtype=float), np.atleast_2d(np.asarray(rl, dtype=float))
    if rl.shape[1:] != base.shape:
        _checks.fail("rl", f"shape {rl.shape}", f"(M, {base.size}): one pass@1 per model and problem")
    g = rl.mean(0) - base  # (C,)
    low = high = float("nan")
    if g.size > 1 and np.ptp(g) > 0:
        low, high = stats.ttest_1samp(g, 0.0).confidence_interval(confidence)
    return {"gain": float(g.mean()), "low": float(low), "high": float(high), "problems": int(g.size)}


def support_shift(base_solved: np.ndarray, rl_solved: np.ndarray, *, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """S − E (support shrinkage minus expansion) with a bootstrap interval over problems.

    base_solved: (C,) bools; rl_solved: (M, C) bools, one row per RLVR model. Per problem
    d_c = mean over models of [base solved, model not] − [model solved, base not], so that
    S − E = M·Σ_c d_c summed over models; returned per model ("S_minus_E" = Σ_c d_c) with the
    percentile bootstrap interval of C·mean(d) (percentile: d is mostly 0 and BCa's jackknife
    degenerates on it; an interval of [0, 0] when every d_c is 0). "discordant": problems with
    d_c ≠ 0."""
    base = np.asarray(base_solved, dtype=bool)
    rl = np.atleast_2d(np.asarray(rl_solved, dtype=bool))
    if rl.shape[1:] != base.shape:
        _checks.fail("rl_solved", f"shape {rl.shape}", f"(M, {base.size}): one row of booleans per model")
    d = (base & ~rl).mean(0) - (~base & rl).mean(0)  # (C,)
    C = d.size
    if np.ptp(d) == 0:
        low = high = float(C * d[0])
    else:
        low, high = bootstrap_ci(np.mean, d, confidence=confidence, method="percentile", seed=seed)
        low, high = C * low, C * high
    return {"S": float((base & ~rl).sum() / len(rl)), "E": float((~base & rl).sum() / len(rl)), "S_minus_E": float(d.sum()),
            "low": float(low), "high": float(high), "discordant": int(np.count_nonzero(d)), "problems": C}


@dataclass(frozen=True)
class LeashConfig:
    base: str = setting("", "the base model's directory; empty: the tiny base model (trained once, then cached)")
    rl: str = setting("", "the RLVR model's directory; empty: GRPO descendants of the base, one per seed (cached)")
    task: str = setting("add", "a task of rlvrlab.lm.tasks, or a .jsonl / .parquet question-answer file")
    problems: int = setting(192, "evaluation problems, none a GRPO training prompt (48 left 3 in S or E: too few to decide S > E)")
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
    gain = pass_gain(results["base"]["correct"] / config.samples,
                          np.stack([results[m]["correct"] for m in rl_dirs]) / config.samples)
    shift = support_shift(results["base"]["correct"] > 0, np.stack([results[m]["correct"] > 0 for m in rl_dirs]))
    k_max = ks[-1]  # the same interval for RLVR's lead at the largest budget, per problem from the unbiased pass@k
    lead = pass_gain(pass_at_k(config.samples, results["base"]["correct"], k_max),
                          np.stack([pass_at_k(config.samples, results[m]["correct"], k_max) for m in rl_dirs]))
    summary["pass_at_1_gain"], summary["support_shift"], summary[f"lead_at_{k_max}"] = gain, shift, lead
    gained = gain["low"] > 0  # the pair shows an RLVR effect to analyse
    no_effect = "" if gained else "; not enough data: the RLVR models' pass@1 gain is not above 0 at 95%"
    few = shift["discordant"] < MIN_DISCORDANT
    checks = [
        Check("RLVR raises pass@1", gained,
              f"{b['pass_at_1']:.3f} -> {mean('pass_at_1'):.3f}: gain {gain['gain']:+.3f} [{gain['low']:+.3f}, {gain['high']:+.3f}] "
              f"(95% t over {gain['problems']} problems)" + ("" if gained or gain["high"] < 0 else "; not enough data: the interval holds 0"),
              "gain's 95% interval above 0 (decided only when the interval excludes 0)", "claim",
              enough=bool(gained or gain["high"] < 0)),
        Check(f"at k = {ks[-1]} the RLVR models' support shrinks", shift["low"] > 0,
              f"S - E {shift['S_minus_E']:+.2f} [{shift['low']:+.2f}, {shift['high']:+.2f}] per model (95% bootstrap over "
              f"{shift['problems']} problems, {shift['discordant']} of them in S or E); P {total['P']}, E {total['E']}, S {total['S']}, "
              f"O {total['O']} (summed over RLVR models); NSCR {nscr:.3f}"
              + no_effect + (f"; not enough data: fewer than {MIN_DISCORDANT} problems in S or E" if few else ""),
              f"S - E's 95% interval above 0, from >= {MIN_DISCORDANT} problems in S or E (the paper: SRR 0.94, NDR 0.02, "
              "NSCR -0.05 for a 1.5B pair)", "claim", enough=bool(gained and not few)),
        Check("RLVR lowers answer entropy", mean("answer_entropy") < b["answer_entropy"],
              f"{b['answer_entropy']:.3f} -> {mean('answer_entropy'):.3f} (token entropy {b['token_entropy']:.3f} -> "
              f"{mean('token_entropy'):.3f})" + no_effect, "lower for the RLVR models (token entropy may rise)", "claim",
              enough=gained),
        Check(f"pass@{ks[-1]}: the base catches up", lead["high"] <= CATCH_UP,
              f"base {b[f'pass_at_{ks[-1]}']:.3f}, RLVR {mean(f'pass_at_{ks[-1]}'):.3f}: RLVR's lead {lead['gain']:+.3f} "
              f"[{lead['low']:+.3f}, {lead['high']:+.3f}] (95% t over {lead['problems']} problems; at pass@1 "
              f"{gain['gain']:+.3f})" + no_effect,
              f"RLVR's lead at the largest k at most {CATCH_UP} with 95% confidence (its interval's upper end), where at "
              "pass@1 it leads", "claim", enough=gained),
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

