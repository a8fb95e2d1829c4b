"""Benchmark: the peak memory of one GRPO step at a real vocabulary, TRL's GRPOTrainer against rlvrlab's.

    python benchmarks/memory.py [--vocab 151936] [--prompts 2] [--group 4] [--tokens 256] [--hidden 64]
                                [--layers 2] [--threads 2] [--json FILE]

The model is a Qwen2 built here from a transformers config: tiny (2 layers, hidden size 64) but with
Qwen2.5's vocabulary of 151,936 tokens, its embedding tied to the lm_head as in the small Qwen2.5
models, so that the next-token distributions, not the network, dominate memory. Its tokenizer is a
synthetic character tokenizer (the `arith` task's characters, then filler tokens up to the vocabulary
size). The model never emits EOS (every input embedding but EOS's has a constant first coordinate,
so the final hidden state's first coordinate is positive, and EOS's lm_head row is −10 there and 0
elsewhere: its logit is some 90 nats below the others), so every completion is exactly --tokens long on
both sides. A reward of 0/1 from a checksum of the completion text gives the groups reward variance,
so both sides take a real step (the same tensors would be allocated with zero advantages).

Each side runs in its own process (TRL's; ours with the Gradient-Gap diagnostics off; ours with them
on, one extra forward pass), builds its trainer, then takes ONE step: sampling, rewards, log-probs,
loss, backward and the optimizer step (TRL's step from `on_step_begin` to `on_step_end`, ours
`train_step`). Just before the step, freed heap memory is handed back to the OS (`malloc_trim`) and
the peak resident set size is reset to the current one (writing 5 to /proc/self/clear_refs);
the step's peak memory is the peak RSS after it (`getrusage(RUSAGE_SELF).ru_maxrss`) minus the RSS
before it. Where the peak cannot be reset, the peak before the step is reported too: a step whose
peak stays below it is then only bounded, and the table says so. Both sides use the settings of
`rlvrlab.integrations.trl.matched_config` (float32, no activation checkpointing, Adam).

The analytic size of the (N, T, V) float32 logits of the step, N·T·V·4 bytes, is reported beside
the peaks: an implementation that materializes them (and their log-softmax) peaks at several times
it; one that computes the log-probabilities in chunks of positions stays well below it.
Target (the issue): ours (diagnostics on) at most TRL's. The comparison is printed, not asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

TASK = "arith"
SIDES = {"trl": "TRL GRPOTrainer", "ours_off": "ours, diagnostics off", "ours_on": "ours, diagnostics on"}


# --- the model -------------------------------------------------------------------------------


def wide_tokenizer(alphabet, vocab: int):
    """A character tokenizer (as rlvrlab.lm.tokenizer.char_tokenizer) padded with filler tokens
    "<t123>" up to ``vocab`` entries."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlvrlab.lm.tokenizer import SPECIAL

    words = list(SPECIAL) + sorted(set(alphabet))
    words += [f"<t{i}>" for i in range(vocab - len(words))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   padding_side="left")


def build_model(args, path: Path) -> None:
    """The tiny wide Qwen2 of the module docstring, saved with its tokenizer into ``path``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    from rlvrlab.lm.tasks import make_task

    tok = wide_tokenizer(make_task(TASK).alphabet, args.vocab)
    assert len(tok) == args.vocab
    torch.manual_seed(args.seed)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64 + args.tokens, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the table's output
    with torch.no_grad():  # no EOS, ever: see the module docstring
        w = model.get_input_embeddings().weight  # (V, H), the lm_head's too
        w[:, 0] = 1.0
        w[tok.eos_token_id] = 0.0
        w[tok.eos_token_id, 0] = -10.0
    model.save_pretrained(path)
    tok.save_pretrained(path)


def checksum_reward(text: str) -> float:
    """0/1 from the text's CRC-32: deterministic in every process (unlike hash()), and varied."""
    return float(zlib.crc32(text.encode()) & 1)


# --- measuring one step ----------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


