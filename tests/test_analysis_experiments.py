"""The leash and direction experiments, `rlvrlab analyze` and `rlvrlab generate`, on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rlvrlab.analysis import descendant_training_prompts, evaluation_problems, model_pair, pass_at_k, support_metrics
from rlvrlab.analysis.pair import DESCENDANT_HOLDOUT, DESCENDANT_PROMPTS, DESCENDANT_SEEDS, EVALUATION_SEED
from rlvrlab.cli import app
from rlvrlab.experiments import resolve_config, run_experiment
from rlvrlab.experiments.base import describe_fields
from rlvrlab.experiments.registry import get
from rlvrlab.lm.tasks import load_qa, make_task
from rlvrlab.io import read_table
from rlvrlab.lm.trainer import TrainConfig, load_model

LEASH_SMALL = ["problems=4", "samples=8", "max_new_tokens=8"]
DIRECTION_SMALL = ["problems=4", "samples=2", "max_new_tokens=8", "rates=0.2", "taus=-0.3", "gammas=0,0.1", "alphas=0.2",
                   "seeds=0,1", "train_steps=2", "train_batch_size=8", "train_prompts=20"]


@pytest.fixture(scope="module")
def rl_model(tiny_base_model, tmp_path_factory):
    """A perturbed copy of the tiny base model standing in for an RLVR descendant (same tokenizer)."""
    model, tok = load_model(str(tiny_base_model))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("rl")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("name", ["leash", "direction"])
def test_every_setting_is_documented(name):
    assert all(help_text for _, _, _, help_text in describe_fields(get(name).settings()))


def test_leash_on_a_given_pair(tiny_base_model, rl_model, tmp_path):
    summary = run_experiment("leash", tmp_path, quick=True, settings=LEASH_SMALL + [f"base={tiny_base_model}", f"rl={rl_model}"])
    assert summary["checks"] and all(c["kind"] == "claim" for c in summary["checks"])
    assert (tmp_path / "leash.png").read_bytes()[:4] == b"\x89PNG"
    passk = read_table(tmp_path / "metrics.parquet").to_pylist()
    assert sorted({r["k"] for r in passk}) == [1, 2, 4, 8]
    for m in ("base", "rl"):  # pass@k is non-decreasing in k
        curve = [r["pass_at_k"] for r in passk if r["model"] == m]
        assert all(a <= b + 1e-12 for a, b in zip(curve, curve[1:]))
    (support,) = read_table(tmp_path / "support.parquet").to_pylist()
    assert support["P"] + support["E"] + support["S"] + support["O"] == 4
    s = json.loads((tmp_path / "summary.json").read_text())["headline"]
    assert s["rl"]["support"]["P"] == support["P"] and 0 <= s["base"]["answer_entropy"] <= np.log(8) + 1e-9
    # the catch-up check's lead at the largest k is the pass@k curves' difference there, problem by problem averaged
    at = {m: next(r["pass_at_k"] for r in passk if r["model"] == m and r["k"] == 8) for m in ("base", "rl")}
    assert s["lead_at_8"]["gain"] == pytest.approx(at["rl"] - at["base"]) and s["lead_at_8"]["problems"] == 4


def test_leash_trains_and_caches_its_own_descendant(tiny_base_model, tmp_path, monkeypatch):
    monkeypatch.setenv("RLVRLAB_CACHE", str(tmp_path / "cache"))
    settings = LEASH_SMALL + [f"base={tiny_base_model}", "rl_steps=2", "seeds=0"]
    run_experiment("leash", tmp_path / "a", quick=True, settings=settings)
    (trained,) = (tmp_path / "cache" / "models").glob("grpo-*")
    stamp = (trained / "model" / "config.json").stat().st_mtime_ns
    summary = run_experiment("leash", tmp_path / "b", quick=True, settings=settings)
    assert (trained / "model" / "config.json").stat().st_mtime_ns == stamp  # found in the cache, not trained again
    assert summary["headline"]["rl"] == {"rl-seed0": str(trained / "model")}


def test_direction_on_a_given_pair(tiny_base_model, rl_model, tmp_path, monkeypatch):
    monkeypatch.setenv("RLVRLAB_CACHE", str(tmp_path / "cache"))
    summary = run_experiment("direction", tmp_path, quick=True,
                             settings=DIRECTION_SMALL + [f"base={tiny_base_model}", f"rl={rl_model}"])
    assert len(summary["checks"]) == 4 and (tmp_path / "direction.png").exists()
    rep = read_table(tmp_path / "metrics.parquet").to_pylist()
    assert {r["criterion"] for r in rep} == {"none", "delta-logp", "entropy", "kl", "reverse-kl", "js", "random"}
    ex = read_table(tmp_path / "extrapolation.parquet").to_pylist()
    rl_acc = summary["headline"]["accuracy_rl"]
    assert [r["accuracy"] for r in ex if r["gamma"] == 0] == [rl_acc]  # γ = 0 decodes exactly as the RLVR model
    tr = read_table(tmp_path / "training.parquet").to_pylist()
    assert sorted((r["preset"], r["seed"]) for r in tr) == sorted(
        (p, s) for p in ("dapo-lowprob", "dapo", "dapo-dominate", "dapo-ppl") for s in (0, 1))
    assert len(list((tmp_path / "cache" / "models").glob("grpo-*"))) == 8


def test_model_pair_trains_one_descendant_per_seed(tmp_path, monkeypatch):
    trained, ticks = [], []

    def descendant(config, on_step=None):
        trained.append(config)
        return tmp_path / f"grpo-{config.seed}" / "model"

    monkeypatch.setattr("rlvrlab.lm.trainer.descendant", descendant)
    base, rl = model_pair("base-dir", "", task="arith", seeds=(3, 5), steps=7, lr=1e-3, preset="grpo", max_new_tokens=16,
                          on_task=lambda description, total: ticks.append((description, total)))
    assert base == "base-dir"
    assert rl == {"rl-seed3": str(tmp_path / "grpo-3" / "model"), "rl-seed5": str(tmp_path / "grpo-5" / "model")}
    assert [(c.model, c.task, c.seed, c.steps, c.lr, c.prompts, c.holdout) for c in trained] == [
        ("base-dir", "arith", 3, 7, 1e-3, 400, 0.2), ("base-dir", "arith", 5, 7, 1e-3, 400, 0.2)]
    # the trainer's default holdout: descendants cached before it was passed keep their cache key
    assert TrainConfig.__dataclass_fields__["holdout"].default == DESCENDANT_HOLDOUT
    assert [t for _, t in ticks] == [7, 7]
    assert model_pair("b", "r", task="add", seeds=(0,), steps=1, lr=1.0, preset="grpo", max_new_tokens=1) == ("b", {"rl": "r"})
    assert len(trained) == 2  # a given RLVR model trains nothing


def _qa_file(path, n):
    """n distinct questions the tiny base model's tokenizer can encode."""
    path.write_text("".join(json.dumps({"question": f"{i}+{i}=", "answer": str(2 * i)}) + "\n" for i in range(n)))
    return path


