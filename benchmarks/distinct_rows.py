"""Benchmark: how often a policy repeats its completions, and what running each distinct one once saves.

    python benchmarks/distinct_rows.py [--model DIR] [--tasks arith add countdown] [--prompts 16] [--group 8]
                                       [--max-new-tokens 16] [--steps 10] [--rounds 13] [--threads 2] [--json FILE]

For each task, rlvrlab's trainer (the benchmark's workload of grpo_vs_trl.py: lr 3e-4, the tiny
base model) takes --steps GRPO steps; each step's batch is counted: its distinct (prompt,
completion) rows (`rlvrlab.lm.logprobs.distinct_rows`), its groups without reward variance, and
its groups of one completion repeated (`rlvrlab.lm.diagnostics.repeated_groups`). On the last
batch, the training forward + backward (`token_logprobs(..., entropy=True)` and a backward of a
weighted sum) runs with `distinct=False` and `distinct=True` alternately, --rounds times each; the
first three rounds are dropped and the medians' ratio reported, with the largest difference of
the two passes' log-probs (the same function, on batches of other shapes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rlvrlab.lm.diagnostics import repeated_groups
from rlvrlab.lm.logprobs import distinct_rows, token_logprobs
from rlvrlab.lm.trainer import GRPOTrainer, TrainConfig


def measure(args, model: str, task: str) -> dict:
    config = TrainConfig(model=model, task=task, batch_size=args.prompts * args.group, group=args.group, lr=3e-4,
                         max_new_tokens=args.max_new_tokens, eval_every=10**6, diagnostics=False, seed=args.seed)
    trainer = GRPOTrainer(config, tempfile.mkdtemp(prefix="distinct_rows."))
    distinct, unmixed, repeated = [], [], []
    for _ in range(args.steps):
        rollout, reward = trainer._rollout(trainer._batch(), args.group, trainer.gen)
        distinct.append(distinct_rows(rollout)[0].completion_ids.shape[0])
        unmixed.append(float((reward.bool().all(-1) | ~reward.bool().any(-1)).float().mean()))
        repeated.append(float(repeated_groups(rollout.completion_ids, rollout.completion_mask, args.group).float().mean()))
        trainer.train_step()
        trainer.step += 1
    weight = torch.randn(rollout.completion_ids.shape, generator=torch.Generator().manual_seed(0))
    times = {False: [], True: []}
    logps = {}
    for _ in range(args.rounds):
        for once in (False, True):
            t0 = time.perf_counter()
            logp, _ = token_logprobs(trainer.model, rollout, entropy=True, distinct=once)
            (logp * weight).sum().backward()
            times[once].append(time.perf_counter() - t0)
            trainer.model.zero_grad(set_to_none=True)
            logps[once] = logp.detach()
    every, once = (statistics.median(times[k][3:]) for k in (False, True))
    return {"task": task, "rows": args.prompts * args.group, "distinct_rows": distinct, "unmixed_share": statistics.mean(unmixed),
            "repeated_share": statistics.mean(repeated), "forward_backward_every_row_s": every, "forward_backward_distinct_s": once,
            "speedup": every / once, "max_logp_difference": float((logps[False] - logps[True]).abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a model directory (default: the tiny base model of `make demo`)")
    ap.add_argument("--tasks", nargs="+", default=["arith", "add", "countdown"])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=13)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.rounds < 4:
        ap.error(f"--rounds: got {args.rounds}; allowed: an integer >= 4 (the first 3 are dropped)")
    torch.set_num_threads(args.threads)
    from grpo_vs_trl import default_model  # this directory: the tiny base model of `make demo`

    model = args.model or default_model()
    results = [measure(args, model, task) for task in args.tasks]
    print(f"distinct completions: {args.prompts} prompts x {args.group}, <= {args.max_new_tokens} tokens, {args.steps} steps, "
          f"{args.threads} threads")
    for r in results:
        print(f"  {r['task']:10s} distinct rows of {r['rows']}: {min(r['distinct_rows'])}-{max(r['distinct_rows'])}; groups without "
              f"reward variance {r['unmixed_share']:.2f}, of one completion repeated {r['repeated_share']:.2f}; forward + backward "
              f"{1000 * r['forward_backward_every_row_s']:.1f} ms every row, {1000 * r['forward_backward_distinct_s']:.1f} ms distinct "
              f"({r['speedup']:.2f}x; log-probs {r['max_logp_difference']:.1g} apart)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
