"""Benchmark: one GRPO step in TRL's GRPOTrainer against one in rlvrlab's, on the same model and batch.

    python benchmarks/grpo_vs_trl.py [--model DIR] [--prompts 16] [--group 8] [--max-new-tokens 16]
                                     [--warmup 2] [--rounds 10] [--threads 2] [--unmixed 0.1] [--json FILE]

The model is the tiny base model that `make demo` trains (PretrainConfig(); trained once, about
2 minutes, then cached), or any directory given with --model. The task is `arith`; a step is
(by default) 16 prompts × 8 completions of at most 16 new tokens, sampled at temperature 1, the
GRPO loss and one Adam step. Four trainers start from the same weights: TRL's, ours with diagnostics off,
ours with diagnostics on (one extra forward pass over every group's distinct completions) and ours
with the sampled pass (`diagnostics_unmixed` = --unmixed: every group with both outcomes and that
share of the others). TRL drives the run; a callback times each TRL step from `on_step_begin` to
`on_step_end` (generation, rewards, loss, backward, clipping and the optimizer step all fall
between them in transformers' Trainer loop), then takes one step of each of ours, their order
rotating from round to round, each timed with `time.perf_counter`. The first --warmup rounds are discarded. Both run in this
process with `torch.set_num_threads(--threads)`; with fewer free cores than threads, steps stall
(on a shared 2-core VM: 10 s instead of 0.3 s), and the script says so when one trainer's steps
vary more than 2-fold.

The same update on both sides (each setting checked against the installed source):

    ours (preset "grpo")                          TRL (GRPOConfig)
    mean-std advantage, std with Bessel, +1e-4    scale_rewards="group" (nanstd, Bessel), +1e-4
    clip surrogate, eps 0.2 / 0.2                 epsilon=0.2 (epsilon_high defaults to it)
    seq-mean-token-mean aggregation               loss_type="grpo": per-sequence token mean, mean over sequences
    no KL                                         beta=0.0 (no reference model is loaded)
    one step per batch, logp_old = logp.detach()  num_iterations=1, steps_per_generation = gradient_accumulation_steps
                                                  = 1: old log-probs are the detached current ones, as ours
    batch_size = prompts × group completions      per_device_train_batch_size = prompts × group, num_generations = group
                                                  (so generation_batch_size = one optimizer step)
    Adam, lr, betas (0.9, 0.999), eps 1e-8        optim="adamw_torch" with weight_decay=0.0 (AdamW without decay is Adam)
    clip_grad_norm_ 1.0, constant lr              max_grad_norm=1.0, lr_scheduler_type="constant", no warmup
    float32, no activation checkpointing          bf16=False, activation_checkpointing=False (TRL's defaults are
                                                  True for both, on CPU too; transformers 5 renamed
                                                  gradient_checkpointing to activation_checkpointing)

Rewards on both sides are the task's verifier on the decoded completion (EOS dropped); the TRL
reward function also records each step's completion lengths (EOS included, as ours counts them).

Differences that remain, by design of the two implementations:
- Sampling: TRL calls `model.generate` (transformers' generation loop, logits processors, stopping
  criteria; rows that have ended keep running on padding); ours is a KV-cache loop that drops
  the rows that have ended and, for Llama-family models, calls the decoder layers itself
  (rlvrlab.lm.sampling). Both sample from softmax(logits) and stop when every completion has
  ended, but from different random streams, and TRL's sampler walks the training prompts in its
  own shuffled order: the completions differ, so the mean and the longest length of each side's
  completions are reported (a batch costs in proportion to its longest one).
- Log-probabilities: TRL patches the model's forward with its fused LM head, which projects and
  log-softmaxes every position of prompt + completion in chunks (on CPU it does not skip the
  masked ones) and returns the entropy from the same pass; ours runs the prompts once, the
  backbone on groups of completions of similar length (each up to its own longest), then the LM
  head and log-softmax on chunks of completion positions only (rlvrlab.lm.logprobs; padding and
  prompt positions skipped), the entropy under no_grad. Both compute the entropy
  every step, and neither passes it into the loss.
- Bookkeeping: TRL's per-step metrics, completion logs and FLOP count are inside its timed step;
  fetching the next batch from its dataloader and logging are not (logging is off here). Ours
  picks its prompts inside `train_step`.

Targets (issue 12): ours at least 2× faster than TRL with diagnostics off, on both workloads, the
default one (--max-new-tokens 16) and a longer one (--max-new-tokens 128: the tiny model's
completions then run 4 to about 35 tokens, so a batch mixes short and long ones); the diagnostics
add at most 10%. Both are judged on the medians; the ratios of the means, and the medians of the
ratios taken round by round (robust to load that drifts on a shared machine), are reported too.
The script fails unless every timing is finite and positive, TRL took exactly one generation per
optimizer step, and each trainer changed its model's weights exactly when some group of its
batches had reward variance (without it every advantage is 0 and a GRPO step must not move; with
the default model every trainer sees variance, so all three must move).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rlvrlab.lm.pretrain import PretrainConfig, model_dir, pretrain
from rlvrlab.lm.trainer import GRPOTrainer, TrainConfig, load_model

try:  # TRL is an extra, not a dependency of rlvrlab
    import datasets
    import transformers
    import trl
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOTrainer as TRLGRPOTrainer

    from rlvrlab.integrations.trl import matched_config
except ImportError as err:
    raise SystemExit(f"this benchmark needs TRL: pip install -e '.[trl]' ({err})") from err

TASK = "arith"


def default_model() -> str:
    """The base model of `make demo` (trained once into the cache)."""
    config = PretrainConfig()
    if not (model_dir(config) / "rlvrlab_pretrain.json").exists():
        print("training the default tiny base model (once; about 2 minutes) ...", flush=True)
    return str(pretrain(config))


def ours(args, model: str, diagnostics: bool, out: Path, unmixed: float = 1.0):
    """rlvrlab's trainer with the "grpo" preset (mean-std advantages, clip 0.2, seq-mean-token-mean);
    ``unmixed``: the share of the groups without reward variance its post-step pass measures."""
    config = TrainConfig(model=model, task=TASK, preset="grpo", batch_size=args.prompts * args.group, group=args.group,
                         max_new_tokens=args.max_new_tokens, lr=args.lr, schedule="constant", max_grad_norm=1.0,
                         temperature=1.0, diagnostics=diagnostics, diagnostics_unmixed=unmixed, seed=args.seed)
    return GRPOTrainer(config, out)


def trl_config(args, steps: int, out: Path):
    """TRL's settings for the same update (the table in the module docstring)."""
    config = matched_config(str(out), seed=args.seed, max_steps=steps, per_device_train_batch_size=args.prompts * args.group,
                            num_generations=args.group, max_completion_length=args.max_new_tokens, temperature=1.0,
                            learning_rate=args.lr, use_cpu=True, logging_strategy="no")
    assert config.generation_batch_size == args.prompts * args.group and config.steps_per_generation == 1, \
        f"TRL would not generate once per optimizer step: {config.generation_batch_size=}, {config.steps_per_generation=}"
    return config


