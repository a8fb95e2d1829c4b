"""Which tokens RLVR changed, and using that direction ("Direction of RLVR updates", METHODS.md §B).

On a base model and a GRPO descendant (as in `leash`: trained once per seed and cached, or any
pair given by `base` and `rl`), on evaluation problems the training never saw:
1. the signed Δlog p = log π_RL − log π_base of the tokens each model generates, against the base
   entropy and KL(π_RL‖π_base) of the same positions: histograms, and how well each separates the
   RLVR model's tokens from the base's (the AUC of a threshold on it);
2. selective replacement — base decoding, with the positions a criterion selects resampled from
   the RLVR model (within the base's top 50) — for every criterion at matched replacement rates
   (thresholds calibrated on base-decoded tokens): accuracy against the rate;
3. selective extrapolation over a (τ, γ) grid: accuracy against the RLVR model's;
4. training with the low-probability reweighting [1 + α(1 − π_old)]·Â (an α grid) against DAPO and
   the two baselines (down-weighting low-probability tokens; perplexity sequence weights), each
   from the base for `train_steps`, `seeds` seeds: held-out accuracy, mean ± standard error.

Claims checked (reported either way): Δlog p separates the models' tokens better than entropy or
KL; replacing the Δlog p-selected 10% of positions recovers most of the RLVR model's accuracy gain
and more than entropy selection at that rate; some extrapolation beats the RLVR model; some α
beats DAPO. The first three decide only when the RLVR model gained over the base by more than
2 SE (otherwise the pair shows no RLVR effect to analyse), the last only with two seeds or more
(a standard error needs them); undecided checks read "not enough data" (Check.enough).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.stats import sem

from rlvrlab import _checks, plotting
from rlvrlab.analysis.pair import evaluation_problems, model_pair
from rlvrlab.analysis.stats import auc, proportion_diff_se
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_int, setting
from rlvrlab.io import read_table

__all__ = ["DirectionConfig", "EXPERIMENT", "plot", "run"]


@dataclass(frozen=True)
class DirectionConfig:
    base: str = setting("", "the base model's directory; empty: the tiny base model (trained once, then cached)")
    rl: str = setting("", "the RLVR model's directory; empty: the GRPO descendant of the first seed (cached)")
    task: str = setting("add", "a task of rlvrlab.lm.tasks, or a .jsonl / .parquet question-answer file")
    problems: int = setting(48, "evaluation problems")
    samples: int = setting(8, "completions per problem for every decoding")
    max_new_tokens: int = setting(48, "longest completion")
    temperature: float = setting(1.0, "decoding temperature (the paper: 1.0)")
    top_p: float = setting(0.7, "nucleus of every decoding (the paper: 0.7)")
    rates: tuple[float, ...] = setting((0.05, 0.1, 0.2, 0.4), "replacement rates, matched across criteria")
    criteria: tuple[str, ...] = setting(("delta-logp", "entropy", "kl", "reverse-kl", "js", "random"), "replacement criteria")
    taus: tuple[float, ...] = setting((-0.1, -0.3, -0.5), "extrapolation thresholds on Δlog p")
    gammas: tuple[float, ...] = setting((0.05, 0.1, 0.3), "extrapolation strengths")
    alphas: tuple[float, ...] = setting((0.1, 0.2), "low-probability reweighting strengths (the paper: 0.1, 0.2)")
    baselines: tuple[str, ...] = setting(("dapo", "dapo-dominate", "dapo-ppl"), "presets trained beside dapo-lowprob")
    seeds: tuple[int, ...] = setting((0, 1, 2), "seeds of every training run")
    train_steps: int = setting(60, "GRPO steps of each reweighting run")
    train_lr: float = setting(3e-4, "learning rate of each reweighting run")
    train_batch_size: int = setting(64, "completions per step of each reweighting run (8 completions per prompt)")
    train_prompts: int = setting(400, "problems of each reweighting run (20% held out for its accuracy)")
    rl_steps: int = setting(100, "GRPO steps of the descendant (when rl is empty)")
    rl_lr: float = setting(3e-4, "its learning rate")
    rl_preset: str = setting("grpo", "its update rule")

    def __post_init__(self) -> None:
        from rlvrlab.analysis import CRITERIA
        from rlvrlab.lm.tasks import check_task_spec
        from rlvrlab.updates import PRESETS

        for name in ("problems", "samples", "max_new_tokens", "train_steps", "rl_steps", "train_batch_size", "train_prompts"):
            check_positive_int(name, getattr(self, name))
        check_task_spec(self.task)
        for c in self.criteria:
            _checks.choose("criteria", c, CRITERIA)
        for b in self.baselines:
            _checks.choose("baselines", b, PRESETS)
        if not all(0 < r < 1 for r in self.rates):
            _checks.fail("rates", self.rates, "replacement rates in (0, 1)")
        if not all(g >= 0 for g in self.gammas):
            _checks.fail("gammas", self.gammas, "numbers >= 0")
        if not self.seeds:
            _checks.fail("seeds", self.seeds, "at least one seed")

    @classmethod
    def quick(cls) -> DirectionConfig:
        return cls(problems=16, samples=4, rates=(0.1, 0.3), taus=(-0.3,), gammas=(0.1, 0.3), alphas=(0.2,),
                   seeds=(0,), train_steps=20, train_batch_size=32, train_prompts=120, rl_steps=30)


def run(config: DirectionConfig, progress: Progress, workdir: Path) -> Result:
    import torch

    from rlvrlab.analysis import calibrate, check_pair, generate, token_stats
    from rlvrlab.lm.sampling import completion_texts
    from rlvrlab.lm.tasks import load_task
    from rlvrlab.lm.trainer import TrainConfig, descendant, load_model

    base_dir, rl_dirs = model_pair(config.base, config.rl, task=config.task, seeds=config.seeds[:1],  # one: the first seed's
                                   steps=config.rl_steps, lr=config.rl_lr, preset=config.rl_preset,
                                   max_new_tokens=config.max_new_tokens, on_task=progress.task)
    rl_dir = next(iter(rl_dirs.values()))
    base, tok = load_model(base_dir)
    rl, rl_tok = load_model(rl_dir)
    check_pair(base, tok, rl, rl_tok)
    task = load_task(config.task)
    problems = evaluation_problems(task, config.problems, seeds=() if config.rl else config.seeds[:1])  # none it trained on
    prompts = [tok(p.prompt)["input_ids"] for p in problems]

    def decode(mode, seed=0, **kw):
        roll, flags = generate(base, rl, prompts, mode=mode, G=config.samples, max_new_tokens=config.max_new_tokens,
                               eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(seed),
                               temperature=config.temperature, top_p=config.top_p, **kw)
        texts = completion_texts(tok, roll)
        acc = float(np.mean([task.verify(t, problems[i // config.samples]) for i, t in enumerate(texts)]))
        rate = float(flags[roll.completion_mask].float().mean()) if roll.completion_mask.any() else math.nan
        return roll, acc, rate

    # 1. the tokens each model generates, seen by both
    tick = progress.task("decoding and teacher-forcing both models", 2)
    rolls, accs = {}, {}
    for mode in ("base", "rl"):
        rolls[mode], accs[mode], _ = decode(mode)
        tick(1)
    stats = {m: token_stats(base, rl, r) for m, r in rolls.items()}
    token_rows = []
    for m, st in stats.items():
        mask = rolls[m].completion_mask
        for k in ("delta_logp", "entropy_base", "kl"):
            token_rows += [{"generated_by": m, "quantity": k, "value": float(v)} for v in st[k][mask]]
    tokens = pa.Table.from_pylist(token_rows)
    values = {(m, k): st[k][rolls[m].completion_mask].numpy() for m, st in stats.items() for k in ("delta_logp", "entropy_base", "kl")}
    separation = {k: auc(values[("rl", k)], values[("base", k)]) for k in ("delta_logp", "entropy_base", "kl")}
    d_rl = values[("rl", "delta_logp")]
    summary = {"base": base_dir, "rl": rl_dir, "accuracy_base": accs["base"], "accuracy_rl": accs["rl"],
               "auc_rl_vs_base_tokens": separation,
               "delta_logp_share_abs_over_0.5": float(np.mean(np.abs(d_rl) > 0.5)),
               "delta_logp_share_abs_under_0.05": float(np.mean(np.abs(d_rl) < 0.05)),
               # the tails: of the tokens RLVR moved by more than 0.5 nats, the share it moved up, per generator
               "delta_logp_tail_share_positive": {m: float(np.mean(values[(m, "delta_logp")][np.abs(values[(m, "delta_logp")]) > 0.5] > 0))
                                                  if np.any(np.abs(values[(m, "delta_logp")]) > 0.5) else math.nan
                                                  for m in ("base", "rl")}}

    # 2. replacement at matched rates
    rows = [{"criterion": "none", "target_rate": 0.0, "tau": math.nan, "rate": 0.0, "accuracy": accs["base"]}]
    tick = progress.task("selective replacement", len(config.criteria) * len(config.rates))
    for criterion in config.criteria:
        for rate in config.rates:
            tau = calibrate(criterion, stats["base"], rolls["base"].completion_mask, rate)
            _, acc, realized = decode("replace", criterion=criterion, tau=tau)
            rows.append({"criterion": criterion, "target_rate": rate, "tau": tau, "rate": realized, "accuracy": acc})
            tick(1)
    replacement = pa.Table.from_pylist(rows)

    # 3. extrapolation
    grid = []
    tick = progress.task("selective extrapolation", len(config.taus) * len(config.gammas))
    for tau in config.taus:
        for gamma in config.gammas:
            _, acc, realized = decode("extrapolate", tau=tau, gamma=gamma)
            grid.append({"tau": tau, "gamma": gamma, "rate": realized, "accuracy": acc})
            tick(1)
    extrapolation = pa.Table.from_pylist(grid)

    # 4. training with reweighting
    runs = [("dapo-lowprob", a) for a in config.alphas] + [(b, None) for b in config.baselines]
    train_rows = []
    for preset, alpha in runs:
        for seed in config.seeds:
            tc = TrainConfig(model=base_dir, task=config.task, preset=preset, alpha=alpha, steps=config.train_steps,
                             lr=config.train_lr, batch_size=config.train_batch_size, group=8, prompts=config.train_prompts,
                             max_new_tokens=config.max_new_tokens,
                             eval_every=config.train_steps, eval_samples=5, checkpoint_every=max(1, config.train_steps // 4),
                             seed=seed)
            path = descendant(tc, on_step=progress.task(f"{preset}{'' if alpha is None else f' α={alpha:g}'}, seed {seed}", tc.steps))
            final = [r for r in read_table(path.parent / "metrics.parquet").to_pylist()
                     if r.get("eval/accuracy") is not None and math.isfinite(r["eval/accuracy"])]
            train_rows.append({"preset": preset, "alpha": math.nan if alpha is None else alpha, "seed": seed,
                               "accuracy_start": final[0]["eval/accuracy"], "accuracy_end": final[-1]["eval/accuracy"]})
    training = pa.Table.from_pylist(train_rows)

    def label(r):
        return r["preset"] if math.isnan(r["alpha"]) else f"{r['preset']} α={r['alpha']:g}"

    by = {}
    for r in train_rows:
        by.setdefault(label(r), []).append(r["accuracy_end"])
    summary["training"] = {k: {"mean": float(np.mean(v)), "se": float(sem(v)) if len(v) > 1 else math.nan,
                               "seeds": len(v)} for k, v in by.items()}
    summary["replacement"] = rows
    summary["extrapolation"] = grid

    gain = accs["rl"] - accs["base"]
    n = len(problems) * config.samples  # completions behind every decoding accuracy

    def noise(*accuracies: float) -> float:
        """Two standard errors of a difference of decoding accuracies (binomial, n completions each)."""
        return 2 * proportion_diff_se(*accuracies, n=n)

    at = {(r["criterion"], r["target_rate"]): r["accuracy"] for r in rows}
    rate10 = min(config.rates, key=lambda r: abs(r - 0.1))
    d10, e10 = at.get(("delta-logp", rate10), math.nan), at.get(("entropy", rate10), math.nan)
    best_ex = max(grid, key=lambda g: g["accuracy"]) if grid else None
    train = summary["training"]
    lowprob = {k: v for k, v in train.items() if k.startswith("dapo-lowprob")}
    dapo = train.get("dapo", {"mean": math.nan, "se": math.nan})
    best_lp = max(lowprob.values(), key=lambda v: v["mean"]) if lowprob else None
    gained = bool(gain > noise(accs["rl"], accs["base"]))  # the pair shows an RLVR effect to analyse
    no_effect = "" if gained else "; not enough data: the RLVR model's gain is within 2 SE of 0"
    one_seed = "" if len(config.seeds) > 1 else "; not enough data: one seed gives no standard error"
    checks = [
        Check("Δlog p separates the RLVR model's tokens from the base's better than entropy or KL",
              separation["delta_logp"] - 0.5 > max(abs(separation["entropy_base"] - 0.5), abs(separation["kl"] - 0.5)) + 0.05,
              f"AUC: Δlog p {separation['delta_logp']:.3f}, base entropy {separation['entropy_base']:.3f}, KL {separation['kl']:.3f}; "
              f"{summary['delta_logp_share_abs_under_0.05']:.1%} of the RLVR model's tokens have |Δlog p| < 0.05" + no_effect,
              "Δlog p's AUC above 0.5 by 0.05 more than the others' distance from 0.5", "claim", enough=gained),
        Check(f"replacing the Δlog p-selected {rate10:.0%} of positions recovers most of RLVR's gain, more than entropy",
              gain > noise(accs["rl"], accs["base"]) and d10 - accs["base"] > 0.5 * gain and d10 - e10 > noise(d10, e10),
              f"base {accs['base']:.3f}, RLVR {accs['rl']:.3f}; at rate {rate10:g}: Δlog p {d10:.3f}, entropy {e10:.3f} "
              f"(2 SE of a difference ≈ {noise(d10, e10):.3f})" + no_effect,
              "Δlog p recovers > half the gain and beats entropy by more than 2 SE", "claim", enough=gained),
        Check("some selective extrapolation beats the RLVR model",
              best_ex is not None and best_ex["accuracy"] - accs["rl"] > noise(best_ex["accuracy"], accs["rl"]),
              f"best (τ {best_ex['tau']:g}, γ {best_ex['gamma']:g}): {best_ex['accuracy']:.3f} vs RLVR {accs['rl']:.3f} "
              f"(2 SE ≈ {noise(best_ex['accuracy'], accs['rl']):.3f}); it changed {best_ex['rate']:.2%} of the tokens"
              + no_effect if best_ex else "no grid", "higher by more than 2 SE (the paper: AIME24 52.5 -> 55.4)", "claim",
              enough=gained),
        Check("low-probability reweighting beats DAPO",
              best_lp is not None and best_lp["mean"] - dapo["mean"] > 2 * math.hypot(best_lp["se"], dapo["se"]),
              "; ".join(f"{k}: {v['mean']:.3f} ± {v['se']:.3f}" for k, v in train.items()) + one_seed,
              f"some α above DAPO by more than 2 SE over {len(config.seeds)} seeds (the paper: 42.1 -> 43.8 avg@32)", "claim",
              enough=len(config.seeds) > 1),
    ]
    return Result({"metrics": replacement, "tokens": tokens, "extrapolation": extrapolation, "training": training},
                  summary, checks)


def plot(out: Path) -> list[str]:
    rep, tok, ex, tr = (read_table(out / f"{n}.parquet").to_pylist() for n in ("metrics", "tokens", "extrapolation", "training"))
    fig, axes = plotting.panels(6, width=3.4)
    h1, h2, h3, a2, a3, a4 = axes
    names = {"delta_logp": "Δlog p = log π_RL − log π_base", "entropy_base": "base entropy", "kl": "KL(π_RL ‖ π_base)"}
    for ax, (quantity, xlabel) in zip((h1, h2, h3), names.items()):  # the same positions seen through three lenses
        for m, color in (("base", "C0"), ("rl", "C3")):
            v = [r["value"] for r in tok if r["generated_by"] == m and r["quantity"] == quantity]
            ax.hist(v, bins=60, alpha=0.5, color=color, label=f"tokens of the {'RLVR' if m == 'rl' else 'base'} model", log=True)
        ax.set_xlabel(xlabel)
    h1.legend(fontsize=6)
    base_acc = next(r["accuracy"] for r in rep if r["criterion"] == "none")
    for i, c in enumerate(dict.fromkeys(r["criterion"] for r in rep if r["criterion"] != "none")):
        pts = sorted((r["rate"], r["accuracy"]) for r in rep if r["criterion"] == c)
        a2.plot([0] + [p[0] for p in pts], [base_acc] + [p[1] for p in pts], marker="o", ms=3, label=c, color=f"C{i}")
    a2.set_xlabel("share of positions replaced")
    a2.set_ylabel("accuracy")
    a2.legend(fontsize=6)
    for tau in dict.fromkeys(r["tau"] for r in ex):
        pts = sorted((r["gamma"], r["accuracy"]) for r in ex if r["tau"] == tau)
        a3.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"τ = {tau:g}")
    a3.set_xlabel("γ")
    a3.set_ylabel("accuracy (extrapolated)")
    a3.legend(fontsize=6)
    labels = list(dict.fromkeys(r["preset"] if r["alpha"] != r["alpha"] else f"{r['preset']} α={r['alpha']:g}" for r in tr))
    for i, lab in enumerate(labels):
        v = [r["accuracy_end"] for r in tr if (r["preset"] if r["alpha"] != r["alpha"] else f"{r['preset']} α={r['alpha']:g}") == lab]
        se = sem(v) if len(v) > 1 else 0.0
        a4.bar(i, np.mean(v), yerr=se, color=f"C{i}", capsize=3)
    a4.set_xticks(range(len(labels)), labels, rotation=30, fontsize=6, ha="right")
    a4.set_ylabel("held-out accuracy after training")
    fig.suptitle("The direction of RLVR updates: Δlog p, replacement, extrapolation, reweighting")
    return [plotting.save(fig, out / "direction.png")]


EXPERIMENT = Experiment(
    name="direction",
    title="The direction of RLVR updates on a tiny model: Δlog p, selective replacement, extrapolation, reweighting",
    description=__doc__.split("\n\n")[1],
    config=DirectionConfig,
    run=run,
    plot=plot,
)