class Meter:
    """Peak RSS of one stretch of code above the RSS at its start (see the module docstring)."""

    def start(self) -> None:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.maxrss_before = _maxrss_bytes()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.rss_before = _rss_bytes()
        self.t0 = time.perf_counter()

    def stop(self) -> dict:
        seconds = time.perf_counter() - self.t0
        after = _maxrss_bytes()
        return {"rss_before_bytes": self.rss_before, "maxrss_before_bytes": self.maxrss_before,
                "peak_reset": self.reset, "maxrss_after_bytes": after, "step_peak_bytes": after - self.rss_before,
                # without a reset, a step whose peak stays below the earlier one is only bounded by it
                "bounded_only": not self.reset and after <= self.maxrss_before, "seconds": seconds}


def run_ours(args, model: str, out: Path, diagnostics: bool) -> dict:
    from rlvrlab.lm.trainer import GRPOTrainer, TrainConfig

    config = TrainConfig(model=model, task=TASK, preset="grpo", batch_size=args.prompts * args.group, group=args.group,
                         max_new_tokens=args.tokens, lr=1e-3, schedule="constant", max_grad_norm=1.0, temperature=1.0,
                         diagnostics=diagnostics, seed=args.seed)
    trainer = GRPOTrainer(config, out, reward_fn=lambda text, problem: checksum_reward(text))
    meter = Meter()
    meter.start()
    row = trainer.train_step()
    result = meter.stop()
    # every completion has the same length, so the mean and the longest are both --tokens
    return {**result, "completion_length_mean": row["completions/mean_length"], "completion_length_max": row["completions/max_length"],
            "completions": args.prompts * args.group}


def run_trl(args, model: str, out: Path) -> dict:
    import datasets
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOTrainer as TRLGRPOTrainer

    from rlvrlab.integrations.trl import matched_config
    from rlvrlab.lm.tasks import make_task
    from rlvrlab.lm.trainer import load_model

    N = args.prompts * args.group
    config = matched_config(str(out), seed=args.seed, max_steps=1, per_device_train_batch_size=N,
                            num_generations=args.group, max_completion_length=args.tokens, temperature=1.0,
                            learning_rate=1e-3, use_cpu=True, logging_strategy="no")
    assert config.generation_batch_size == N and config.steps_per_generation == 1
    lengths: list[int] = []

    def reward(prompts, completions, completion_ids, **kwargs):
        lengths.extend(len(ids) for ids in completion_ids)
        return [checksum_reward(c) for c in completions]

    meter, result = Meter(), {}

    class Measure(TrainerCallback):
        def on_step_begin(self, _args, state, control, **kwargs):
            meter.start()

        def on_step_end(self, _args, state, control, **kwargs):
            result.update(meter.stop())

    problems = make_task(TASK).sample(max(64, 4 * args.prompts), seed=args.seed)
    trl_model, tokenizer = load_model(model)
    trainer = TRLGRPOTrainer(model=trl_model, args=config, reward_funcs=reward,
                             train_dataset=datasets.Dataset.from_dict({"prompt": [p.prompt for p in problems]}),
                             processing_class=tokenizer, callbacks=[Measure()])
    trainer.remove_callback(PrinterCallback)
    torch.set_num_threads(args.threads)
    trainer.train()
    assert trainer.state.global_step == 1 and len(lengths) == N, (trainer.state.global_step, len(lengths))
    return {**result, "completion_length_mean": sum(lengths) / N, "completion_length_max": max(lengths), "completions": N}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="memory.") as tmp:
        if args.side == "trl":
            result = run_trl(args, args.model, Path(tmp))
        else:
            result = run_ours(args, args.model, Path(tmp) / "run", diagnostics=args.side == "ours_on")
    Path(args.result).write_text(json.dumps(result))


# --- the parent: one process per side, the table ---------------------------------------------


def _rlvrlab_source() -> dict:
    """Which rlvrlab the children import (PYTHONPATH can point them at another checkout)."""
    import rlvrlab

    src = Path(rlvrlab.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"path": str(src), "commit": commit}


