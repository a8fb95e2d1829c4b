"""Does the sampled post-step pass measure what the full pass measures? (issue 12, part 2)

    python benchmarks/diagnostics_sampled.py [--model DIR] [--task arith] [--steps 20] [--prompts 16] [--group 8]
                                             [--lr 3e-4] [--fractions 0.1 0.25 0.5] [--draws 200] [--json FILE]

Along real GRPO steps of both trainers (rlvrlab's GRPOTrainer, and TRL's GRPOTrainer with rlvrlab's
monitor), the full pass's log-ratios ΔL of every completion are recorded at every step. On each
recorded batch this draws the stratified sample of `rlvrlab.lm.diagnostics.measured_groups`
(every group with both outcomes, a share of the others) --draws times per share and compares the
sampled pass's gap/* values with the full pass's on the same batch:

- measured: the share of the groups the sampled pass runs (a group of one completion repeated,
  which costs one row, always runs);
- agreement: |sampled − full| / (the sampled value's standard error): median and 95th percentile
  over steps and draws, and the share of draws within 2 standard errors;
- calibration: the mean of (sampled − full)² over the mean of the variance the sampling adds to
  the standard error (1: the standard error it reports is right on average);
- what a user loses: the sampled standard error over the full pass's (median), and the critical-
  step ratio's rms difference from the full pass's in units of the full pass's own spread (its
  bootstrap standard deviation over groups): below 1, the sampling adds less noise to gap/crit_ratio
  than the batch already has.

Δμ·η is `gap/delta_mu_eta`, the log-odds change `gap/log_odds_change`. No timing: the speed is
benchmarks/grpo_vs_trl.py's and benchmarks/trl_monitor.py's (--unmixed).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import torch

from rlvrlab.gap import gap_stats_mc, realized_log_odds_change
from rlvrlab.lm.diagnostics import group_weights, measured_groups, step_diagnostics
from rlvrlab.lm.tasks import make_task
from rlvrlab.lm.trainer import GRPOTrainer, TrainConfig, load_model

KEYS = ("delta_mu_eta", "log_odds_change")


def record_ours(args, model: str) -> list[tuple]:
    """(ΔL, success, η, groups of one completion repeated) of each step of rlvrlab's trainer, full pass."""
    config = TrainConfig(model=model, task=args.task, batch_size=args.prompts * args.group, group=args.group, lr=args.lr,
                         max_new_tokens=args.max_new_tokens, steps=args.steps, eval_every=10**6, seed=args.seed)
    trainer = GRPOTrainer(config, tempfile.mkdtemp(prefix="diagnostics_sampled."))
    return _recording(trainer.monitor, lambda: [trainer.train_step() for _ in range(args.steps)])


def record_trl(args, model: str) -> list[tuple]:
    """(ΔL, success, η, groups of one completion repeated) of each step of TRL's trainer with rlvrlab's monitor, full pass."""
    import datasets
    from transformers import PrinterCallback

    from rlvrlab.integrations.trl import GapConfig, GapGRPOTrainer, matched_config

    task = make_task(args.task)
    problems = {p.prompt: p for p in task.sample(400, seed=args.seed)}

    def verifier(prompts, completions, **kwargs):
        return [float(task.verify(c, problems[p])) for p, c in zip(prompts, completions)]

    m, tok = load_model(model)
    config = matched_config(tempfile.mkdtemp(prefix="diagnostics_sampled."), max_steps=args.steps, seed=args.seed,
                            per_device_train_batch_size=args.prompts * args.group, num_generations=args.group,
                            max_completion_length=args.max_new_tokens, learning_rate=args.lr, temperature=1.0,
                            use_cpu=True, logging_strategy="no")
    trainer = GapGRPOTrainer(model=m, args=config, reward_funcs=verifier, processing_class=tok, gap=GapConfig(),
                             train_dataset=datasets.Dataset.from_dict({"prompt": list(problems)}))
    trainer.remove_callback(PrinterCallback)
    return _recording(trainer.gap_monitor, trainer.train)


def _recording(monitor, run) -> list[tuple]:
    seen = []
    measure = monitor.measure

    def recorded(delta, success, *, eta, measured=None, always=None, **kw):
        assert measured is None or bool(measured.all())  # the full pass
        seen.append((delta.double().clone(), success.double().clone(), eta, always))
        return measure(delta, success, eta=eta, measured=measured, always=always, **kw)

    monitor.measure = recorded
    torch.set_num_threads(2)
    run()
    return seen


def sampling_variance(row: dict[str, float], delta: torch.Tensor, reward: torch.Tensor, keep: torch.Tensor,
                      always: torch.Tensor | None) -> dict[str, float]:
    """What the sampling adds to each squared standard error: the sampled row's squared SE less
    that of its weighted samples taken as they are."""
    G = reward.shape[1]
    w = group_weights(reward, keep, always).repeat_interleave(G)[None]
    own = gap_stats_mc(reward.reshape(1, -1), proj=delta.reshape(1, -1), weight=w)
    _, se_change = realized_log_odds_change(delta.reshape(1, -1), reward.reshape(1, -1), weight=w)
    return {"delta_mu_eta": row["gap/se_delta_mu_eta"] ** 2 - float(own.se_delta_mu[0]) ** 2,
            "log_odds_change": row["gap/se_log_odds_change"] ** 2 - float(se_change[0]) ** 2}


