"""rlvrlab.integrations.trl with the real TRL (1.16) on a tiny model, on CPU.

The monitor's numbers are checked against rlvrlab's own trainer replaying TRL's very batches, the
learning rate against a plain-loop recomputation of schedule × rule, the α reweighting against a
hand-written surrogate, and the logged values against TRL's own (its reward mean is gap/J)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import PrinterCallback, TrainerCallback  # noqa: E402

from rlvrlab.integrations import trl as gap_trl  # noqa: E402
from rlvrlab.integrations.trl import GapConfig, GapGRPOTrainer, GapWarning, check_trl, matched_config  # noqa: E402
from rlvrlab.io import read_table  # noqa: E402
from rlvrlab.lm.diagnostics import GapAdaptiveRate  # noqa: E402
from rlvrlab.lm.sampling import Rollout  # noqa: E402
from rlvrlab.lm.trainer import GRPOTrainer, TrainConfig, load_model  # noqa: E402

G = 4
PROMPTS = [f"{a}+{b}=" for a in range(10) for b in range(10)]


def even_length(prompts, completions, **kwargs):
    """A 0/1 reward the untrained model meets about half the time."""
    return [float(len(c) % 2 == 0) for c in completions]


def never(prompts, completions, **kwargs):
    return [0.0] * len(completions)


def _trainer(model_dir, out, cls=GapGRPOTrainer, reward=even_length, gap=None, optimizers=None, **overrides):
    model, tok = load_model(str(model_dir))
    settings = dict(max_steps=20, per_device_train_batch_size=4 * G, num_generations=G, max_completion_length=10,
                    learning_rate=3e-3, logging_steps=1, seed=0, use_cpu=True)
    args = matched_config(str(out), **{**settings, **overrides})
    trainer = cls(model=model, args=args, reward_funcs=reward, train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}),
                  processing_class=tok, gap=gap, **({"optimizers": optimizers(model)} if optimizers else {}))
    trainer.remove_callback(PrinterCallback)
    return trainer


class Recording(GapGRPOTrainer):
    """Keeps every generation batch, as rlvrlab Rollouts with their 0/1 rewards."""

    recorded: list

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.recorded = getattr(self, "recorded", [])
            rollout = Rollout(out["prompt_ids"].clone(), out["prompt_mask"].bool(), out["completion_ids"].clone(),
                              out["completion_mask"].bool(), group=G)
            self.recorded.append((rollout, self._gap_success.float().view(-1, G).clone()))
        return out


def _defined(row: dict, key: str) -> bool:
    """Whether the value of key is defined on this step (otherwise NaN by design)."""
    N = 4 * G  # completions per step
    both = 0 < row["gap/J"] < 1  # successes and failures
    spread = round(row["gap/J"] * N) >= 2 and round((1 - row["gap/J"]) * N) >= 2  # a variance on each side
    mixed = row["gap/mixed_prompts"] > 0
    if key in ("gap/delta_mu_eta", "gap/log_odds_change"):
        return both
    if key in ("gap/se_delta_mu_eta", "gap/se_log_odds_change", "gap/var_plus", "gap/var_minus"):
        return spread
    if key in ("gap/delta_mu_eta_prompt", "gap/log_odds_change_prompt", "gap/grpo_norm_proxy"):
        return mixed
    if key in ("gap/crit_ratio", "gap/eta_crit", "gap/lr_crit"):
        return spread and row["gap/delta_mu_eta"] > 0
    if key in ("gap/crit_ratio_prompt_mean", "gap/crit_ratio_prompt_max"):
        return False  # defined only on mixed prompts whose Δμ > 0: not asserted
    return True


@pytest.fixture(scope="module")
def monitored(tiny_base_model, tmp_path_factory):
    """20 steps of TRL with the monitor, TensorBoard logging every step, and every batch recorded."""
    out = tmp_path_factory.mktemp("trl")
    trainer = _trainer(tiny_base_model, out, cls=Recording, report_to=["tensorboard"])
    trainer.train()
    return trainer, out


def test_twenty_steps_log_every_gap_metric_through_trl(monitored):
    trainer, out = monitored
    rows = trainer.gap_history
    assert [r["step"] for r in rows] == list(range(1, 21))
    expected = {"gap/J", "gap/delta_mu_eta", "gap/se_delta_mu_eta", "gap/log_odds_change", "gap/se_log_odds_change",
                "gap/delta_mu_eta_prompt", "gap/log_odds_change_prompt", "gap/var_plus", "gap/var_minus", "gap/eta",
                "gap/crit_ratio", "gap/eta_crit", "gap/crit_ratio_prompt_mean", "gap/crit_ratio_prompt_max",
                "gap/prompts_past_crit", "gap/mixed_prompts", "gap/zero_variance_groups", "gap/grpo_norm_proxy", "gap/M",
                "gap/lr_crit"}
    assert sum(0 < r["gap/J"] < 1 for r in rows) >= 15  # the reward has variance: most steps define everything
    for r in rows:
        assert expected <= set(r)
        for k in expected:
            if _defined(r, k):
                assert math.isfinite(r[k]) or k in ("gap/eta_crit", "gap/lr_crit") and r["gap/crit_ratio"] <= 0, (r["step"], k)
        assert r["gap/eta"] > 0
    # cumulative alignment: the running sum of the positive Δμ·η
    M = 0.0
    for r in rows:
        M += max(r["gap/delta_mu_eta"], 0.0) if math.isfinite(r["gap/delta_mu_eta"]) else 0.0
        assert r["gap/M"] == pytest.approx(M)
    # TRL logged them beside its own metrics, step by step; its reward mean is the success rate
    logs = [h for h in trainer.state.log_history if "gap/J" in h]
    assert [h["step"] for h in logs] == list(range(1, 21))
    for h, r in zip(logs, rows):
        assert h["gap/J"] == pytest.approx(h["reward"])
        assert h["gap/J"] == pytest.approx(r["gap/J"])
        assert h["learning_rate"] == pytest.approx(r["learning_rate"])
        assert h["grad_norm"] == pytest.approx(r["grad_norm"])  # the norm the ‖g_GRPO‖ proxy uses
        for k in expected:
            assert (k in h) == math.isfinite(r[k]), (r["step"], k)  # undefined values stay out of TRL's averages
            if k in h:
                assert h[k] == pytest.approx(r[k])
    # ... and from there to TensorBoard through report_to
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = out.rglob("events.out.tfevents.*")  # transformers' default: output_dir/runs/<time>_<host>
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/gap/delta_mu_eta", "train/gap/log_odds_change", "train/gap/crit_ratio", "train/gap/M"} <= tags
    assert len(acc.Scalars("train/gap/M")) == 20
    table = read_table(out / "gap_metrics.parquet").to_pylist()
    assert [t["step"] for t in table] == list(range(1, 21))
    assert all(t["gap/M"] == pytest.approx(r["gap/M"]) for t, r in zip(table, rows))


def test_monitor_agrees_with_rlvrlab_trainer_on_the_same_batches(monitored, tiny_base_model, tmp_path):
    """rlvrlab's GRPOTrainer, from the same weights with the same loss and optimizer, replays TRL's
    20 batches: its per-step Δμ·η and realized log-odds change are the monitor's, to float error."""
    trainer, _ = monitored
    batches = list(trainer.recorded)
    assert len(batches) == 20
    for rollout, _ in batches:  # TRL repeats each prompt G times, consecutively: rlvrlab's layout
        assert torch.equal(rollout.prompt_ids.view(-1, G, rollout.prompt_ids.shape[1]).amin(1),
                           rollout.prompt_ids.view(-1, G, rollout.prompt_ids.shape[1]).amax(1))

    class Replay(GRPOTrainer):
        def _rollout(self, problems, group, generator):
            if generator is not self.gen:  # held-out evaluation: sample as usual
                return super()._rollout(problems, group, generator)
            assert group == G and len(problems) == 4
            return batches[self.step]

    ours = Replay(TrainConfig(model=str(tiny_base_model), task="add", preset="grpo", batch_size=4 * G, group=G, steps=20,
                              lr=3e-3, max_grad_norm=1.0, eval_every=20, eval_samples=1, checkpoint_every=20, seed=0,
                              device="cpu"), tmp_path)
    rows = [r for r in ours.train() if r["step"] > 0]
    for mine, theirs in zip(rows, trainer.gap_history, strict=True):
        assert mine["reward"] == theirs["gap/J"]
        for k in ("gap/delta_mu_eta", "gap/log_odds_change", "gap/eta"):
            if math.isfinite(theirs[k]):
                assert mine[k] == pytest.approx(theirs[k], rel=2e-3, abs=1e-6), (mine["step"], k)
            else:
                assert not math.isfinite(mine[k])


