"""The language-model trainer: sampling, diagnostics worked by hand, exact resumption, bad input.

A tiny random Qwen2 (one layer, hidden 32) stands in for a base model; its completions are noise,
so the tests that need reward variance use a reward of their own (even completion length).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rlvrlab.cli import app
from rlvrlab.io import read_table
from rlvrlab.lm.diagnostics import prompt_diagnostics, step_diagnostics
from rlvrlab.lm.sampling import sample, token_logprobs
from rlvrlab.lm.tasks import make_task
from rlvrlab.lm.tokenizer import char_tokenizer
from rlvrlab.lm.trainer import GRPOTrainer, RewardError, TrainConfig, gap_warnings, load_model


def _even_length(text, problem):
    return float(len(text) % 2 == 0)


def _config(model, **kw):
    base = dict(model=str(model), task="add", prompts=40, batch_size=8, group=4, max_new_tokens=6, steps=4, lr=1e-2,
                eval_every=2, eval_samples=2, checkpoint_every=2, seed=3)
    return TrainConfig(**{**base, **kw})


# --- sampling ---------------------------------------------------------------------------------


def test_left_padded_log_probs_equal_unpadded_ones(tiny_model):
    model, tok = load_model(tiny_model)
    model.eval()
    prompts = [tok(p)["input_ids"] for p in ("1+2=", "345+67=", "9=")]
    roll = sample(model, prompts, G=2, max_new_tokens=5, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                  generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched, _ = token_logprobs(model, roll)
        for i in range(len(prompts) * 2):
            p = prompts[i // 2]
            c = roll.completion_ids[i][roll.completion_mask[i]].tolist()
            logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) - 1 + len(c)]
            alone = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(c)[:, None]).squeeze(-1)
            torch.testing.assert_close(batched[i, : len(c)], alone, atol=1e-5, rtol=1e-5)
            assert (batched[i, len(c):] == 0).all()


def test_sampling_is_a_function_of_the_generator_state(tiny_model):
    model, tok = load_model(tiny_model)
    prompts = [tok("12+3=")["input_ids"]]
    kw = dict(G=6, max_new_tokens=8, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    a = sample(model, prompts, generator=torch.Generator().manual_seed(5), **kw)
    b = sample(model, prompts, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a.completion_ids, b.completion_ids)
    # the mask covers every token up to and including the first EOS, nothing after it
    for ids, mask in zip(a.completion_ids, a.completion_mask):
        eos = (ids == tok.eos_token_id).nonzero()
        n = int(eos[0]) + 1 if len(eos) else len(ids)
        assert mask.tolist() == [True] * n + [False] * (len(ids) - n)


# --- diagnostics, worked by hand ----------------------------------------------------------------


def test_step_diagnostics_worked_example():
    # one prompt, 2 correct samples with ΔL = 0.3, 0.1 and 2 incorrect with ΔL = -0.2, 0.0, step norm 0.5
    d = torch.tensor([[0.3, 0.1, -0.2, 0.0]])
    r = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    out = step_diagnostics(d, r, eta=0.5, grad_norm=2.0, mean_length=10.0)
    assert out["gap/delta_mu_eta"] == pytest.approx(0.2 - (-0.1))
    lo = math.log((math.exp(0.3) + math.exp(0.1)) / 2) - math.log((math.exp(-0.2) + 1) / 2)
    assert out["gap/log_odds_change"] == pytest.approx(lo)
    var_p, var_m = 0.02, 0.02  # sample variances (n - 1): ((0.1)² + (0.1)²) / 1
    assert out["gap/var_plus"] == pytest.approx(var_p / 0.25)
    assert out["gap/var_minus"] == pytest.approx(var_m / 0.25)
    assert out["gap/crit_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert out["gap/grpo_norm_proxy"] == pytest.approx(2.0 * 10.0 / 0.5)
    assert out["gap/mixed_prompts"] == 1 and out["gap/zero_variance_groups"] == 0


def test_prompt_diagnostics_worked_example():
    # prompt 0 as in the worked example above; prompt 1: ΔL = 0.4, 0.2 correct, -0.3 incorrect (one sample: no var-);
    # prompt 2: all wrong (not mixed)
    d = torch.tensor([[0.3, 0.1, -0.2, 0.0], [0.4, 0.2, -0.3, 0.5], [0.1, 0.1, 0.1, 0.1]])
    r = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    per = prompt_diagnostics(d, r, eta=0.5)
    assert per["J"].tolist() == [0.5, 0.75, 0.0]
    assert per["mixed"].tolist() == [True, True, False]
    assert per["delta_mu_eta"][:2].tolist() == pytest.approx([0.3, (0.4 + 0.2 + 0.5) / 3 + 0.3])
    assert math.isnan(per["delta_mu_eta"][2]) and math.isnan(per["crit_ratio"][2])
    assert per["var_plus"][:2].tolist() == pytest.approx([0.02 / 0.25, 0.07 / 3 / 0.25])  # sample variances (n - 1)
    lo = math.log((math.exp(0.4) + math.exp(0.2) + math.exp(0.5)) / 3) - (-0.3)
    assert float(per["log_odds_change"][1]) == pytest.approx(lo)
    assert math.isnan(per["var_minus"][1])  # one incorrect sample has no variance
    assert float(per["crit_ratio"][0]) == pytest.approx(0.0, abs=1e-6)  # Var- = Var+: no second-order threshold
    out = step_diagnostics(d, r, eta=0.5)
    assert out["gap/delta_mu_eta_prompt"] == pytest.approx(float(per["delta_mu_eta"][:2].mean()))


def test_crit_ratio_is_one_where_second_order_gain_vanishes():
    # pooled first order 0.1; Var- - Var+ = 0.2 gives ratio (0.2) / (2 · 0.1) = 1
    d = torch.tensor([[0.1, 0.1, 0.0, 0.0]])
    r = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    base = step_diagnostics(d, r, eta=1.0)
    assert base["gap/crit_ratio"] == pytest.approx(0.0)
    spread = math.sqrt(0.1)  # two samples ±s around 0 have sample variance 2 s² = 0.2
    d2 = torch.tensor([[0.1, 0.1, spread, -spread]])
    out = step_diagnostics(d2, r, eta=1.0)
    assert out["gap/delta_mu_eta"] == pytest.approx(0.1)
    assert out["gap/crit_ratio"] == pytest.approx(1.0)
    assert out["gap/eta_crit"] == pytest.approx(1.0)


def test_groups_without_reward_variance_are_counted_and_skipped():
    d = torch.tensor([[0.1, 0.2], [0.3, -0.1], [0.0, 0.0]])
    r = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    out = step_diagnostics(d, r, eta=1.0)
    assert out["gap/zero_variance_groups"] == pytest.approx(2 / 3)
    assert out["gap/mixed_prompts"] == 1
    assert out["gap/delta_mu_eta_prompt"] == pytest.approx(0.4)  # only the mixed prompt


# --- training, checkpoints, exact resumption ---------------------------------------------------------


def test_the_curves_every_monitor_reads_under_trl_names_with_the_kl_to_the_initial_model(tiny_model, tmp_path):
    rewards = []
    def reward(text, problem):  # keeps what the trainer saw, to recompute its curves by hand
        rewards.append(_even_length(text, problem))
        return rewards[-1]
    tr = GRPOTrainer(_config(tiny_model, kl_reference=True, steps=3, eval_every=100), tmp_path, reward_fn=reward)
    moved = False
    for step in range(3):
        rewards.clear()
        row = tr.train_step()
        tr.step += 1
        r = torch.tensor(rewards).view(-1, 4)
        assert row["reward"] == pytest.approx(float(r.mean())) and row["reward_std"] == pytest.approx(float(r.std()))
        assert row["frac_reward_zero_std"] == float((r == r[:, :1]).all(-1).float().mean()) == row["gap/zero_variance_groups"]
        assert row["completions/min_length"] <= row["completions/mean_length"] <= row["completions/max_length"] <= 6
        assert row["clip_ratio/region_mean"] == row["clip_ratio/low_mean"] == row["clip_ratio/high_mean"] == 0  # one epoch: ratio 1
        assert row["learning_rate"] == 1e-2 and row["entropy"] > 0
        assert (row["grad_norm"] > 0) == (row["frac_reward_zero_std"] < 1)  # a gradient from the groups with variance only
        if step == 0:  # the policy is the initial model: k3 = 0 on every token
            assert row["kl"] == pytest.approx(0.0, abs=1e-6)
        elif moved:  # k3 = e^x - x - 1 > 0 wherever a step moved a log-prob
            assert row["kl"] > 1e-6
        moved = moved or row["grad_norm"] > 0
    assert not any(p.requires_grad for p in tr.reference.parameters())
    assert "kl" not in GRPOTrainer(_config(tiny_model, steps=1), tmp_path / "b", reward_fn=_even_length).train_step()


def test_a_step_records_every_diagnostic_and_moves_the_weights(tiny_model, tmp_path):
    tr = GRPOTrainer(_config(tiny_model), tmp_path, reward_fn=_even_length)
    before = [p.detach().clone() for p in tr.params]
    row = tr.train_step()
    moved = sum(float((p.detach() - b).norm() ** 2) for p, b in zip(tr.params, before)) ** 0.5
    assert row["gap/eta"] == pytest.approx(moved, rel=1e-5)
    for key in ("gap/delta_mu_eta", "gap/log_odds_change", "gap/var_plus", "gap/var_minus", "gap/crit_ratio", "gap/eta_crit",
                "gap/lr_crit", "gap/grpo_norm_proxy", "gap/zero_variance_groups", "entropy", "completions/mean_length",
                "clip_ratio/region_mean", "grad_norm", "reward_std", "frac_reward_zero_std", "advantage_std", "completions/clipped_ratio", "gap/M"):
        assert key in row
    if row["gap/mixed_prompts"] > 0:
        assert math.isfinite(row["gap/delta_mu_eta"]) and math.isfinite(row["gap/log_odds_change"])


def _third(text, problem):
    return float(len(text) % 3 == 0)


def test_a_sampled_pass_measures_the_same_step_within_its_standard_errors(tiny_model, tmp_path):
    """The same run measured with every group and with a stratified sample of them (the step and the
    batches are the same: the pass changes nothing the training does)."""
    rows = {}
    for unmixed in (1.0, 0.2):
        tr = GRPOTrainer(_config(tiny_model, batch_size=96, group=4, diagnostics_unmixed=unmixed), tmp_path / str(unmixed),
                         reward_fn=_third)
        rows[unmixed] = []
        for _ in range(4):
            rows[unmixed].append(tr.train_step())
            tr.step += 1
    left_out = 0
    for full, part in zip(rows[1.0], rows[0.2], strict=True):
        assert part["gap/J"] == full["gap/J"] and part["gap/eta"] == full["gap/eta"]
        assert full["gap/measured_groups"] == 24 and part["gap/mixed_prompts"] <= part["gap/measured_groups"] <= 24
        left_out += 24 - part["gap/measured_groups"]
        for key in ("delta_mu_eta", "log_odds_change"):
            assert math.isfinite(full[f"gap/{key}"])  # both outcomes in every batch at this reward
            assert abs(part[f"gap/{key}"] - full[f"gap/{key}"]) <= 3 * part[f"gap/se_{key}"]  # within its own standard errors
    assert left_out >= 4


def test_fresh_samples_measure_the_same_step_on_responses_it_was_not_trained_on(tiny_model, tmp_path):
    tr = GRPOTrainer(_config(tiny_model, fresh_samples=6), tmp_path, reward_fn=_even_length)
    row = tr.train_step()
    assert row["gap_fresh/eta"] == row["gap/eta"]  # the same step ...
    B = tr.config.prompts_per_step  # ... measured on 6 other completions per prompt, not the group of 4 trained on
    assert row["gap_fresh/J"] * B * 6 == pytest.approx(round(row["gap_fresh/J"] * B * 6), abs=1e-9)
    assert row["gap_fresh/mixed_prompts"] + row["gap_fresh/zero_variance_groups"] * B == pytest.approx(B)
    for key in ("delta_mu_eta", "log_odds_change", "crit_ratio", "var_plus", "var_minus", "zero_variance_groups"):
        assert "gap_fresh/" + key in row
    d = row["gap_fresh/delta_mu_eta"]
    assert row["gap_fresh/M"] == (max(d, 0.0) if math.isfinite(d) else 0.0)


@pytest.mark.parametrize("schedule, fresh", [("cosine", 0), ("gap-adaptive", 2)])
def test_resume_after_an_interruption_ends_with_the_uninterrupted_weights(tiny_model, tmp_path, schedule, fresh):
    cfg = _config(tiny_model, steps=5, schedule=schedule, fresh_samples=fresh, prompt_table=bool(fresh))
    whole = GRPOTrainer(cfg, tmp_path / "whole", reward_fn=_even_length)
    rows_whole = whole.train()

    class Killed(Exception):
        pass

    def kill_at_3(n, seen=[0]):
        seen[0] += n
        if seen[0] == 3:  # after step 3: the last checkpoint is step 2
            raise Killed

    with pytest.raises(Killed):
        GRPOTrainer(cfg, tmp_path / "cut", reward_fn=_even_length, on_step=kill_at_3).train()
    resumed = GRPOTrainer(cfg, tmp_path / "cut", reward_fn=_even_length)
    rows_cut = resumed.train()
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["step"] for r in rows_cut] == list(range(6))  # no step lost or duplicated
    assert json.dumps(rows_cut) == json.dumps(rows_whole)
    if cfg.prompt_table:  # the per-prompt rows too: one per (step, prefix, prompt), none lost or repeated
        cut, full = (read_table(tmp_path / d / "prompts.parquet").to_pylist() for d in ("cut", "whole"))
        assert json.dumps(cut) == json.dumps(full)
        B = cfg.prompts_per_step
        assert [(r["step"], r["prefix"]) for r in cut] == [(k, p) for k in range(1, 6) for p in ("gap/", "gap_fresh/")
                                                           for _ in range(B)]
        for row in rows_cut[1:]:  # the step's per-prompt means are the metrics' own
            for prefix in ("gap/", "gap_fresh/"):
                mine = [r for r in cut if r["step"] == row["step"] and r["prefix"] == prefix]
                assert [r["G"] for r in mine] == [cfg.group if prefix == "gap/" else fresh] * B
                assert np.mean([r["J"] for r in mine]) == pytest.approx(row[prefix + "J"])
                mixed = [r["delta_mu_eta"] for r in mine if math.isfinite(r["delta_mu_eta"])]
                assert len(mixed) == row[prefix + "mixed_prompts"]
                if mixed:
                    assert np.mean(mixed) == pytest.approx(row[prefix + "delta_mu_eta_prompt"], rel=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                      load_model(tiny_model)[0].state_dict().values()))


def test_resume_refuses_a_checkpoint_of_other_settings(tiny_model, tmp_path):
    GRPOTrainer(_config(tiny_model, steps=2), tmp_path, reward_fn=_even_length).train()
    with pytest.raises(ValueError, match="same settings, or --force"):
        GRPOTrainer(_config(tiny_model, steps=2, lr=0.5), tmp_path, reward_fn=_even_length).train()


def test_gap_adaptive_rate_follows_the_smoothed_critical_rate(tiny_model, tmp_path):
    tr = GRPOTrainer(_config(tiny_model, schedule="gap-adaptive", lr=1e-2, adaptive_fraction=0.5, adaptive_smoothing=0.5),
                     tmp_path, reward_fn=_even_length)

    def after(ratio):  # the rate the monitor sets after a step at 1e-2 whose estimated crit_ratio was `ratio`
        return tr.monitor.record({"step": 1, "learning_rate": 1e-2, "gap/crit_ratio": ratio, "gap/zero_variance_groups": 0.0})

    assert after(math.nan) == pytest.approx(1.1e-2)  # no threshold yet: grow by adaptive_growth
    assert after(0.8) == pytest.approx(0.625e-2)  # critical rate 1.25e-2, target half of it
    # critical 2.5e-3; geometric mean with 1.25e-2 is sqrt(3.125e-5)
    assert after(4.0) == pytest.approx(max(0.5 * math.sqrt(1.25e-2 * 2.5e-3), 0.5e-2))
    assert after(1e3) == pytest.approx(0.5e-2)  # at most a factor 2 per step


# --- bad input ------------------------------------------------------------------------------------


def test_missing_model_directory(tmp_path):
    with pytest.raises(ValueError, match=r"^model: got '.*nowhere'; allowed: a directory holding a Hugging Face causal LM"):
        load_model(tmp_path / "nowhere")


def test_not_a_causal_lm(tmp_path):
    from transformers import T5Config

    T5Config(d_model=8, d_ff=16, num_layers=1, num_heads=1, d_kv=8, vocab_size=10).save_pretrained(tmp_path)
    char_tokenizer("0123456789").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"^model: got .*; allowed: a decoder-only causal LM \(this is an encoder-decoder, model type .t5.\)") as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400  # not transformers' list of every causal class


@pytest.mark.parametrize("missing, message", [("eos", "a tokenizer with an EOS token"), ("pad", "a tokenizer with a pad token")])
def test_tokenizer_without_eos_or_pad(tiny_model, tmp_path, missing, message):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(tiny_model).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    setattr(tok, f"{missing}_token", None)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"^tokenizer: got .*; allowed: {message}"):
        load_model(tmp_path)


@pytest.mark.parametrize("reward, message", [
    (lambda text, p: 1 / 0, r"reward function raised ZeroDivisionError: division by zero on completion '.*' for prompt '.*\+.*='"),
    (lambda text, p: float("nan"), r"reward function returned nan for completion '.*' of prompt '.*'; allowed: 0 or 1"),
    (lambda text, p: 0.5, r"reward function returned 0.5 for completion .*; allowed: 0 or 1"),
    (lambda text, p: "1", r"reward function returned '1' for completion .*; allowed: 0 or 1"),
])
def test_bad_rewards_name_the_sample(tiny_model, tmp_path, reward, message):
    tr = GRPOTrainer(_config(tiny_model), tmp_path, reward_fn=reward)
    with pytest.raises(RewardError, match=message):
        tr.train_step()


def test_reward_failing_on_one_sample_is_reported_with_that_sample(tiny_model, tmp_path):
    seen = []

    def picky(text, problem):
        seen.append(text)
        if len(seen) == 3:
            raise KeyError("boom")
        return 0.0

    tr = GRPOTrainer(_config(tiny_model), tmp_path, reward_fn=picky)
    with pytest.raises(RewardError) as info:
        tr.train_step()
    assert repr(seen[2]) in str(info.value) and "KeyError" in str(info.value)


@pytest.mark.parametrize("kw, message", [
    (dict(batch_size=10, group=4), r"^batch_size: got 10; allowed: a multiple of group = 4"),
    (dict(group=1, batch_size=4), r"^group: got 1; allowed: an integer >= 2"),
    (dict(preset="ppo"), r"^preset: got 'ppo'; allowed: "),
    (dict(preset="reinforce"), r"^preset: got 'reinforce'; allowed: rloo, grpo, dr-grpo, dapo, gspo, dapo-lowprob, dapo-dominate, dapo-ppl, or reinforce with an advantage set"),
    (dict(advantage="exact"), r"^advantage: got 'exact'; allowed: "),
    (dict(schedule="linear"), r"^schedule: got 'linear'; allowed: constant, cosine, gap-adaptive"),
    (dict(schedule="gap-adaptive", diagnostics=False), r"^diagnostics: got False; allowed: True with schedule 'gap-adaptive'"),
    (dict(fresh_samples=1), r"^fresh_samples: got 1; allowed: 0 \(off\) or an integer >= 2"),
    (dict(diagnostics_unmixed=0), r"^diagnostics_unmixed: got 0; allowed: a number in \(0, 1\] \(1: every group\)"),
])
def test_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(model="x", **kw)


def test_unknown_task_and_empty_data_file(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"^task: got 'sudoku'; allowed: a task name \(add, arith, countdown\), optionally with integer options \(add:repeat=4\), or a .jsonl"):
        GRPOTrainer(_config(tiny_model, task="sudoku"), tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty.jsonl: got 'no records'"):
        GRPOTrainer(_config(tiny_model, task=str(empty)), tmp_path)


def test_trains_on_a_gsm8k_style_file(tiny_model, tmp_path):
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": f"{a}+{a}=", "answer": f"twice {a} #### {2 * a}"}) + "\n" for a in range(12)))
    tr = GRPOTrainer(_config(tiny_model, task=str(data), batch_size=4, group=2, steps=1), tmp_path / "run")
    rows = tr.train()
    assert rows[-1]["step"] == 1 and 0 <= rows[-1]["eval/accuracy"] <= 1


def test_cli_train_writes_metrics_and_reports_bad_input(tiny_model, tmp_path):
    import pyarrow.parquet as pq

    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(app, ["lm", "train", "--model", str(tiny_model), "--out", str(out), "--steps", "2", "--set", "batch_size=8",
                              "--set", "group=4", "--set", "max_new_tokens=4", "--set", "prompts=20", "--set", "eval_samples=1"])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out / "metrics.parquet")
    assert table.column("step").to_pylist() == [0, 1, 2]
    assert (out / "model" / "config.json").exists()
    bad = runner.invoke(app, ["lm", "train", "--model", str(tmp_path / "none"), "--out", str(out)])
    assert bad.exit_code == 2 and "model: got" in bad.output
    bad = runner.invoke(app, ["lm", "train", "--model", str(tiny_model), "--set", "group=3"])
    assert bad.exit_code == 2 and "batch_size: got 64; allowed: a multiple of group = 3" in bad.output


def test_device_is_checked():
    with pytest.raises(ValueError, match=r"^device: got 'tpu'; allowed: auto, cpu, cuda, cuda:N or mps"):
        TrainConfig(model="x", device="tpu")
    from rlvrlab.lm.trainer import resolve_device

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^device: got 'cuda'; allowed: cpu or auto \(no CUDA device is available here\)"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")


def test_tensorboard_logs_every_metric_or_says_how_to_get_it(tiny_model, tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        with pytest.raises(ValueError, match=r"^tensorboard: got True; allowed: False, or install tensorboard"):
            GRPOTrainer(_config(tiny_model, tensorboard=True), tmp_path)
        return
    GRPOTrainer(_config(tiny_model, tensorboard=True, steps=1), tmp_path, reward_fn=_even_length).train()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def _row(step, ratio, zero=0.0):
    return {"step": step, "gap/crit_ratio": ratio, "learning_rate": 1e-3, "gap/lr_crit": 1e-3 / ratio, "gap/zero_variance_groups": zero}


def test_warnings_need_three_consecutive_steps():
    assert gap_warnings([_row(1, 2.0), _row(2, 0.5), _row(3, 2.0), _row(4, 2.0)]) == {}
    w = gap_warnings([_row(1, 0.5), _row(2, 1.5), _row(3, 2.0), _row(4, 4.0)])
    assert set(w) == {"crit"}
    assert w["crit"].startswith("the step overshot for 3 consecutive steps (steps 2-4; gap/crit_ratio 4.00")
    assert "learning rate 0.001 is past" in w["crit"] and "critical rate near 0.00025" in w["crit"]
    # a step that lowered the log-odds of success counts too, whatever its ratio
    lowered = [{**_row(s, 0.2), "gap/log_odds_change": -0.1} for s in (1, 2, 3)]
    assert set(gap_warnings(lowered)) == {"crit"}
    w = gap_warnings([_row(s, 0.5, zero=0.75) for s in (1, 2, 3)])
    assert set(w) == {"variance"} and "steps 1-3" in w["variance"]


def test_the_trainer_warns_as_it_happens_once_per_kind(tiny_model, tmp_path):
    seen = []
    # a reward nothing earns: every group without variance, from the first step on
    tr = GRPOTrainer(_config(tiny_model, steps=6), tmp_path, reward_fn=lambda text, p: 0.0, on_warning=seen.append)
    rows = tr.train()
    assert seen == [gap_warnings(rows)["variance"]]  # at step 3, once
    assert "(steps 1-3)" in seen[0]


@pytest.mark.parametrize("preset", sorted(__import__("rlvrlab.updates", fromlist=["PRESETS"]).PRESETS))
def test_every_preset_trains(tiny_model, tmp_path, preset):
    advantage = "none" if preset == "reinforce" else ""  # its exact advantage r - J needs a simulator's J
    tr = GRPOTrainer(_config(tiny_model, preset=preset, advantage=advantage, epochs=2), tmp_path, reward_fn=_even_length)
    before = [p.detach().clone() for p in tr.params]
    rows = [tr.train_step() for _ in range(2)]
    moved = any(not torch.equal(p.detach(), b) for p, b in zip(tr.params, before))
    signal = any(r["reward"] not in (0.0, 1.0) for r in rows)  # some reward variance in the batches
    assert all(math.isfinite(r["loss"]) and 0 <= r["clip_ratio/region_mean"] <= 1 for r in rows)
    # weighted presets log how much the weights scaled the advantages: w in [1, 1.2] (low-prob, α 0.2),
    # [0.8, 1] (dominate), [0.8, 1.2] (perplexity); the others have no weights
    bounds = {"dapo-lowprob": (1.0, 1.2), "dapo-dominate": (0.8, 1.0), "dapo-ppl": (0.8, 1.2)}.get(preset)
    for r in rows:
        if bounds is None:
            assert "loss/advantage_weight" not in r
        elif r["frac_reward_zero_std"] < 1:
            assert bounds[0] - 1e-6 <= r["loss/advantage_weight"] <= bounds[1] + 1e-6
    if preset in ("reinforce",):  # no baseline: any reward moves it
        assert moved == any(r["reward"] > 0 for r in rows)
    else:
        assert signal and moved


# --- dropout: both passes of ΔL see one function ------------------------------------------------


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory):
    """A tiny GPT-2 with GPT-2's dropout (p = 0.1 on embeddings, attention and residuals)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("gpt2")
    tok = char_tokenizer("".join("".join(make_task(t).alphabet) for t in ("add", "arith", "countdown")))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.1, embd_pdrop=0.1,
                     attn_pdrop=0.1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # completions of several lengths, so that the even-length reward gives mixed groups
        model.transformer.wte.weight[tok.eos_token_id] *= 3.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_a_vanishing_step_measures_nothing_on_a_model_with_dropout(dropout_model, tmp_path):
    # with dropout on in one pass and off in the other, ΔL is dropout noise: Δμ·η ≈ 0.07 at lr 1e-12
    tr = GRPOTrainer(_config(dropout_model, lr=1e-12, batch_size=16), tmp_path, reward_fn=_even_length)
    assert all(m.p == 0 for m in tr.model.modules() if isinstance(m, torch.nn.Dropout))
    row = tr.train_step()
    assert row["gap/mixed_prompts"] > 0
    assert abs(row["gap/delta_mu_eta"]) < 1e-6 and abs(row["gap/log_odds_change"]) < 1e-6
    assert 0 < row["gap/eta"] < 1e-9