def score(batches, fraction: float, draws: int, seed: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    z = {k: [] for k in KEYS}
    sq = {k: [] for k in KEYS}
    added = {k: [] for k in KEYS}
    se_ratio = {k: [] for k in KEYS}
    crit, measured = [], []
    for delta, reward, eta, always in batches:
        B = reward.shape[0]
        full = step_diagnostics(delta, reward, eta=eta)
        boot = []
        for _ in range(100):
            i = torch.randint(0, B, (B,), generator=gen)
            boot.append(step_diagnostics(delta[i], reward[i], eta=eta)["gap/crit_ratio"])
        boot = [b for b in boot if math.isfinite(b)]
        spread = statistics.pstdev(boot) if len(boot) > 10 else math.nan
        deviations = []
        for _ in range(draws):
            keep = measured_groups(reward, fraction, gen, always=always)
            measured.append(float(keep.float().mean()))
            row = step_diagnostics(delta, reward, eta=eta, measured=keep, always=always)
            extra = sampling_variance(row, delta, reward, keep, always)
            for k in KEYS:
                if not (math.isfinite(full[f"gap/{k}"]) and row[f"gap/se_{k}"] > 0):
                    continue
                diff = row[f"gap/{k}"] - full[f"gap/{k}"]
                z[k].append(abs(diff) / row[f"gap/se_{k}"])
                sq[k].append(diff * diff)
                added[k].append(extra[k])
                se_ratio[k].append(row[f"gap/se_{k}"] / full[f"gap/se_{k}"])
            if math.isfinite(full["gap/crit_ratio"]) and math.isfinite(row["gap/crit_ratio"]):
                deviations.append((row["gap/crit_ratio"] - full["gap/crit_ratio"]) ** 2)
        if deviations and spread > 0:
            crit.append(math.sqrt(statistics.mean(deviations)) / spread)
    out = {"fraction": fraction, "measured_share": statistics.mean(measured), "steps": len(batches)}
    for k in KEYS:
        ordered = sorted(z[k])
        if not ordered:  # no step with both outcomes
            out[k] = {"draws": 0, **dict.fromkeys(("z_median", "z_95", "within_2_se", "calibration", "se_ratio_median"), math.nan)}
            continue
        out[k] = {"draws": len(ordered), "z_median": statistics.median(ordered), "z_95": ordered[int(0.95 * (len(ordered) - 1))],
                  "within_2_se": sum(x <= 2 for x in ordered) / len(ordered),
                  "calibration": statistics.mean(sq[k]) / statistics.mean(added[k]) if statistics.mean(added[k]) > 0 else math.nan,
                  "se_ratio_median": statistics.median(se_ratio[k])}
    out["crit_ratio_rms_over_spread_median"] = statistics.median(crit) if crit else math.nan
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a model directory (default: the tiny base model of `make demo`)")
    ap.add_argument("--task", default="arith")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trainers", nargs="+", default=["ours", "trl"], choices=["ours", "trl"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from grpo_vs_trl import default_model  # this directory: the tiny base model of `make demo`

    model = args.model or default_model()
    result = {"task": args.task, "prompts": args.prompts, "group": args.group, "steps": args.steps, "lr": args.lr,
              "draws": args.draws, "trainers": {}}
    print(f"the sampled post-step pass against the full one: {args.task}, {args.prompts} prompts x {args.group}, "
          f"{args.steps} steps at lr {args.lr:g}, {args.draws} draws per step and share")
    print(f"{'trainer':8s} {'share':>5s} {'measured':>8s} {'value':>16s} {'|d|/SE med':>10s} {'95%':>6s} {'<=2 SE':>7s} "
          f"{'calib.':>7s} {'SE ratio':>8s} {'crit dev/spread':>15s}")
    for name in args.trainers:
        batches = record_ours(args, model) if name == "ours" else record_trl(args, model)
        mixed = statistics.mean(float(((r > 0).any(-1) & (r < 1).any(-1)).double().mean()) for _, r, _, _ in batches)
        result["trainers"][name] = {"mixed_share": mixed, "scores": []}
        for f in args.fractions:
            s = score(batches, f, args.draws, args.seed)
            result["trainers"][name]["scores"].append(s)
            for k in KEYS:
                v = s[k]
                print(f"{name:8s} {f:5.2f} {s['measured_share']:8.2f} {k:>16s} {v['z_median']:10.2f} {v['z_95']:6.2f} "
                      f"{v['within_2_se']:7.2f} {v['calibration']:7.2f} {v['se_ratio_median']:8.2f} "
                      f"{s['crit_ratio_rms_over_spread_median']:15.2f}")
        print(f"{name:8s} groups with both outcomes: {mixed:.2f} of each batch")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