def third(prompts, completions, **kwargs):
    """A 0/1 reward the untrained model meets about a third of the time: some groups all wrong."""
    return [float(len(c) % 3 == 0) for c in completions]


def test_a_sampled_pass_measures_the_full_passs_values_within_its_standard_errors(tiny_base_model, tmp_path):
    """The same TRL run (the same seed: the monitor changes nothing the training does) measured with
    every group and with every mixed group and a quarter of the others (gap_unmixed 0.25)."""
    runs = {}
    for unmixed in (1.0, 0.25):
        trainer = _trainer(tiny_base_model, tmp_path / str(unmixed), reward=third, gap=GapConfig(gap_unmixed=unmixed),
                           per_device_train_batch_size=16 * G, max_steps=8)
        trainer.train()
        runs[unmixed] = trainer.gap_history
    left_out = 0
    for full, part in zip(runs[1.0], runs[0.25], strict=True):
        assert part["gap/J"] == full["gap/J"] and part["gap/eta"] == pytest.approx(full["gap/eta"], rel=1e-6)
        assert full["gap/measured_groups"] == 16 and part["gap/mixed_prompts"] <= part["gap/measured_groups"] <= 16
        left_out += 16 - part["gap/measured_groups"]
        for key in ("delta_mu_eta", "log_odds_change"):
            if not math.isfinite(full[f"gap/{key}"]):
                continue
            if part["gap/measured_groups"] == 16:  # nothing left out: the full pass's values
                assert part[f"gap/{key}"] == pytest.approx(full[f"gap/{key}"], rel=1e-4, abs=1e-7)
            else:
                assert abs(part[f"gap/{key}"] - full[f"gap/{key}"]) <= 3 * part[f"gap/se_{key}"]  # within its own standard errors
    assert left_out >= 4  # the sample did leave groups out


