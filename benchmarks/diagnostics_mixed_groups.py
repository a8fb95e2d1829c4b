"""Would the post-step pass measure the same thing on the mixed groups only? (issue 12, part 2)

    python benchmarks/diagnostics_mixed_groups.py [--model DIR] [--task add] [--lr 3e-4] [--steps 30]

A cheaper diagnostics pass would run only on the groups with both correct and incorrect
completions. Along real GRPO steps of rlvrlab's trainer this computes, from the same post-step
log-ratios ΔL of every completion, the trainer's pooled ``gap/*`` values over all groups and over
the mixed groups only, and reports how far apart they are: relative to the full value and in
units of the full value's standard error. A median |z| well above 1 means the restriction changes
what is measured, not just its precision.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile

import torch

from rlvrlab.lm.diagnostics import step_diagnostics
from rlvrlab.lm.logprobs import token_logprobs
from rlvrlab.lm.pretrain import PretrainConfig, pretrain
from rlvrlab.lm.trainer import GRPOTrainer, TrainConfig


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="a causal LM directory (default: the tiny base model, trained once)")
    ap.add_argument("--task", default="add")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = args.model or str(pretrain(PretrainConfig()))
    cfg = TrainConfig(model=model, task=args.task, batch_size=args.batch_size, group=8, steps=args.steps, lr=args.lr,
                      eval_every=10**6)
    tr = GRPOTrainer(cfg, tempfile.mkdtemp())
    pairs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in ("gap/delta_mu_eta", "gap/log_odds_change")}
    for _ in range(args.steps):
        state = tr.gen.get_state()  # the step samples the same completions again
        rollout, reward = tr._rollout(tr._batch(), cfg.group, tr.gen)
        tr.gen.set_state(state)
        with torch.no_grad():
            old = token_logprobs(tr.model, rollout)[0]
        row = tr.train_step()
        tr.step += 1
        with torch.no_grad():
            delta = (token_logprobs(tr.model, rollout)[0] - old).sum(-1).view(reward.shape)
        mixed = (reward > 0).any(-1) & (reward < 1).any(-1)
        if not bool(mixed.any()):
            continue
        full = step_diagnostics(delta, reward, eta=row["gap/eta"])
        part = step_diagnostics(delta[mixed], reward[mixed], eta=row["gap/eta"])
        for k, v in pairs.items():
            se = full["gap/se_" + k.removeprefix("gap/")]
            if math.isfinite(full[k]) and math.isfinite(part[k]) and full[k] and se > 0:
                v.append((part[k] - full[k], full[k], se))
    out = {}
    for k, v in pairs.items():
        if not v:
            print(f"{args.task} lr {args.lr:g} {k}: no step with a mixed group")
            continue
        z = [abs(d) / se for d, _, se in v]
        out[k] = {"steps": len(v), "median_relative": statistics.median(abs(d) / abs(f) for d, f, _ in v),
                  "median_abs_z": statistics.median(z), "max_abs_z": max(z), "share_abs_z_above_2": sum(x > 2 for x in z) / len(z)}
        o = out[k]
        print(f"{args.task} lr {args.lr:g} {k}: {o['steps']} steps, median |mixed - all| / |all| {o['median_relative']:.2f}, "
              f"median |z| {o['median_abs_z']:.2f}, max |z| {o['max_abs_z']:.2f}, share |z| > 2 {o['share_abs_z_above_2']:.2f}")
    return out


if __name__ == "__main__":
    main()
