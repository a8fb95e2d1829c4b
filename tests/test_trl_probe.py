"""rlvrlab.integrations.trl_probe (probe_trl) with the real TRL (1.16) on the tiny model, on CPU.

The probe must leave no trace (a run trained after it is bit-identical to one without it), its
steps must be TRL's own first steps (its U is a TRL run's displacement at lr_probe), its
displacement must have Adam's first-step scale whatever the rate, and on the very same batch it
must measure what rlvrlab's own probe measures."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import PrinterCallback  # noqa: E402
from trl import GRPOTrainer as TRLGRPOTrainer  # noqa: E402

from rlvrlab.integrations.trl import GapConfig, GapGRPOTrainer, matched_config, probe_trl  # noqa: E402
from rlvrlab.lm.sampling import Rollout  # noqa: E402
from rlvrlab.lm.trainer import TrainConfig, load_model  # noqa: E402

G = 4
PROMPTS = [f"{a}+{b}=" for a in range(10) for b in range(10)]
SCAN = dict(fresh=2, lr_low=1e-4, lr_high=1.0, points=4)  # a short scan: these tests are about the steps and the restore


def even_length(prompts, completions, **kwargs):
    """A 0/1 reward the untrained model meets about half the time."""
    return [float(len(c) % 2 == 0) for c in completions]


def short(prompts, completions, **kwargs):
    return [float(len(c) < 4) for c in completions]


def _trainer(model_dir, out, cls=GapGRPOTrainer, reward=even_length, optimizers=None, gap=None, **overrides):
    model, tok = load_model(str(model_dir))
    settings = dict(max_steps=3, per_device_train_batch_size=4 * G, num_generations=G, max_completion_length=10,
                    learning_rate=3e-3, logging_steps=1, seed=0, use_cpu=True)
    extra = {"optimizers": optimizers(model)} if optimizers else {}
    if cls is not TRLGRPOTrainer:
        extra["gap"] = gap
    trainer = cls(model=model, args=matched_config(str(out), **{**settings, **overrides}), reward_funcs=reward,
                  train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok, **extra)
    trainer.remove_callback(PrinterCallback)
    return trainer


def _theta(trainer) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector([p for p in trainer.model.parameters() if p.requires_grad]).detach().clone()


def _logged(trainer) -> list[dict]:
    """TRL's log history without the wall-clock entries."""
    clock = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second")
    return [{k: v for k, v in h.items() if k not in clock and not k.startswith("profiling/")} for h in trainer.state.log_history]


def _adam_with_lambda(model):
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))


