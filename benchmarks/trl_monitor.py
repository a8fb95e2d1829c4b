"""Benchmark: the cost of rlvrlab's Gradient-Gap monitor inside TRL's GRPOTrainer.

    python benchmarks/trl_monitor.py [--model DIR] [--prompts 16] [--group 8] [--max-new-tokens 16]
                                     [--min-new-tokens 0] [--warmup 2] [--rounds 20] [--threads 2] [--unmixed 1]
                                     [--json FILE]

One TRL run (GapGRPOTrainer, `matched_config`: GRPO loss, float32, Adam) with `gap_every = 2`:
the monitor measures every second optimizer step and stays idle on the others, so steps with and
without it alternate on the same workload, in one process, under the same load. A callback times
each step from `on_step_begin` to `on_step_end` (generation, rewards, loss, backward, clipping, the
optimizer step and, on monitored steps, the post-step pass). --unmixed is the monitor's
`gap_unmixed`: 1 measures every group (the exact full pass), less a stratified sample (every group
with both outcomes, that share of the others; rlvrlab.lm.diagnostics.measured_groups). Idle steps still run the subclass's
hooks (TRL's methods plus a masked sum over the log-probs TRL computes anyway); the difference is
the post-step pass: the copy of the weights for η, one forward pass over the batch, the gather and
the diagnostics.

Two estimates of the overhead, after --warmup rounds are dropped:
- paired: for each round, (monitored step) / (the idle step before it) − 1, then the median;
- direct: the time inside the monitor's post-step pass (and its weight copy), timed on its own,
  over the median idle step.
The completions differ from step to step (they are sampled), so their mean lengths are reported.
Target (the issue): at most 10% per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rlvrlab.lm.tasks import make_task
from rlvrlab.lm.trainer import load_model

try:
    import datasets
    import trl
    from transformers import PrinterCallback, TrainerCallback

    from rlvrlab.integrations.trl import GapConfig, GapGRPOTrainer, matched_config
except ImportError as err:
    raise SystemExit(f"this benchmark needs TRL: pip install -e '.[trl]' ({err})") from err

from grpo_vs_trl import default_model  # noqa: E402  (this directory: the tiny base model of `make demo`)

TASK = "arith"


def measure(args, model: str, out: Path) -> dict:
    steps = 2 * (args.warmup + args.rounds)
    task = make_task(TASK)
    problems = {p.prompt: p for p in task.sample(400, seed=args.seed)}
    times: list[float] = []
    lengths: list[float] = []
    monitor: list[float] = []

    def verifier(prompts, completions, completion_ids, **kwargs):
        lengths.append(statistics.mean(len(ids) for ids in completion_ids))
        return [float(task.verify(c, problems[p])) for p, c in zip(prompts, completions)]

    class Clock(TrainerCallback):
        def on_step_begin(self, _args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, _args, state, control, **kwargs):
            times.append(time.perf_counter() - self.t0)

    class Timed(GapGRPOTrainer):
        """Times the monitor's own work: the weight copy before the step and the pass after it."""

        def _gap_before_step(self):
            t0 = time.perf_counter()
            super()._gap_before_step()
            self._t_before = time.perf_counter() - t0

        def _gap_after_step(self):
            measuring = self._gap_measuring()
            t0 = time.perf_counter()
            super()._gap_after_step()
            if measuring:
                monitor.append(self._t_before + time.perf_counter() - t0)

    m, tok = load_model(model)
    config = matched_config(str(out), max_steps=steps, per_device_train_batch_size=args.prompts * args.group,
                            num_generations=args.group, max_completion_length=args.max_new_tokens, learning_rate=args.lr,
                            temperature=1.0, seed=args.seed, use_cpu=not torch.cuda.is_available(), logging_strategy="no",
                            generation_kwargs={"min_new_tokens": args.min_new_tokens} if args.min_new_tokens else None)
    trainer = Timed(model=m, args=config, reward_funcs=verifier, processing_class=tok, callbacks=[Clock()],
                    train_dataset=datasets.Dataset.from_dict({"prompt": list(problems)}),
                    gap=GapConfig(gap_every=2, gap_unmixed=args.unmixed))
    trainer.remove_callback(PrinterCallback)
    torch.set_num_threads(args.threads)
    trainer.train()
    assert len(times) == steps and len(monitor) == steps // 2 and len(trainer.gap_history) == steps // 2, \
        (len(times), len(monitor), len(trainer.gap_history))
    assert [r["step"] for r in trainer.gap_history] == list(range(2, steps + 1, 2))  # the even steps were monitored
    skip = 2 * args.warmup
    idle, on = times[skip::2], times[skip + 1::2]  # steps 2k+1 (idle) and 2k+2 (monitored)
    measured = statistics.mean(r["gap/measured_groups"] for r in trainer.gap_history[args.warmup:]) / args.prompts
    return {"idle": idle, "on": on, "monitor": monitor[args.warmup:], "lengths": lengths[skip:], "measured": measured,
            "parameters": sum(p.numel() for p in m.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=str, default=None, help="a model directory (default: the tiny base model of `make demo`)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--min-new-tokens", type=int, default=0,
                    help="make every completion at least this long (long reasoning traces, as on GSM8K)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=2, help="rounds (pairs of steps) dropped before measuring")
    ap.add_argument("--rounds", type=int, default=20, help="measured rounds: one idle and one monitored step each")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unmixed", type=float, default=1.0,
                    help="gap_unmixed: the share of the groups without reward variance the pass measures (1: all)")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = args.model or default_model()
    with tempfile.TemporaryDirectory(prefix="trl_monitor.") as tmp:
        m = measure(args, model, Path(tmp))
    idle, on, mon = m["idle"], m["on"], m["monitor"]
    paired = statistics.median(b / a - 1 for a, b in zip(idle, on))
    direct = statistics.median(mon) / statistics.median(idle)
    result = {
        "model": model, "parameters": m["parameters"], "task": TASK, "prompts": args.prompts, "group": args.group,
        "max_new_tokens": args.max_new_tokens, "min_new_tokens": args.min_new_tokens, "threads": args.threads, "rounds": args.rounds, "warmup": args.warmup,
        "trl": trl.__version__, "torch": torch.__version__,
        "seconds_per_step": {"idle_median": statistics.median(idle), "monitored_median": statistics.median(on),
                             "monitor_pass_median": statistics.median(mon)},
        # every measured round, so that the summaries above can be recomputed
        "seconds_all": {"idle": idle, "monitored": on, "monitor_pass": mon},
        "overhead_paired_median": paired, "overhead_direct": direct,
        "unmixed": args.unmixed, "share_of_groups_measured": m["measured"],
        "completion_length_mean": statistics.mean(m["lengths"]),
    }
    print(f"Gradient-Gap monitor in TRL {trl.__version__}: {args.prompts} prompts x {args.group} completions of <= "
          f"{args.max_new_tokens} tokens ({TASK}; mean length {result['completion_length_mean']:.1f}), "
          f"{m['parameters']:,} parameters, {args.threads} threads, {args.rounds} rounds after {args.warmup}")
    print(f"  TRL step, monitor idle: median {statistics.median(idle):.4f} s; monitored: {statistics.median(on):.4f} s; "
          f"the monitor's own pass: {statistics.median(mon):.4f} s ({100 * m['measured']:.0f}% of the groups measured, "
          f"gap_unmixed {args.unmixed:g})")
    for name, value in (("paired (monitored / idle step before it)", paired), ("direct (monitor pass / idle step)", direct)):
        print(f"  overhead, {name}: {100 * value:+.1f}%   target <= 10%: {'met' if value <= 0.10 else 'MISSED'}")
    spread = max(max(idle) / min(idle), max(on) / min(on))
    if spread > 2:
        print(f"  note: steps vary {spread:.1f}-fold: the machine is busy, and these numbers do not measure the monitor",
              file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