def test_evaluation_problems_are_not_a_descendant_s_draw(tmp_path):
    add = make_task("add")
    problems = evaluation_problems(add, 48)
    assert problems == add.sample(48, seed=EVALUATION_SEED)  # none of them collides: the draw as before
    trained = {p for seed in range(3) for p in add.sample(400, seed)}  # descendants' prompts, seeds 0-2
    assert len(set(problems)) == 48 and not set(problems) & trained


@pytest.mark.parametrize("records", [30, 500])
def test_evaluation_problems_of_a_file_are_never_trained_on(tmp_path, records):
    # A file of 30 records: every descendant draws all of it and trains on 24; of 500, it draws 400 and trains on 320.
    task = load_qa(_qa_file(tmp_path / "qa.jsonl", records))
    for seeds in [(0,), (0, 1), (3, 5, 8)]:
        trained = set().union(*(descendant_training_prompts(task, s) for s in seeds))
        held_by_all = [p for p in task.problems if p.prompt not in trained]  # may be none: 30 records, 3 seeds
        if held_by_all:
            problems = evaluation_problems(task, min(4, len(held_by_all)), seeds=seeds)
            assert len({p.prompt for p in problems}) == len(problems) and not {p.prompt for p in problems} & trained
        with pytest.raises(ValueError, match=rf"^problems: got {len(held_by_all) + 1}; allowed: at most {len(held_by_all)} \("):
            evaluation_problems(task, len(held_by_all) + 1, seeds=seeds)
    assert len(descendant_training_prompts(task, 0)) == min(records, DESCENDANT_PROMPTS) * 4 // 5
    assert evaluation_problems(task, 1) == evaluation_problems(task, 1, seeds=DESCENDANT_SEEDS)