def _cosine(t: int, warmup: int, total: int) -> float:
    """transformers' cosine schedule with warm-up, written out."""
    if t < warmup:
        return t / warmup
    return 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def test_gap_adaptive_rate_rides_on_trls_schedule(tiny_base_model, tmp_path):
    """lr_t = learning_rate × λ(t) × s_t, with λ TRL's cosine schedule with warm-up and s the rule's
    scale: recomputed here in a plain loop from the logged ratios, and TRL logs the same rate."""
    gap = GapConfig(gap_schedule="gap-adaptive", gap_fraction=0.5, gap_smoothing=0.5)
    trainer = _trainer(tiny_base_model, tmp_path, gap=gap, lr_scheduler_type="cosine", warmup_steps=3, learning_rate=1e-2)
    trainer.train()
    rows = trainer.gap_history
    rule = GapAdaptiveRate(0.5, 0.5, 1.1, 1e-4, 1.0)
    scale = 1.0
    for t, r in enumerate(rows):
        assert r["learning_rate"] == pytest.approx(1e-2 * _cosine(t, 3, 20) * scale, rel=1e-9), t
        if r["learning_rate"] > 0:
            scale = rule(r["gap/crit_ratio"], 1e-2 * scale) / 1e-2
        assert r["gap/scale"] == pytest.approx(scale, rel=1e-9)
    assert rows[0]["learning_rate"] == 0 and rows[0]["gap/scale"] == 1.0  # warm-up's first step: no information, no change
    assert len({round(r["gap/scale"], 9) for r in rows}) > 3  # the rule did act
    logged = [h["learning_rate"] for h in trainer.state.log_history if "gap/J" in h]
    assert logged == pytest.approx([r["learning_rate"] for r in rows])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * _cosine(20, 3, 20) * scale, abs=1e-12)


