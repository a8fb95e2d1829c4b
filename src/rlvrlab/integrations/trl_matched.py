"""One run of rlvrlab's trainer settings (a TrainConfig) through TRL's GRPOTrainer with the
Gradient-Gap monitor, measured as rlvrlab's trainer measures its own: the same problems, the same
held-out split, held-out accuracy every ``eval_every`` steps from the same sampler, and the rows
of metrics.parquet in the trainer's format (TRL's own metric names, which rlvrlab's trainer also
uses, beside the monitor's ``gap/*``). What differs is TRL: its batches, sampler and update.

    rows = train_matched(TrainConfig(model=DIR, task="add", lr=3e-4, steps=60), "runs/trl-add")

Used by warning-bench to check that the monitor's warnings in TRL match those of rlvrlab's trainer
on the same settings. Only the "grpo" preset has a matched TRL configuration (matched_config).
A run is atomic: metrics.parquet is written at the end, and a run without it starts over.

The learning rate follows ``config.schedule`` as TRL can run it:
- constant: ``config.lr``;
- gap-adaptive: the monitor's rule (GapConfig gap_schedule "gap-adaptive") from ``config.lr``, with
  the config's adaptive_* settings, ratchet included, and its lr_min / lr_max; with adaptive_start
  "probe", `probe_trl` scans first (as below), its critical rate starts the rule's running one
  (GapAdaptiveRate.prior) and TRL starts at the lower of ``config.lr`` and the rule's aim;
- probe: `probe_trl` before ``train()``, scanning as rlvrlab's schedule "probe" scans
  (rlvrlab.lm.probe.schedule_scan), then TRL's constant rate at the recommended rate, clamped to
  [lr_min, lr_max] (``config.lr`` where the scan found none). TRL cannot scan again mid-run
  (probe_trl runs before ``train()`` only), so probe_every must be 0; and TRL starts at the aim,
  where rlvrlab's schedule moves toward it from ``config.lr`` by at most 2× a step.
The probe's result goes in the first row (``probe/*``).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import warnings
from pathlib import Path

import torch

from rlvrlab import _checks
from rlvrlab.io import atomic_write_json, read_json, read_table, rows_table, table_rows, write_table
from rlvrlab.lm.config import TrainConfig

__all__ = ["train_matched"]


def _accuracy(model, tokenizer, problems, verify, config: TrainConfig, step: int) -> float:
    """Held-out accuracy as rlvrlab's trainer measures it: eval_samples completions per problem,
    from its held-out generator (rlvrlab.lm.trainer.heldout_generator)."""
    from rlvrlab.lm.sampling import completion_texts, sample
    from rlvrlab.lm.trainer import heldout_generator

    prompts = [tokenizer(p.prompt)["input_ids"] for p in problems]
    gen = heldout_generator(config.seed, step, model.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            roll = sample(model, prompts, G=config.eval_samples, max_new_tokens=config.max_new_tokens,
                          eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, generator=gen,
                          temperature=config.temperature)
    finally:
        model.train(was_training)
    texts = completion_texts(tokenizer, roll)
    G = config.eval_samples
    return sum(float(verify(t, problems[i // G])) for i, t in enumerate(texts)) / len(texts)


def train_matched(config: TrainConfig, out: str | Path) -> list[dict[str, float]]:
    """Train ``config`` with GapGRPOTrainer into ``out`` and return its rows (also written to
    out/metrics.parquet): step 0's held-out accuracy, then one row per step with TRL's logged
    metrics, the monitor's gap/* and, every eval_every steps, eval/accuracy. A finished run in
    ``out`` is read back, not retrained."""
    import datasets
    from transformers import PrinterCallback, TrainerCallback

    from rlvrlab.integrations.trl import GapConfig, GapGRPOTrainer, GapWarning, matched_config
    from rlvrlab.lm.tasks import load_task
    from rlvrlab.lm.trainer import load_model

    if config.preset != "grpo" or config.advantage or config.alpha is not None or config.epochs != 1:
        _checks.fail("preset", config.preset, "grpo with its own advantage, no alpha and epochs 1 (the update matched_config "
                     "reproduces in TRL)")
    if config.schedule not in ("constant", "gap-adaptive", "probe") or config.schedule == "probe" and config.probe_every:
        _checks.fail("schedule", config.schedule if config.schedule != "probe" else f"probe with probe_every {config.probe_every}",
                     "constant, gap-adaptive, or probe with probe_every 0 (TRL's probe runs before train() only)")
    out = Path(out)
    done = out / "metrics.parquet"
    settings = dataclasses.asdict(config)
    if done.exists() and (out / "config.json").exists():
        if read_json(out / "config.json").get("settings") == settings:
            return table_rows(read_table(done))
    if out.exists():  # an unfinished or other run: start over
        shutil.rmtree(out)
    out.mkdir(parents=True)

    task = load_task(config.task)
    problems = task.sample(config.prompts, seed=config.seed)
    n_eval = max(1, int(round(config.holdout * len(problems))))
    heldout = problems[:n_eval]
    seen = {p.prompt for p in heldout}
    train = {p.prompt: p for p in problems[n_eval:] if p.prompt not in seen}

    def correct(prompts, completions, **kwargs):
        return [float(task.verify(c, train[p])) for p, c in zip(prompts, completions)]

    model, tok = load_model(config.model)
    evals: dict[int, float] = {0: _accuracy(model, tok, heldout, task.verify, config, 0)}

    class Evaluate(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % config.eval_every == 0 or state.global_step == config.steps:
                evals[state.global_step] = _accuracy(model, tok, heldout, task.verify, config, state.global_step)

    args = matched_config(str(out / "trl"), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
                          num_generations=config.group, max_completion_length=config.max_new_tokens, learning_rate=config.lr,
                          temperature=config.temperature, max_grad_norm=config.max_grad_norm, seed=config.seed,
                          logging_steps=1, disable_dropout=True,
                          use_cpu=config.device == "cpu" or config.device == "auto" and not torch.cuda.is_available())
    gap = GapConfig() if config.schedule != "gap-adaptive" else GapConfig(
        gap_schedule="gap-adaptive", gap_fraction=config.adaptive_fraction, gap_smoothing=config.adaptive_smoothing,
        gap_growth=config.adaptive_growth, gap_ratchet=config.adaptive_ratchet, gap_lr_min=config.lr_min, gap_lr_max=config.lr_max)
    trainer = GapGRPOTrainer(model=model, args=args, reward_funcs=correct, processing_class=tok,
                             train_dataset=datasets.Dataset.from_dict({"prompt": list(train)}), gap=gap, callbacks=[Evaluate()])
    trainer.remove_callback(PrinterCallback)
    first = {"step": 0, "eval/accuracy": evals[0], "gap/M": 0.0}
    if config.schedule == "probe" or config.schedule == "gap-adaptive" and config.adaptive_start == "probe":
        from rlvrlab.integrations.trl_probe import probe_trl
        from rlvrlab.lm.probe import scan_columns, schedule_scan

        r = probe_trl(trainer, **schedule_scan(config))
        aim = r.recommended_rate if config.schedule == "probe" else trainer.gap_monitor.adaptive.prior(r.critical_rate)
        if not math.isnan(aim):
            start = aim if config.schedule == "probe" else min(config.lr, aim)
            trainer.args.learning_rate = min(max(start, config.lr_min), config.lr_max)
        first.update(scan_columns(r))
    diverged = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GapWarning)  # the rows carry what the monitor saw
        try:
            trainer.train()
        except RuntimeError:  # TRL does not stop on non-finite weights; sampling from them fails
            if all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise
            diverged = True
    logged: dict[int, dict[str, float]] = {}
    for entry in trainer.state.log_history:
        if "step" in entry and "train_runtime" not in entry:
            logged.setdefault(int(entry["step"]), {}).update({k: float(v) for k, v in entry.items()
                                                              if isinstance(v, (int, float)) and k not in ("epoch", "step")})
    rows = [first]
    for gap in trainer.gap_history:
        step = int(gap["step"])
        row = {**logged.get(step, {}), **gap, "step": step}
        if step in evals:
            row["eval/accuracy"] = evals[step]
        rows.append(row)
    if diverged:  # the step after the last measured one left non-finite weights
        rows.append({"step": rows[-1]["step"] + 1, "diverged": 1.0})
    shutil.rmtree(out / "trl", ignore_errors=True)
    atomic_write_json(out / "config.json", {"settings": settings, "trainer": "trl"})
    write_table(done, rows_table(rows))
    return rows