def test_a_diverging_run_stops_with_the_step_and_rate_and_keeps_its_rows(tiny_model, tmp_path):
    from rlvrlab.lm.trainer import DivergedError

    tr = GRPOTrainer(_config(tiny_model, steps=6, checkpoint_every=1), tmp_path, reward_fn=_even_length)
    original = tr.opt.step

    def poison(*args, **kwargs):  # the third step leaves a non-finite weight, as a rate of 1e9 does after a few steps
        original(*args, **kwargs)
        if tr.step == 2:
            with torch.no_grad():
                tr.params[0].view(-1)[0] = math.nan

    tr.opt.step = poison
    with pytest.raises(DivergedError, match=r"non-finite at step 3 with learning rate 0\.01.*gap/lr_crit"):
        tr.train()
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "metrics.parquet").column("step").to_pylist() == [0, 1, 2]
    assert torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=False)["step"] == 2


def test_finite_weights_whose_forward_overflows_stop_the_run_too(tiny_model, tmp_path):
    # what lm train --lr 1e9 does: Adam's steps of size ~lr leave finite weights whose forward overflows
    from rlvrlab.lm.trainer import DivergedError

    tr = GRPOTrainer(_config(tiny_model, steps=6, checkpoint_every=1), tmp_path, reward_fn=_even_length)
    original = tr.opt.step

    def blow_up(*args, **kwargs):
        original(*args, **kwargs)
        if tr.step == 1:
            with torch.no_grad():
                for p in tr.params:
                    p.mul_(1e30)

    tr.opt.step = blow_up
    with pytest.raises(DivergedError, match=r"non-finite (at|after) step 2 with learning rate 0\.01"):
        tr.train()
    assert all(bool(torch.isfinite(p).all()) for p in tr.params)  # finite weights: the forward is what overflowed


def test_sgd_takes_the_plain_clipped_gradient_step(tiny_model, tmp_path):
    """optimizer sgd: ‖θ_new − θ_old‖ = lr · min(‖g‖, max_grad_norm) exactly, and the step is linear in lr."""
    from rlvrlab.lm.trainer import GRPOTrainer

    def parity(completion, problem):
        return int(len(completion) % 2 == 0)

    steps = {}
    for lr in (0.01, 0.02):
        cfg = TrainConfig(model=str(tiny_model), task="add", batch_size=16, group=4, prompts=40, max_new_tokens=8, lr=lr,
                          optimizer="sgd", max_grad_norm=0.5, diagnostics=False, seed=4)
        trainer = GRPOTrainer(cfg, tmp_path / f"lr{lr}", reward_fn=parity)
        theta0 = torch.nn.utils.parameters_to_vector(trainer.params).detach().clone()
        row = trainer.train_step()
        delta = torch.nn.utils.parameters_to_vector(trainer.params).detach() - theta0
        assert float(delta.norm()) == pytest.approx(lr * min(row["grad_norm"], 0.5), rel=1e-4)
        steps[lr] = delta
    assert torch.allclose(steps[0.02], 2 * steps[0.01], atol=1e-6)