def _gib(n: float) -> float:
    return n / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=151_936, help="vocabulary size V (Qwen2.5's by default)")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step")
    ap.add_argument("--group", type=int, default=4, help="completions per prompt (N = prompts x group)")
    ap.add_argument("--tokens", type=int, default=256, help="completion length T (every completion is this long)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden size of the tiny Qwen2")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sides", type=str, default=",".join(SIDES), help=f"which of {', '.join(SIDES)} to measure")
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    ap.add_argument("--side", choices=list(SIDES), default=None, help=argparse.SUPPRESS)  # a child process
    ap.add_argument("--model", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        child(args)
        return
    sides = [s for s in args.sides.split(",") if s]
    if not sides or any(s not in SIDES for s in sides):
        raise SystemExit(f"--sides {args.sides!r}: allowed are {', '.join(SIDES)}, comma-separated")
    if "trl" in sides:
        try:
            import trl  # noqa: F401  TRL is an extra, not a dependency of rlvrlab
        except ImportError as err:
            raise SystemExit(f"this benchmark needs TRL: pip install -e '.[trl]' ({err})") from err

    N, T, V = args.prompts * args.group, args.tokens, args.vocab
    logits_bytes = N * T * V * 4
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="memory.") as tmp:
        model = Path(tmp) / "model"
        build_model(args, model)
        for side in sides:
            out = Path(tmp) / f"{side}.json"
            cmd = [sys.executable, __file__, "--side", side, "--model", str(model), "--result", str(out)]
            for k in ("vocab", "prompts", "group", "tokens", "hidden", "layers", "threads", "seed"):
                cmd += [f"--{k}", str(getattr(args, k))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
            peaks[side] = json.loads(out.read_text())
    for side, p in peaks.items():
        assert p["completions"] == N and p["completion_length_max"] == T, \
            f"{side}: {p['completions']} completions, longest {p['completion_length_max']} (expected {N} of {T} tokens)"
        p["peak_over_logits"] = round(p["step_peak_bytes"] / logits_bytes, 4)

    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if "trl" in sides:
        import trl

        versions["trl"] = trl.__version__
    result = {"vocab": V, "prompts": args.prompts, "group": args.group, "completions": N, "tokens": T,
              "hidden": args.hidden, "layers": args.layers, "threads": args.threads, "seed": args.seed,
              "logits_bytes": logits_bytes, "peaks": peaks,
              "ours_over_trl": {s: round(peaks[s]["step_peak_bytes"] / peaks["trl"]["step_peak_bytes"], 4)
                                for s in ("ours_off", "ours_on") if s in peaks and "trl" in peaks},
              "rlvrlab": _rlvrlab_source(), "versions": versions}

    print(f"Peak memory of one GRPO step: {N} completions ({args.prompts} prompts x {args.group}) of {T} tokens, "
          f"vocabulary {V:,}, Qwen2 of {args.layers} layers, hidden {args.hidden}, {args.threads} threads")
    print(f"  rlvrlab from {result['rlvrlab']['path']} ({result['rlvrlab']['commit'][:10] or 'no git commit'})")
    print(f"  the step's logits, N*T*V*4 bytes: {_gib(logits_bytes):.3f} GiB")
    print(f"  {'side':24s} {'peak above start':>17s} {'x logits':>9s} {'RSS at start':>13s} {'completions':>12s} {'seconds':>8s}")
    for side, p in peaks.items():
        bound = " (at most)" if p["bounded_only"] else ""
        print(f"  {SIDES[side]:24s} {_gib(p['step_peak_bytes']):>13.3f} GiB {p['peak_over_logits']:>9.2f} "
              f"{_gib(p['rss_before_bytes']):>9.3f} GiB {p['completions']:>5d} x {int(p['completion_length_max']):<4d}"
              f"{p['seconds']:>8.1f}{bound}")
    for s, r in result["ours_over_trl"].items():
        print(f"  {SIDES[s]} / TRL: {r:.2f}   target <= 1: {'met' if r <= 1 else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