def test_resume_continues_the_monitor_without_loss_or_duplication(tiny_base_model, tmp_path):
    gap = GapConfig(gap_schedule="gap-adaptive")
    full = _trainer(tiny_base_model, tmp_path / "full", gap=gap, max_steps=8, save_strategy="steps", save_steps=4)
    full.train()
    resumed = _trainer(tiny_base_model, tmp_path / "full", gap=gap, max_steps=8, save_strategy="steps", save_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-4"))
    a, b = full.gap_history, resumed.gap_history
    assert [r["step"] for r in b] == list(range(1, 9))
    for x, y in zip(b[:4], a[:4]):  # restored from the checkpoint, not recomputed
        assert x.keys() == y.keys() and all(x[k] == y[k] or math.isnan(x[k]) and math.isnan(y[k]) for k in x)
    M = b[3]["gap/M"]
    for r in b[4:]:
        M += max(r["gap/delta_mu_eta"], 0.0) if math.isfinite(r["gap/delta_mu_eta"]) else 0.0
        assert r["gap/M"] == pytest.approx(M)
    assert b[4]["learning_rate"] == pytest.approx(3e-3 * a[3]["gap/scale"])  # the rate carried over
    assert [t["step"] for t in read_table(tmp_path / "full" / "gap_metrics.parquet").to_pylist()] == list(range(1, 9))


def test_low_probability_reweighting_matches_the_surrogate_written_out(tiny_base_model, tmp_path):
    """With α, TRL's loss and gradient are those of -mean_b Σ_t w_bt Â_b log π_bt / |o_b| with
    w = 1 + α(1 − π_old), π_old the detached π (one step per batch, so the ratio is 1)."""
    alpha = 0.5
    trainer = _trainer(tiny_base_model, tmp_path, gap=GapConfig(gap_alpha=alpha))
    model, tok = trainer.model, trainer.processing_class
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # what transformers' training loop sets before a step
    torch.manual_seed(0)
    prompt_ids = torch.randint(3, len(tok), (6, 5))
    completion_ids = torch.randint(3, len(tok), (6, 7))
    completion_mask = torch.ones(6, 7, dtype=torch.long)
    completion_mask[0, 4:] = 0
    completion_mask[3, 2:] = 0
    adv = torch.tensor([1.0, -0.5, 0.3, -1.2, 0.8, 0.0])
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": adv.clone(), "num_items_in_batch": completion_mask.sum()}
    model.zero_grad()
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    ids = torch.cat([prompt_ids, completion_ids], 1)
    logp = torch.log_softmax(model(input_ids=ids).logits[:, 4:-1].float(), -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    w = 1 + alpha * (1 - logp.detach().exp())
    m = completion_mask.float()
    ref = -((w * adv[:, None] * torch.exp(logp - logp.detach()) * m).sum(-1) / m.sum(-1)).mean()
    ref.backward()
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    for g, p in zip(got, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


def test_warnings_come_once_each(tiny_base_model, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tiny_base_model, tmp_path / "flat", reward=never, max_steps=6).train()
    messages = [str(w.message) for w in caught if issubclass(w.category, GapWarning)]
    assert len(messages) == 1 and messages[0].startswith("more than half of the groups had no reward variance for 3")
    # lr 1.0 overshoots at once (the realized log-odds change of step 1 is about -8, then every
    # completion is empty and succeeds); with patience 1 that one step is enough
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(tiny_base_model, tmp_path / "steep", learning_rate=1.0, max_steps=4, gap=GapConfig(gap_patience=1))
        trainer.train()
    crit = [str(w.message) for w in caught if issubclass(w.category, GapWarning) and "overshot" in str(w.message)]
    over = [r["step"] for r in trainer.gap_history if r["gap/crit_ratio"] > 1 or r["gap/log_odds_change"] < 0]
    assert over and len(crit) == 1 and crit[0].startswith(f"the step overshot for 1 consecutive steps (steps {over[0]}-{over[0]};")


@pytest.mark.parametrize("kw, message", [
    (dict(gap_schedule="cosine"), r"^gap_schedule: got 'cosine'; allowed: gap-adaptive, trl"),
    (dict(gap_schedule="gap-adaptive", gap_diagnostics=False), r"^gap_diagnostics: got False; allowed: True with"),
    (dict(gap_alpha=-0.1), r"^gap_alpha: got -0.1; allowed: a number >= 0"),
    (dict(gap_every=0), r"^gap_every: got 0"),
    (dict(gap_fraction=1.5), r"^gap_fraction: got 1.5; allowed: a number in \(0, 1\]"),
    (dict(gap_lr_max=0.0), r"^gap_lr_max: got 0.0"),
    (dict(gap_unmixed=0.0), r"^gap_unmixed: got 0.0; allowed: a number in \(0, 1\] \(1: every group\)"),
])
def test_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        GapConfig(**kw)


def test_bad_combinations_name_the_fix(tiny_base_model, tmp_path):
    with pytest.raises(ValueError, match=r"^gap_success_reward: got ''; allowed: the name of the reward function that "
                                         r"verifies success, one of even_length, never"):
        _trainer(tiny_base_model, tmp_path, reward=[even_length, never])
    with pytest.raises(ValueError, match=r"^gap_success_reward: got 'correct'; allowed: even_length, never"):
        _trainer(tiny_base_model, tmp_path, reward=[even_length, never], gap=GapConfig(gap_success_reward="correct"))
    with pytest.raises(ValueError, match=r"^steps_per_generation: got 2; allowed: gradient_accumulation_steps = 1"):
        _trainer(tiny_base_model, tmp_path, steps_per_generation=2)
    with pytest.raises(ValueError, match=r"^gap: got 'dict'; allowed: a GapConfig"):
        _trainer(tiny_base_model, tmp_path, gap={"gap_alpha": 0.1})

    def step_lr(model):  # a user's own optimizer and a scheduler that is not a LambdaLR
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=5)

    trainer = _trainer(tiny_base_model, tmp_path, gap=GapConfig(gap_schedule="gap-adaptive"), optimizers=step_lr, max_steps=2)
    with pytest.raises(ValueError, match=r"^lr_scheduler_type: got 'constant'; allowed: a schedule of the LambdaLR kind .* "
                                         r"got a StepLR"):
        trainer.train()


def test_a_trl_without_the_hooks_is_refused(monkeypatch):
    check_trl()  # the installed TRL has them

    class Older(gap_trl.GRPOTrainer):
        _get_per_token_logps_and_entropies = None

    monkeypatch.setattr(gap_trl, "GRPOTrainer", Older)
    with pytest.raises(ImportError, match=r"lacks GRPOTrainer._get_per_token_logps_and_entropies\(model, input_ids"):
        check_trl()


# --- examples/trl_gsm8k.py ----------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trl_gsm8k.py"


def _gsm8k_file(path: Path) -> Path:
    pairs = random.Random(0).sample([(a, b) for a in range(1, 21) for b in range(1, 21)], 40)  # 40 distinct questions
    lines = []
    for a, b in pairs:
        lines.append(json.dumps({"question": f"{a}+{b}=", "answer": f"{a}+{b}={a + b}\n#### {a + b}"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _example_args(model_dir, data, out, steps):
    return ["--model_name_or_path", str(model_dir), "--data", str(data), "--output_dir", str(out), "--use_cpu", "true",
            "--bf16", "false", "--max_steps", str(steps), "--per_device_train_batch_size", "8", "--num_generations", "4",
            "--max_completion_length", "8", "--learning_rate", "1e-3", "--logging_steps", "1", "--report_to", "none",
            "--save_strategy", "steps", "--save_steps", str(steps), "--instruction", "", "--gap_alpha", "0.1"]


def test_example_trains_and_writes_the_gap_metrics(tiny_base_model, tmp_path):
    spec = importlib.util.spec_from_file_location("trl_gsm8k", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example  # dataclasses look their module up there
    spec.loader.exec_module(example)
    data = _gsm8k_file(tmp_path / "train.jsonl")
    trainer = example.main(_example_args(tiny_base_model, data, tmp_path / "run", 3) + ["--eval_fraction", "0.25"])
    assert len(trainer.train_dataset) == 30 and len(trainer.eval_dataset) == 10
    assert trainer.train_dataset[0]["prompt"].endswith("=\n") and trainer.gap.gap_alpha == 0.1
    assert [r["step"] for r in read_table(tmp_path / "run" / "gap_metrics.parquet").to_pylist()] == [1, 2, 3]
    assert (tmp_path / "run" / "model.safetensors").exists()
    with pytest.raises(SystemExit, match=r"eval_fraction: got 1.5; allowed: a fraction in \[0, 1\)"):
        example.main(_example_args(tiny_base_model, data, tmp_path / "bad", 1) + ["--eval_fraction", "1.5"])


@pytest.mark.parametrize("G, unmixed", [(4, 1.0), (2, 0.3)], ids=["full-pass", "sampled-pass"])
def test_example_with_two_processes(tiny_base_model, tmp_path, G, unmixed):
    """Two CPU processes (torchrun, gloo; accelerate inside TRL reads their ranks): each generates
    and trains on half of every group set, and the monitor gathers both halves: its success rate is
    TRL's reward over the whole batch, and it sees all of the step's groups (2 processes × 8
    completions / G). With gap_unmixed < 1 both processes draw the same groups from the gathered
    successes and measure their own rows of them. (`accelerate launch --cpu --num_processes 2`,
    which this test used before, starts a single process: accelerate's CPU path is its simple
    launcher, so the test saw 2 groups, not 4, and passed only because every group was all wrong.)"""
    data = _gsm8k_file(tmp_path / "train.jsonl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(EXAMPLE.parents[1] / "src")}
    args = _example_args(tiny_base_model, data, tmp_path / "run", 4)
    args[args.index("--num_generations") + 1] = str(G)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(EXAMPLE), *args,
                           "--gap_unmixed", str(unmixed)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done: 4 steps" in done.stdout
    rows = read_table(tmp_path / "run" / "gap_metrics.parquet").to_pylist()
    logs = [h for h in json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
            if "reward" in h]
    assert [r["step"] for r in rows] == [h["step"] for h in logs] == [1, 2, 3, 4]
    groups = 2 * 8 // G
    for r, h in zip(rows, logs):
        assert r["gap/J"] == pytest.approx(h["reward"])
        assert r["gap/mixed_prompts"] + groups * r["gap/zero_variance_groups"] == pytest.approx(groups)
        if unmixed == 1:
            assert r["gap/measured_groups"] == groups
        elif r["gap/J"] == 0:  # every group all wrong: 3 of the 8 (max(2, ⌈0.3 · 8⌉)) are measured
            assert r["gap/measured_groups"] == 3
        else:
            assert r["gap/mixed_prompts"] <= r["gap/measured_groups"] <= groups


def test_adaptive_vs_fixed_example_runs(tiny_base_model, tmp_path):
    spec = importlib.util.spec_from_file_location("trl_adaptive_vs_fixed", EXAMPLE.with_name("trl_adaptive_vs_fixed.py"))
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example
    spec.loader.exec_module(example)
    results = example.main(["--model", str(tiny_base_model), "--steps", "3", "--out", str(tmp_path)])
    assert list(results) == ["fixed 0.001", "gap-adaptive from 0.001", "fixed 0.0003"]
    for r in results.values():
        assert 0 <= r["success_last10"] <= 1 and list(r["lr"]) == [3]
    assert results["fixed 0.001"]["lr"][3] == 1e-3 and results["fixed 0.0003"]["lr"][3] == 3e-4


# --- one function for both passes of ΔL: dropout, PEFT, repeated passes -----------------------------


@pytest.fixture(scope="module")
def gpt2_with_dropout(tiny_base_model, tmp_path_factory):
    """A tiny GPT-2 with GPT-2's dropout (p = 0.1), on the tiny model's tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("gpt2")
    tok = AutoTokenizer.from_pretrained(tiny_base_model)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.1, embd_pdrop=0.1,
                     attn_pdrop=0.1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # completions of several lengths: the even-length reward gives mixed groups
        model.transformer.wte.weight[tok.eos_token_id] *= 3.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_a_model_with_dropout_is_refused_unless_trl_disables_it(gpt2_with_dropout, tmp_path):
    with pytest.raises(ValueError, match=r"^disable_dropout: got False; allowed: True \(GRPOConfig\(disable_dropout=True\)\) "
                                         r"for a model with 7 dropout modules"):
        _trainer(gpt2_with_dropout, tmp_path, max_steps=1)
    # with TRL's disable_dropout, a step of rate 1e-12 moves no log-probability measurably
    trainer = _trainer(gpt2_with_dropout, tmp_path, max_steps=2, learning_rate=1e-12, disable_dropout=True)
    trainer.train()
    rows = [r for r in trainer.gap_history if r["gap/mixed_prompts"] > 0]
    assert rows
    for r in rows:
        assert abs(r["gap/delta_mu_eta"]) < 1e-6 and abs(r["gap/log_odds_change"]) < 1e-6
        assert 0 < r["gap/eta"] < 1e-9


class Reading(GapGRPOTrainer):
    """Keeps the advantages TRL's loss read on each pass (after the training forward, where α is applied)."""

    read: list

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        self.read = getattr(self, "read", [])
        self.read.append((inputs["advantages"].detach().clone(), inputs["rlvrlab_advantages"].clone(),
                          inputs["old_per_token_logps"].clone(), inputs["completion_mask"].clone()))
        return loss


def test_alpha_weights_each_generation_batch_once_over_repeated_passes(tiny_base_model, tmp_path):
    alpha = 0.5
    trainer = _trainer(tiny_base_model, tmp_path, cls=Reading, gap=GapConfig(gap_alpha=alpha), num_iterations=2, max_steps=4)
    trainer.train()
    assert len(trainer.read) == 4  # two generation batches, two passes each
    for first, second in (trainer.read[0:2], trainer.read[2:4]):
        torch.testing.assert_close(second[0], first[0], rtol=0, atol=0)  # not weighted twice (w² on the second pass)
        adv, old, mask = first[1], first[2], first[3].bool()
        assert adv.dim() == 1 and bool((adv != 0).any())
        w = torch.where(mask, 1 + alpha * (1 - old.exp()), torch.ones_like(old))  # written out: [1 + α(1 − π_old)]·Â
        torch.testing.assert_close(first[0], w * adv[:, None], rtol=1e-6, atol=1e-7)
    assert not torch.equal(trainer.read[0][0], trainer.read[2][0])  # a new batch, new weights


class _StepNorms(TrainerCallback):
    """‖θ_new − θ_old‖ of each optimizer step over the trainable parameters, measured on its own."""

    def __init__(self):
        self.moved = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        d = sum(float((p.detach() - self.before[n]).double().pow(2).sum()) for n, p in model.named_parameters() if p.requires_grad)
        self.moved.append(math.sqrt(d))


def _lora_trainer(model_dir, out, *, lora_dropout=0.0, callbacks=(), **overrides):
    from peft import LoraConfig

    model, tok = load_model(str(model_dir))
    settings = dict(max_steps=4, per_device_train_batch_size=4 * G, num_generations=G, max_completion_length=10, learning_rate=3e-2,
                    logging_steps=1, seed=0, use_cpu=True)
    trainer = GapGRPOTrainer(model=model, args=matched_config(str(out), **{**settings, **overrides}), reward_funcs=even_length,
                             processing_class=tok, train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}),
                             callbacks=list(callbacks), peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                                                lora_dropout=lora_dropout))
    trainer.remove_callback(PrinterCallback)
    return trainer


def test_the_monitor_measures_a_lora_adapter(tiny_base_model, tmp_path):
    norms = _StepNorms()
    trainer = _lora_trainer(tiny_base_model, tmp_path, callbacks=[norms])
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trainer.train()
    rows = trainer.gap_history
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["gap/eta"] for r in rows] == pytest.approx(norms.moved, rel=1e-9)  # η: the adapter's step
    assert all(torch.equal(p, frozen[n]) for n, p in trainer.model.named_parameters() if n in frozen)
    assert sum(math.isfinite(r["gap/delta_mu_eta"]) and r["gap/delta_mu_eta"] != 0 for r in rows) >= 3  # the step is seen


def test_lora_dropout_is_refused_and_a_vanishing_lora_step_measures_nothing(tiny_base_model, tmp_path):
    with pytest.raises(ValueError, match=r"^disable_dropout: got False; .* for a model with 2 dropout modules"):
        _lora_trainer(tiny_base_model, tmp_path, lora_dropout=0.1)
    trainer = _lora_trainer(tiny_base_model, tmp_path, lora_dropout=0.1, disable_dropout=True, learning_rate=1e-12, max_steps=2)
    trainer.train()
    rows = [r for r in trainer.gap_history if r["gap/mixed_prompts"] > 0]
    assert rows and all(abs(r["gap/delta_mu_eta"]) < 1e-6 and abs(r["gap/log_odds_change"]) < 1e-6 for r in rows)


@pytest.mark.parametrize("setting", [dict(bf16=True), dict(activation_checkpointing=True)])
def test_a_vanishing_step_measures_nothing_under_autocast_and_checkpointing(tiny_base_model, tmp_path, setting):
    """Both passes of ΔL see one function: the post-step pass under the training forward's bf16
    autocast (a float32 pass beside a bf16 one would differ by ~1e-2), checkpointing off (no value changes)."""
    trainer = _trainer(tiny_base_model, tmp_path, max_steps=2, learning_rate=1e-12, **setting)
    trainer.train()
    rows = [r for r in trainer.gap_history if r["gap/mixed_prompts"] > 0]
    assert rows and all(abs(r["gap/delta_mu_eta"]) < 1e-6 and abs(r["gap/log_odds_change"]) < 1e-6 for r in rows)