@pytest.mark.parametrize("seed", [0, 1])
def test_descendant_training_prompts_are_the_trainer_s(tiny_base_model, tmp_path, seed):
    from rlvrlab.lm.trainer import GRPOTrainer, TrainConfig

    path = _qa_file(tmp_path / "qa.jsonl", 60)
    config = TrainConfig(model=str(tiny_base_model), task=str(path), prompts=DESCENDANT_PROMPTS, holdout=DESCENDANT_HOLDOUT,
                         seed=seed, steps=1, device="cpu")
    trainer = GRPOTrainer(config, tmp_path / "run")
    task = load_qa(path)
    assert descendant_training_prompts(task, seed) == {p.prompt for p in trainer.train_set}
    problems = evaluation_problems(task, 5, seeds=(seed,))
    assert {p.prompt for p in problems} <= {p.prompt for p in trainer.heldout}  # a file this small: its held-out part


@pytest.mark.parametrize("name", ["leash", "direction"])
def test_configs_resolve_tasks_like_the_trainer(name, tmp_path):
    message = r"^task: got 'x.csv'; allowed: a task name \(add, arith, countdown\), optionally with integer options \(add:repeat=4\), or a .jsonl / .parquet question-answer file$"
    with pytest.raises(ValueError, match=message):
        resolve_config(name, settings=["task=x.csv"])
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(3)))
    assert resolve_config(name, settings=[f"task={path}"]).task == str(path)


def test_pass_at_k_and_support_feed_the_leash_numbers():
    # 3 problems, 8 samples each: base solves 0 and 1, the RLVR model 1 and 2
    assert pass_at_k(8, np.array([2, 0, 8]), 1).tolist() == [0.25, 0.0, 1.0]
    s = support_metrics([True, True, False], [False, True, True])
    assert (s["P"], s["E"], s["S"], s["O"]) == (1, 1, 1, 0) and s["NSCR"] == 0.0


runner = CliRunner()