def trl_reward(task, problems: dict, G: int, log: list[dict]):
    """The task's verifier as a TRL reward function; it also records each step's completions."""

    def verifier(prompts, completions, completion_ids, **kwargs):
        rewards = [float(task.verify(c, problems[p])) for p, c in zip(prompts, completions)]
        lengths = [len(ids) for ids in completion_ids]  # up to and including EOS, as ours counts them
        signal = any(len(set(rewards[i:i + G])) > 1 for i in range(0, len(rewards), G))  # a prompt's G copies are adjacent
        log.append({"length_mean": statistics.mean(lengths), "length_max": max(lengths),
                    "reward": statistics.mean(rewards), "signal": signal})
        return rewards

    return verifier


def snapshot(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def max_difference(model, other: list[torch.Tensor]) -> float:
    return max(float((p.detach() - q).abs().max()) for p, q in zip(model.parameters(), other))


def measure(args, model: str, tmp: Path) -> dict:
    """Run TRL for warmup + rounds steps, with one step of ours (off, on, sampled) after each; see the docstring."""
    steps = args.warmup + args.rounds
    mine = {"ours_off": ours(args, model, False, tmp / "ours_off"), "ours_on": ours(args, model, True, tmp / "ours_on"),
            "ours_sampled": ours(args, model, True, tmp / "ours_sampled", args.unmixed)}
    problems = {p.prompt: p for p in mine["ours_off"].train_set}  # TRL trains on the prompts ours trains on
    trl_log: list[dict] = []
    times: dict[str, list[float]] = {"trl": [], **{k: [] for k in mine}}
    rows: dict[str, list[dict]] = {k: [] for k in mine}

    class Alternate(TrainerCallback):
        """Times TRL's step, then takes one step of each of ours (diagnostics off, full, sampled), in an order that
        rotates from round to round."""

        def on_step_begin(self, _args, state, control, **kwargs):
            assert torch.get_num_threads() == args.threads, f"the thread count changed to {torch.get_num_threads()}"
            self.t0 = time.perf_counter()

        def on_step_end(self, _args, state, control, **kwargs):
            times["trl"].append(time.perf_counter() - self.t0)
            names = list(mine)
            k = state.global_step % len(names)
            for name in names[k:] + names[:k]:
                t0 = time.perf_counter()
                rows[name].append(mine[name].train_step())
                times[name].append(time.perf_counter() - t0)
                mine[name].step += 1  # as train() does: the next step takes the next prompts

    trl_model, tokenizer = load_model(model)
    trainer = TRLGRPOTrainer(model=trl_model, args=trl_config(args, steps, tmp / "trl"),
                             reward_funcs=trl_reward(mine["ours_off"].task, problems, args.group, trl_log),
                             train_dataset=datasets.Dataset.from_dict({"prompt": list(problems)}),
                             processing_class=tokenizer, callbacks=[Alternate()])
    trainer.remove_callback(PrinterCallback)  # it would print TRL's summary of the run
    torch.set_num_threads(args.threads)  # the same threads for both, whatever building the trainer did
    models = {"trl": trainer.model, **{k: t.model for k, t in mine.items()}}
    before = {k: snapshot(m) for k, m in models.items()}
    trainer.train()

    assert trainer.state.global_step == steps and len(trl_log) == steps, \
        f"TRL took {trainer.state.global_step} optimizer steps and {len(trl_log)} generations; expected {steps} of each"
    assert all(len(v) == steps for v in times.values()) and all(t.step == steps for t in mine.values())
    # A GRPO step moves the weights iff some group has reward variance: otherwise every advantage is
    # exactly 0, and so are the gradients and Adam's moments.
    signal = {"trl": sum(s["signal"] for s in trl_log) / steps,
              **{k: sum(r["frac_reward_zero_std"] < 1 for r in v) / steps for k, v in rows.items()}}
    changed = {k: max_difference(m, before[k]) for k, m in models.items()}
    for k in models:
        assert (changed[k] > 0) == (signal[k] > 0), \
            f"{k}: the weights changed by {changed[k]:.3g}, with reward variance in {signal[k]:.0%} of the steps"
    completions = {"trl": trl_log[args.warmup:],
                   **{k: [{"length_mean": r["completions/mean_length"], "length_max": r["completions/max_length"],
                           "reward": r["reward"]} for r in v[args.warmup:]] for k, v in rows.items()}}
    a = trainer.args
    return {
        "times": {k: v[args.warmup:] for k, v in times.items()}, "completions": completions, "signal": signal,
        "changed": changed, "parameters": sum(p.numel() for p in trl_model.parameters()),
        "rows_sampled": rows["ours_sampled"][args.warmup:],
        "off_vs_on": max_difference(mine["ours_off"].model, [p.detach() for p in mine["ours_on"].model.parameters()]),
        "trl_config": {"per_device_train_batch_size": a.per_device_train_batch_size, "num_generations": a.num_generations,
                       "generation_batch_size": a.generation_batch_size, "steps_per_generation": a.steps_per_generation,
                       "gradient_accumulation_steps": a.gradient_accumulation_steps, "num_iterations": a.num_iterations,
                       "loss_type": a.loss_type, "beta": a.beta, "epsilon_low": trainer.epsilon_low,
                       "epsilon_high": trainer.epsilon_high, "scale_rewards": a.scale_rewards, "optim": str(a.optim),
                       "weight_decay": a.weight_decay, "max_grad_norm": a.max_grad_norm,
                       "lr_scheduler_type": str(a.lr_scheduler_type), "gradient_checkpointing": a.gradient_checkpointing,
                       "bf16": a.bf16, "use_vllm": a.use_vllm},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=str, default=None, help="a model directory (default: the tiny base model of `make demo`)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4, help="Adam's learning rate (lm_grpo's default)")
    ap.add_argument("--warmup", type=int, default=2, help="rounds discarded before measuring")
    ap.add_argument("--rounds", type=int, default=10, help="measured rounds (one step of each trainer per round)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unmixed", type=float, default=0.1,
                    help="the sampled pass: share of the groups without reward variance measured (diagnostics_unmixed)")
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = args.model or default_model()
    with tempfile.TemporaryDirectory(prefix="grpo_vs_trl.") as tmp:
        m = measure(args, model, Path(tmp))
    times = m["times"]
    assert all(math.isfinite(x) and x > 0 for v in times.values() for x in v), f"bad timings: {times}"

    med = {k: statistics.median(v) for k, v in times.items()}
    mean = {k: statistics.mean(v) for k, v in times.items()}
    speedup, overhead = med["trl"] / med["ours_off"], med["ours_on"] / med["ours_off"] - 1
    sampled = med["ours_sampled"] / med["ours_off"] - 1
    paired_speedup = statistics.median(t / o for t, o in zip(times["trl"], times["ours_off"]))
    paired_overhead = statistics.median(n / o - 1 for n, o in zip(times["ours_on"], times["ours_off"]))
    paired_sampled = statistics.median(n / o - 1 for n, o in zip(times["ours_sampled"], times["ours_off"]))
    measured = statistics.mean(r["gap/measured_groups"] for r in m["rows_sampled"]) / args.prompts
    stat = {f: {k: statistics.mean(s[f] for s in v) for k, v in m["completions"].items()}
            for f in ("length_mean", "length_max", "reward")}
    result = {
        "model": model, "parameters": m["parameters"], "task": TASK, "prompts": args.prompts, "group": args.group,
        "max_new_tokens": args.max_new_tokens, "lr": args.lr, "threads": args.threads, "seed": args.seed,
        "warmup": args.warmup, "rounds": args.rounds,
        "seconds_per_step": {k: {"median": round(med[k], 4), "mean": round(mean[k], 4), "all": [round(x, 4) for x in v]}
                             for k, v in times.items()},
        "speedup_trl_over_ours_off": round(speedup, 3),
        "speedup_trl_over_ours_off_means": round(mean["trl"] / mean["ours_off"], 3),
        "diagnostics_overhead": round(overhead, 3),
        "diagnostics_overhead_means": round(mean["ours_on"] / mean["ours_off"] - 1, 3),
        # ratios per round, then their median: robust to load that changes from round to round
        "speedup_paired_median": round(paired_speedup, 3),
        "diagnostics_overhead_paired_median": round(paired_overhead, 3),
        "unmixed": args.unmixed,
        "sampled_diagnostics_overhead": round(sampled, 3),
        "sampled_diagnostics_overhead_means": round(mean["ours_sampled"] / mean["ours_off"] - 1, 3),
        "sampled_diagnostics_overhead_paired_median": round(paired_sampled, 3),
        "sampled_share_of_groups_measured": round(measured, 3),
        "completion_length_mean": {k: round(v, 2) for k, v in stat["length_mean"].items()},
        "completion_length_longest_mean": {k: round(v, 2) for k, v in stat["length_max"].items()},
        "reward_mean": {k: round(v, 4) for k, v in stat["reward"].items()},
        "steps_with_reward_variance": m["signal"],
        "max_weight_change": m["changed"],
        "ours_off_vs_on_max_weight_difference": m["off_vs_on"],
        "trl_config": m["trl_config"],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    }
    print(f"GRPO step, TRL {trl.__version__} against rlvrlab: {args.prompts} prompts x {args.group} completions of <= "
          f"{args.max_new_tokens} tokens ({TASK}), {m['parameters']:,} parameters, {args.threads} threads, "
          f"{args.rounds} rounds after {args.warmup} warm-up")
    for k, name in (("trl", "TRL GRPOTrainer"), ("ours_off", "ours, diagnostics off"), ("ours_on", "ours, diagnostics on"),
                    ("ours_sampled", f"ours, sampled ({args.unmixed:g})")):
        print(f"  {name:22s}: median {med[k]:.3f} s/step, mean {mean[k]:.3f}   completions: mean length "
              f"{stat['length_mean'][k]:.1f}, longest {stat['length_max'][k]:.1f}, reward {stat['reward'][k]:.3f}")
    print(f"  TRL / ours (diagnostics off): {speedup:.2f}x (means: {result['speedup_trl_over_ours_off_means']:.2f}x, "
          f"round by round: {result['speedup_paired_median']:.2f}x)   target >= 2x: {'met' if speedup >= 2 else 'MISSED'}")
    print(f"  diagnostics overhead: {100 * overhead:+.1f}% (means: {100 * result['diagnostics_overhead_means']:+.1f}%, "
          f"round by round: {100 * result['diagnostics_overhead_paired_median']:+.1f}%)   "
          f"target <= 10%: {'met' if overhead <= 0.10 else 'MISSED'}")
    print(f"  sampled diagnostics (every mixed group, {args.unmixed:g} of the others; {100 * measured:.0f}% of the groups "
          f"measured): {100 * sampled:+.1f}% (means: {100 * result['sampled_diagnostics_overhead_means']:+.1f}%, round by "
          f"round: {100 * paired_sampled:+.1f}%)   target <= 10%: {'met' if sampled <= 0.10 else 'MISSED'}")
    print(f"  weights moved: {', '.join(f'{k} {v:.2g}' for k, v in m['changed'].items())}; "
          f"ours off and on end {m['off_vs_on']:.2g} apart")
    spread = max(max(v) / min(v) for v in times.values())
    if spread > 2:
        print(f"  note: one trainer's steps vary {spread:.1f}-fold: the machine is busy (other processes, or more threads "
              "than free cores), and these numbers do not measure the trainers")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
