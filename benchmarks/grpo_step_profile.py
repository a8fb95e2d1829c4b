"""Benchmark: where the time of one GRPO step of rlvrlab's trainer goes, phase by phase.

    python benchmarks/grpo_step_profile.py [--model DIR] [--prompts 16] [--group 8] [--max-new-tokens 16]
                                           [--warmup 2] [--rounds 10] [--threads 2] [--diagnostics] [--json FILE]

The workload of grpo_vs_trl.py (the same trainer settings), ours alone. Each phase is timed with
`time.perf_counter` around the call that does it, by wrapping the names the trainer calls:

    sample      rlvrlab.lm.trainer.sample: prefill, decode loop, every model call of the sampler
    rewards     decoding the completions to text and the verifier
    forward     token_logprobs under grad: log π of every completion token (and its entropy)
    backward    loss.backward()
    optimizer   clip_grad_norm_ and Adam's step
    other       the rest of train_step: the loss, the batch, the metrics row (and with
                --diagnostics the post-step forward, which is not split out)

and the sampler's steps (the prompts' forward and each decode step) are counted, by a forward
pre-hook on the output layer, so `sample / calls` is the cost of one step. Medians over --rounds
steps after --warmup; shares are of the median step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from rlvrlab.lm import trainer as trainer_module
from rlvrlab.lm.trainer import GRPOTrainer, TrainConfig

TASK = "arith"
PHASES = ("sample", "rewards", "forward", "backward", "optimizer", "other")


def default_model() -> str:
    from rlvrlab.lm.pretrain import PretrainConfig, pretrain

    return str(pretrain(PretrainConfig()))


def measure(args, out: Path) -> dict:
    config = TrainConfig(model=args.model, task=TASK, preset="grpo", batch_size=args.prompts * args.group, group=args.group,
                         max_new_tokens=args.max_new_tokens, lr=args.lr, schedule="constant", max_grad_norm=1.0,
                         temperature=1.0, diagnostics=args.diagnostics, seed=args.seed)
    tr = GRPOTrainer(config, out)
    spent: dict[str, float] = {}
    calls = {"in_sample": False, "sample_calls": 0}

    @contextmanager
    def timed(phase):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - t0

    def wrap(fn, phase, only_with_grad=False):
        def wrapped(*a, **kw):
            if only_with_grad and not torch.is_grad_enabled():
                return fn(*a, **kw)
            with timed(phase):
                return fn(*a, **kw)
        return wrapped

    def sample(*a, **kw):
        calls["in_sample"] = True
        try:
            with timed("sample"):
                return original_sample(*a, **kw)
        finally:
            calls["in_sample"] = False

    def count(module, inputs):
        calls["sample_calls"] += calls["in_sample"]

    original_sample, original_logprobs, original_texts = trainer_module.sample, trainer_module.token_logprobs, \
        trainer_module.completion_texts
    trainer_module.sample = sample
    trainer_module.token_logprobs = wrap(trainer_module.token_logprobs, "forward", only_with_grad=True)
    trainer_module.completion_texts = wrap(trainer_module.completion_texts, "rewards")
    tr._rewards = wrap(tr._rewards, "rewards")
    tr.opt.step = wrap(tr.opt.step, "optimizer")
    warnings.filterwarnings("ignore", message="Seems like `optimizer.step()` has been overridden")  # our wrapper, just above
    clip = torch.nn.utils.clip_grad_norm_
    torch.nn.utils.clip_grad_norm_ = wrap(clip, "optimizer")
    backward = torch.Tensor.backward
    torch.Tensor.backward = wrap(backward, "backward")
    # the output layer runs once per sampler step, in the model's forward and in the sampler's own
    # step alike (a hook on the model itself would send the sampler down the model's forward)
    (tr.model.get_output_embeddings() or tr.model).register_forward_pre_hook(count)
    steps, lengths, n_calls = [], [], []
    try:
        for i in range(args.warmup + args.rounds):
            spent.clear()
            calls["sample_calls"] = 0
            t0 = time.perf_counter()
            row = tr.train_step()
            total = time.perf_counter() - t0
            tr.step += 1
            if i >= args.warmup:
                spent["other"] = total - sum(spent.values())
                steps.append({"total": total, **{p: spent.get(p, 0.0) for p in PHASES}})
                lengths.append((row["completions/mean_length"], row["completions/max_length"]))
                n_calls.append(calls["sample_calls"])
    finally:
        trainer_module.sample, trainer_module.token_logprobs = original_sample, original_logprobs
        trainer_module.completion_texts = original_texts
        torch.nn.utils.clip_grad_norm_ = clip
        torch.Tensor.backward = backward
    return {"steps": steps, "lengths": lengths, "sample_calls": n_calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=str, default=None, help="a model directory (default: the tiny base model of `make demo`)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=2, help="steps discarded before measuring")
    ap.add_argument("--rounds", type=int, default=10, help="measured steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diagnostics", action="store_true", help="with the post-step diagnostics pass (timed under other)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.model = args.model or default_model()
    with tempfile.TemporaryDirectory(prefix="grpo_step_profile.") as tmp:
        m = measure(args, Path(tmp))
    med = {k: statistics.median(s[k] for s in m["steps"]) for k in ("total", *PHASES)}
    calls = statistics.median(m["sample_calls"])
    result = {"model": args.model, "prompts": args.prompts, "group": args.group, "max_new_tokens": args.max_new_tokens,
              "threads": args.threads, "diagnostics": args.diagnostics, "warmup": args.warmup, "rounds": args.rounds,
              "seconds_median": {k: round(v, 5) for k, v in med.items()},
              "share_of_median_step": {k: round(med[k] / med["total"], 4) for k in PHASES},
              "sample_model_calls_median": calls,
              "seconds_per_sample_call": round(med["sample"] / calls, 6) if calls else None,
              "completion_length_mean": round(statistics.mean(x for x, _ in m["lengths"]), 2),
              "completion_length_longest_mean": round(statistics.mean(y for _, y in m["lengths"]), 2),
              "steps": [{k: round(v, 5) for k, v in s.items()} for s in m["steps"]],
              "versions": {"torch": torch.__version__}}
    print(f"rlvrlab GRPO step, {args.prompts} prompts x {args.group} completions of <= {args.max_new_tokens} tokens ({TASK}), "
          f"{args.threads} threads, diagnostics {'on' if args.diagnostics else 'off'}, {args.rounds} steps after "
          f"{args.warmup} warm-up; completions: mean length {result['completion_length_mean']}, longest "
          f"{result['completion_length_longest_mean']}")
    print(f"  step      {1000 * med['total']:7.1f} ms (median)")
    for k in PHASES:
        extra = f"   {calls:.0f} model calls, {1000 * med['sample'] / calls:.2f} ms each" if k == "sample" and calls else ""
        print(f"  {k:9s} {1000 * med[k]:7.1f} ms  {100 * med[k] / med['total']:5.1f}%{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