def test_cli_analyze_and_generate(tiny_base_model, rl_model, tmp_path):
    result = runner.invoke(app, ["analyze", "leash", "--base", str(tiny_base_model), "--rl", str(rl_model), "--task", "add",
                                 "--quick", "--out", str(tmp_path / "leash"), *sum((["--set", s] for s in LEASH_SMALL), [])])
    assert result.exit_code in (0, 1), result.output  # 1: some claim not seen (reported, not an error)
    assert (tmp_path / "leash" / "summary.json").exists()
    result = runner.invoke(app, ["generate", "--base", str(tiny_base_model), "--rl", str(rl_model), "--prompt", "12+34=",
                                 "--prompt", "5+6=", "--samples", "2", "--gamma", "0.2", "--tau", "-0.1", "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("[")]
    assert [ln.split("]")[0] for ln in lines] == ["[0.0", "[0.1", "[1.0", "[1.1"]
    assert lines[0].startswith("[0.0] 12+34=") and lines[2].startswith("[1.0] 5+6=")


def test_cli_refuses_a_pair_with_different_tokenizers(tiny_base_model, tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlvrlab.lm.tokenizer import char_tokenizer

    tok = char_tokenizer("0123456789xyz")
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.eos_token_id))
    model.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    for args in (["generate", "--prompt", "1+1="], ["analyze", "leash", "--quick", "--out", str(tmp_path / "x"),
                                                      *sum((["--set", s] for s in LEASH_SMALL), [])]):
        result = runner.invoke(app, [*args, "--base", str(tiny_base_model), "--rl", str(tmp_path / "other")])
        assert result.exit_code == 2, result.output
        assert "rl tokenizer: got" in result.output and "allowed: a model pair sharing one tokenizer" in result.output
    result = runner.invoke(app, ["generate", "--prompt", "1+1=", "--base", str(tiny_base_model), "--rl", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "missing" in result.output


# --- leash: pass@1's gain and S − E with their uncertainty over problems (issue 15) -----------------


def test_leash_pass_gain_is_a_t_interval_over_problems_by_hand():
    from scipy.stats import t

    from rlvrlab.experiments.leash import pass_gain

    got = pass_gain(np.array([0.5, 0.5, 0.0]), np.array([[1.0, 0.5, 0.5]]))  # gains 0.5, 0, 0.5
    sd = math.sqrt(1 / 12)  # deviations 1/6, -1/3, 1/6 from the mean 1/3: Σ = 1/6 over 2 degrees of freedom
    half = t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert got["problems"] == 3 and math.isclose(got["gain"], 1 / 3)
    assert math.isclose(got["low"], 1 / 3 - half) and math.isclose(got["high"], 1 / 3 + half)
    two = pass_gain(np.array([0.5, 0.5, 0.0]), np.array([[1.0, 0.5, 0.5], [0.0, 0.5, 0.5]]))  # models averaged first
    assert math.isclose(two["gain"], (0.0 + 0.0 + 0.5) / 3)
    assert math.isnan(pass_gain(np.zeros(4), np.zeros((1, 4)))["low"])  # every gain 0: no interval
    with pytest.raises(ValueError, match=r"^rl: got 'shape \(1, 2\)'; allowed: \(M, 3\)"):
        pass_gain(np.zeros(3), np.zeros((1, 2)))


def test_leash_support_shift_counts_S_and_E_per_problem_by_hand():
    from rlvrlab.experiments.leash import support_shift

    base = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    rl = np.array([[1, 0, 0, 1, 0, 0]], dtype=bool)  # S: problems 1, 2, 5; E: problem 3
    got = support_shift(base, rl)
    assert (got["S"], got["E"], got["S_minus_E"], got["discordant"], got["problems"]) == (3.0, 1.0, 2.0, 4, 6)
    assert got["low"] <= 2.0 <= got["high"] and got["low"] >= -6 and got["high"] <= 6
    # a plain loop over the percentile bootstrap (scipy's resampling, the same seed) gives the same interval
    from scipy.stats import bootstrap

    d = np.array([0, 1, 1, -1, 0, 1], dtype=float)
    ref = bootstrap((d,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert math.isclose(got["low"], 6 * ref.low) and math.isclose(got["high"], 6 * ref.high)
    two = support_shift(base, np.vstack([rl[0], base]))  # the second model solves what the base does: d halves
    assert (two["S"], two["E"], two["S_minus_E"], two["discordant"]) == (1.5, 0.5, 1.0, 4)
    none = support_shift(base, base[None])  # no problem in S or E: the interval is [0, 0], from no data
    assert (none["S_minus_E"], none["low"], none["high"], none["discordant"]) == (0.0, 0.0, 0.0, 0)