@pytest.mark.parametrize("case", ["gap", "plain-trl", "accumulation-iterations-alpha", "own-optimizer", "bf16-checkpointing"])
def test_a_run_trained_after_the_probe_is_bit_identical_to_one_without_it(tiny_base_model, tmp_path, case):
    kw = {"gap": {}, "plain-trl": dict(cls=TRLGRPOTrainer, loss_type="dapo"),
          "accumulation-iterations-alpha": dict(gradient_accumulation_steps=2, num_iterations=2, gap=GapConfig(gap_alpha=0.2)),
          "own-optimizer": dict(optimizers=_adam_with_lambda),
          "bf16-checkpointing": dict(bf16=True, activation_checkpointing=True)}[case]
    plain = _trainer(tiny_base_model, tmp_path / "plain", **kw)
    plain.train()

    probed = _trainer(tiny_base_model, tmp_path / "probed", **kw)
    attributes = dict(vars(probed))
    state = dict(vars(probed.state))
    rng = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    modes = [m.training for m in probed.model.modules()]
    theta0 = _theta(probed)
    gradient_state = probed.accelerator.gradient_state  # accelerate's: one state shared by every Accelerator
    active, references = gradient_state.active_dataloader, list(gradient_state.dataloader_references)
    r = probe_trl(probed, steps=2, **SCAN)
    assert r.steps == 2 and r.displacement > 0 and len(r.J) >= 2
    # put back: every attribute names the object it named, the state and random streams are as they were
    assert vars(probed).keys() == attributes.keys()
    assert all(vars(probed)[k] is v for k, v in attributes.items())
    assert vars(probed.state) == state and probed.state.num_input_tokens_seen == 0
    assert probed._step == 0 and probed._buffered_inputs is None and probed.optimizer is (attributes["optimizer"])
    assert not any(probed._metrics["train"].values()) and not probed._logs["prompt"]
    assert random.getstate() == rng[0] and np.array_equal(np.random.get_state()[1], rng[1])
    assert torch.equal(torch.get_rng_state(), rng[2])
    assert [m.training for m in probed.model.modules()] == modes
    assert torch.equal(_theta(probed), theta0)
    assert len(probed.accelerator._dataloaders) == 0  # the probe's dataloader is not the run's
    assert gradient_state.active_dataloader is active and gradient_state.dataloader_references == references
    probed.train()

    for p, q in zip(plain.model.parameters(), probed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert _logged(probed) == _logged(plain)
    if case != "plain-trl":
        assert len(probed.gap_history) == 3
        for a, b in zip(plain.gap_history, probed.gap_history, strict=True):
            assert all(a[k] == b[k] or math.isnan(a[k]) and math.isnan(b[k]) for k in a)


def test_the_equality_above_is_sensitive_to_one_random_draw(tiny_base_model, tmp_path):
    """The control: one draw from torch's generator before train() changes the run (TRL samples from it)."""
    plain = _trainer(tiny_base_model, tmp_path / "plain")
    plain.train()
    drawn = _trainer(tiny_base_model, tmp_path / "drawn")
    torch.rand(1)
    drawn.train()
    assert not all(torch.equal(p, q) for p, q in zip(plain.model.parameters(), drawn.model.parameters()))


@pytest.mark.parametrize("precision", [{}, {"bf16": True}])
def test_the_probes_steps_are_trls_first_steps_at_lr_probe(tiny_base_model, tmp_path, precision):
    """U = (θ_steps − θ0)/lr_probe with θ_steps the weights of a TRL run at rate lr_probe after the same
    number of steps (its own batches, loss, clipping and optimizer; bf16 autocast too): the same float32
    vector, so the same norm."""
    r = probe_trl(_trainer(tiny_base_model, tmp_path / "probed", **precision), steps=2, lr_probe=1e-5, **SCAN)
    run = _trainer(tiny_base_model, tmp_path / "run", learning_rate=1e-5, max_steps=2, **precision)
    theta0 = _theta(run)
    run.train()
    assert r.displacement == float(((_theta(run) - theta0) / 1e-5).norm())
    assert r.completions_per_rate == 2 * 4 * 2  # 2 steps × 4 prompts × 2 fresh completions
    assert list(r.rates) == pytest.approx(list(np.geomspace(1e-4, 1.0, 4)[: len(r.rates)]))
    assert r.recommended_rate == r.critical_rate / 2 and 0 <= r.J0 <= 1


def test_adams_first_probe_step_is_linear_in_the_rate(tiny_base_model, tmp_path):
    """Adam's first step is lr·g/(|g| + ε) per coordinate: ‖U‖ is the same at any probe rate, and at most
    √d (every coordinate of this tied-embedding model gets a gradient, so close to it)."""
    d = sum(p.numel() for p in _trainer(tiny_base_model, tmp_path / "d").model.parameters())
    norms = [probe_trl(_trainer(tiny_base_model, tmp_path / f"lr{lr}"), steps=1, lr_probe=lr, **SCAN).displacement
             for lr in (1e-5, 3e-4)]
    # float32 rounds θ (~|θ|·6e-8) by 1e-2 per unit rate at 1e-5 per coordinate (test_probe's bound); the norms differ by far less
    assert norms[0] == pytest.approx(norms[1], rel=1e-4)
    assert 0.99 * math.sqrt(d) < norms[1] <= math.sqrt(d) * (1 + 1e-6)


class Recording(GapGRPOTrainer):
    """Keeps the first generation batch (the probe's one step), as an rlvrlab Rollout with its 0/1 rewards."""

    first = None

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if type(self).first is None:
            rollout = Rollout(out["prompt_ids"].clone(), out["prompt_mask"].bool(), out["completion_ids"].clone(),
                              out["completion_mask"].bool(), group=G)
            type(self).first = (rollout, self._gap_success.float().view(-1, G).clone())
        return out


def test_on_the_same_batch_the_trl_probe_measures_rlvrlab_probes_displacement(tiny_base_model, tmp_path):
    """rlvrlab's probe (scan) on its own trainer, replaying the batch of the TRL probe's step (the same
    weights, grpo loss, clipping at 1, Adam, rate 1e-5): ‖U‖ agrees to 1e-4. The two losses agree to float
    error (test_trl checks the monitor's Δμη to 2e-3), and Adam's first step g/(|g| + ε) moves only the
    coordinates whose gradient is within a few ε of zero, so ‖U‖ ≈ √(number of the others) is far less
    sensitive than the gradient itself."""
    from rlvrlab.lm.probe import scan
    from rlvrlab.lm.trainer import GRPOTrainer

    r_trl = probe_trl(_trainer(tiny_base_model, tmp_path / "trl", cls=Recording), steps=1, **SCAN)
    batch = Recording.first
    assert batch is not None and 0 < float(batch[1].mean()) < 1

    class Replay(GRPOTrainer):
        def _rollout(self, problems, group, generator):
            if generator is not self.gen:  # the scan's fresh completions: sampled as usual
                return super()._rollout(problems, group, generator)
            return batch

    ours = Replay(TrainConfig(model=str(tiny_base_model), task="add", preset="grpo", batch_size=4 * G, group=G, lr=3e-3,
                              max_grad_norm=1.0, seed=0, device="cpu", max_new_tokens=10), tmp_path / "rlvrlab")
    r_ours = scan(ours, steps=1, **SCAN)
    assert r_ours.displacement == pytest.approx(r_trl.displacement, rel=1e-4)
    assert r_ours.displacement != pytest.approx(r_trl.displacement, rel=1e-9)  # two computations, not one number twice


def test_the_rate_set_after_the_probe_is_the_rate_train_uses(tiny_base_model, tmp_path):
    trainer = _trainer(tiny_base_model, tmp_path)
    r = probe_trl(trainer, steps=1, **SCAN)
    rate = r.recommended_rate if math.isfinite(r.recommended_rate) and r.recommended_rate > 0 else 2e-3
    trainer.args.learning_rate = rate
    trainer.train()
    assert [h["learning_rate"] for h in trainer.state.log_history if "reward" in h] == pytest.approx([rate] * 3)


def test_success_follows_the_monitors_convention(tiny_base_model, tmp_path):
    """A completion succeeds when the success reward is >= the threshold (GapConfig's by default): with
    threshold 2 a 0/1 reward never succeeds, and with two reward functions the named one decides."""
    never = probe_trl(_trainer(tiny_base_model, tmp_path / "a", gap=GapConfig(gap_success_threshold=2.0)), steps=1, **SCAN)
    assert never.J0 == 0 and set(never.J) == {0.0}
    two = _trainer(tiny_base_model, tmp_path / "b", cls=TRLGRPOTrainer, reward=[even_length, short])
    by_short = probe_trl(two, steps=1, success_reward="short", **SCAN)
    by_even = probe_trl(two, steps=1, success_reward="even_length", **SCAN)
    assert by_short.J0 != by_even.J0  # one draw of completions, two verdicts


@pytest.mark.parametrize("kw, message", [
    ({"steps": 11}, r"^steps: got 11; allowed: an integer from 1 to 10"),
    ({"steps": 0}, r"^steps: got 0; allowed: an integer from 1 to 10"),
    ({"fresh": 1}, r"^fresh: got 1; allowed: an integer >= 2"),
    ({"lr_low": 1e-2, "lr_high": 1e-3}, r"^lr_high: got 0.001; allowed: a rate above lr_low \(0.01\)"),
    ({"lr_probe": -1.0}, r"^lr_probe: got -1.0; allowed: a finite number > 0"),
    ({"success_reward": "nope"}, r"^success_reward: got 'nope'; allowed: even_length"),
    ({"success_threshold": math.inf}, r"^success_threshold: got inf; allowed: a finite number"),
])
def test_bad_settings_are_refused_before_any_work(tiny_base_model, tmp_path, kw, message):
    trainer = _trainer(tiny_base_model, tmp_path)
    theta0 = _theta(trainer)
    with pytest.raises(ValueError, match=message):
        probe_trl(trainer, **kw)
    assert torch.equal(_theta(trainer), theta0) and trainer.optimizer is None


def test_a_trained_or_non_grpo_trainer_or_an_unnamed_success_reward_is_refused(tiny_base_model, tmp_path):
    from transformers import Trainer, TrainingArguments

    model, _ = load_model(str(tiny_base_model))
    other = Trainer(model=model, args=TrainingArguments(str(tmp_path / "t"), use_cpu=True, report_to=[]))
    with pytest.raises(ValueError, match=r"^trainer: got 'Trainer'; allowed: a trl.GRPOTrainer or rlvrlab's GapGRPOTrainer"):
        probe_trl(other)
    trained = _trainer(tiny_base_model, tmp_path / "trained", max_steps=1)
    trained.train()
    with pytest.raises(ValueError, match=r"^trainer: got 'a trainer at step 1 \(micro-step 1\)'; allowed: a trainer before"):
        probe_trl(trained)
    two = _trainer(tiny_base_model, tmp_path / "two", cls=TRLGRPOTrainer, reward=[even_length, short])
    with pytest.raises(ValueError, match=r"^success_reward: got None; allowed: the name of the reward function that verifies "
                                         r"success, one of even_length, short"):
        probe_trl(two)
