"""Bad input as a new user types it: each mistake is one line naming the problem and what is
allowed, exit status 2, no traceback, and nothing left behind."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlvrlab import _checks
from rlvrlab.cli import app
from rlvrlab.lm.models import check_prompts, load_model
from rlvrlab.lm.tasks import make_task
from rlvrlab.lm.tokenizer import char_tokenizer

runner = CliRunner()


def refused(args: list[str], message: str) -> str:
    """Run the command; it must exit 2 with exactly one line that contains ``message``."""
    result = runner.invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # the CLI's own exit, not an exception that escaped
    return lines[0]


# --- model directories a user might point at ---------------------------------------------------


def _tokenizer():
    return char_tokenizer("".join("".join(make_task(t).alphabet) for t in ("add", "arith", "countdown")))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A random tiny Qwen2 (usable), and the same weights without tokenizer files, with
    truncated weights; a BERT masked LM and a T5, each with a tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, Qwen2Config, Qwen2ForCausalLM, T5Config, T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("models")
    tok = _tokenizer()
    torch.manual_seed(0)
    small = dict(vocab_size=len(tok), intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    made = {
        "qwen": Qwen2ForCausalLM(Qwen2Config(hidden_size=32, num_key_value_heads=1, max_position_embeddings=128,
                                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **small)),
        "bert": BertForMaskedLM(BertConfig(hidden_size=32, **small)),
        "t5": T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16)),
    }
    paths = {}
    for name, model in made.items():
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    paths["no-tokenizer"] = root / "no-tokenizer"
    paths["no-tokenizer"].mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(paths["qwen"] / f, paths["no-tokenizer"] / f)
    paths["truncated"] = root / "truncated"
    shutil.copytree(paths["qwen"], paths["truncated"])
    weights = paths["truncated"] / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return paths


@pytest.mark.parametrize(("kind", "message"), [
    ("no-tokenizer", "allowed: a directory with the tokenizer's files beside the weights"),
    ("truncated", "allowed: weights that load (SafetensorError: "),
    ("bert", "allowed: a causal LM (BertLMHeadModel reads later tokens to predict earlier ones"),
    ("t5", "allowed: a decoder-only causal LM (this is an encoder-decoder, model type 't5')"),
])
def test_lm_train_refuses_a_model_it_cannot_use_before_writing_anything(models, tmp_path, kind, message):
    out = tmp_path / "run"
    line = refused(["lm", "train", "--model", str(models[kind]), "--out", str(out)], message)
    assert line.startswith(f"rlvrlab: model: got '{models[kind]}'")
    assert len(line) < 250  # not transformers' list of every causal-LM class
    assert not out.exists()


def test_load_model_accepts_the_usable_one(models):
    model, tok = load_model(models["qwen"])
    assert type(model).__name__ == "Qwen2ForCausalLM" and tok.eos_token_id == 1


# --- --out that cannot be written --------------------------------------------------------------


def _immutable_dir(tmp_path: Path) -> Path | None:
    """A directory even root cannot write into (chattr +i), or None where that is not possible."""
    d = tmp_path / "immutable"
    d.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode:
        return None
    return d


@pytest.fixture
def unwritable(tmp_path):
    """Every kind of --out that cannot be used, with the words of its refusal."""
    existing = tmp_path / "a-file"
    existing.write_text("x")
    cases = [(existing, "a directory or a path where one can be made (this is an existing file)"),
             (existing / "run", f"a path under a directory ({existing} is a file)"),
             (Path("/proc/rlvrlab-run"), "a path where a directory can be written (/proc cannot be written)")]
    immutable = _immutable_dir(tmp_path)
    if immutable is not None:
        cases.append((immutable / "run", f"a path where a directory can be written ({immutable} cannot be written)"))
    yield cases
    if immutable is not None:
        subprocess.run(["chattr", "-i", str(immutable)], check=True)


def test_writable_dir_refuses_without_creating_anything(unwritable, tmp_path):
    for path, message in unwritable:
        with pytest.raises(ValueError, match=f"^out: got '{path}'; allowed: ") as err:
            _checks.writable_dir("out", path)
        assert message in str(err.value)
    before = sorted(tmp_path.rglob("*"))
    _checks.writable_dir("out", tmp_path / "new" / "deeper")  # a new path under a writable directory: fine
    _checks.writable_dir("out", tmp_path)  # an existing directory: fine
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("command", [["run", "mab", "--quick"], ["reproduce", "--quick", "--only", "mab"],
                                     ["lm", "train", "--model", "/nowhere/model"]])
def test_out_is_checked_before_any_work(unwritable, command, tmp_path):
    for path, message in unwritable:
        refused([*command, "--out", str(path)], f"--out: got '{path}'; allowed: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"] + (["immutable"] if len(unwritable) == 4 else [])


def test_pretrain_cache_is_checked_before_training(tmp_path):
    cache = tmp_path / "a-file"
    cache.write_text("x")
    refused(["lm", "pretrain", "--cache", str(cache)], f"--cache: got '{cache}'; allowed: a directory or a path where one can be made")


# --- prompts the tokenizer cannot encode -------------------------------------------------------


def test_check_prompts_names_the_first_bad_prompt_and_the_characters_lost():
    tok = _tokenizer()
    check_prompts(tok, ["12+3=", "(4*5)-6="], name="prompts")
    with pytest.raises(ValueError, match=r"^prompts \(prompt 2 of 3\): got 'What is 1\+2\?'; allowed: text the model's "
                                         r"tokenizer can encode \(it reads back as '1\+2'; characters lost: ' ', '\?', 'W', "
                                         r"'a', 'h', 'i', 's', 't'\)$"):
        check_prompts(tok, ["1+2=", "What is 1+2?", "hello"], name="prompts")
    with pytest.raises(ValueError, match=r"^--prompt: got ''; allowed: a non-empty prompt$"):
        check_prompts(tok, [""], name="--prompt")
    with pytest.raises(ValueError, match=r"^--prompt: got 'abc'; allowed: .*it reads back as ''; characters lost: 'a', 'b', 'c'"):
        check_prompts(tok, ["abc"], name="--prompt")


def _bpe(kind: str):
    """A small trained tokenizer of a common kind (nothing downloaded)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["What is 1+2?", "hello world", "Compute 12*3 - 4.", "café"] * 20
    if kind == "byte-level":  # GPT-2 / Qwen style, with a prefix space added to every text
        t = Tokenizer(models.BPE())
        t.pre_tokenizer, t.decoder = pre_tokenizers.ByteLevel(add_prefix_space=True), decoders.ByteLevel()
        t.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    elif kind == "metaspace":  # SentencePiece style
        t = Tokenizer(models.BPE(unk_token="<unk>"))
        t.pre_tokenizer, t.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        t.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=["<eos>", "<unk>"]))
    else:  # lowercasing, accent-stripping WordPiece, whose decoder puts spaces around punctuation
        t = Tokenizer(models.WordPiece(unk_token="<unk>"))
        t.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
        t.pre_tokenizer, t.decoder = pre_tokenizers.Whitespace(), decoders.WordPiece()
        t.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["<eos>", "<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>")


@pytest.mark.parametrize("kind", ["byte-level", "metaspace", "wordpiece"])
def test_check_prompts_allows_what_a_tokenizer_normalizes_on_purpose(kind):
    tok = _bpe(kind)
    check_prompts(tok, ["What is 1+2?", "hello  world", "café"], name="prompts")  # prefix spaces, case, accents, spacing
    if kind != "byte-level":  # byte-level BPE encodes every string
        with pytest.raises(ValueError, match="characters lost: .*'≠'"):
            check_prompts(tok, ["1 ≠ 2"], name="prompts")


def test_check_prompts_refuses_lost_word_boundaries():
    """Whitespace a tokenizer drops changes the text: '1 2' read back as '12' is refused."""
    tok = char_tokenizer("0123456789+")
    with pytest.raises(ValueError, match=r"it reads back as '12\+3'; characters lost: ' '"):
        check_prompts(tok, ["1 2+3"], name="prompts")


@pytest.mark.parametrize(("prompt", "message"), [
    ("", "--prompt: got ''; allowed: a non-empty prompt"),
    ("hello world", "--prompt: got 'hello world'; allowed: text the model's tokenizer can encode (it reads back as ''"),
    ("What is 1+2?", "--prompt: got 'What is 1+2?'; allowed: text the model's tokenizer can encode (it reads back as '1+2'"),
])
def test_generate_refuses_prompts_the_tokenizer_cannot_encode(models, prompt, message):
    refused(["generate", "--base", str(models["qwen"]), "--rl", str(models["qwen"]), "--prompt", prompt], message)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--tau", "nan", "tau: got nan; allowed: a finite number"),
    ("--gamma", "nan", "gamma: got nan; allowed: a number >= 0 and finite"),
    ("--gamma", "inf", "gamma: got inf; allowed: a number >= 0 and finite"),
    ("--mode", "greedy", "mode: got 'greedy'; allowed: base, extrapolate, replace, rl"),
    ("--criterion", "nope", "criterion: got 'nope'; allowed: delta-logp, entropy, js, kl, random, reverse-kl"),
])
def test_generate_refuses_bad_decoding_settings_before_loading_models(option, value, message):
    # the models do not exist: the settings are refused first
    refused(["generate", "--base", "/nowhere/a", "--rl", "/nowhere/b", "--prompt", "1+2=", option, value], message)


def test_generate_decodes_a_prompt_the_tokenizer_knows(models):
    result = runner.invoke(app, ["generate", "--base", str(models["qwen"]), "--rl", str(models["qwen"]), "--prompt", "1+2=",
                                 "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("[0.0] 1+2=")


def test_decoding_library_refuses_nan_tau(models):
    from rlvrlab.analysis.decoding import check_settings

    with pytest.raises(ValueError, match=r"^tau: got nan; allowed: a finite number"):
        check_settings(mode="extrapolate", tau=math.nan)
    with pytest.raises(ValueError, match=r"^tau: got 2.0; allowed: a rate in \[0, 1\] with criterion 'random'"):
        check_settings(mode="replace", criterion="random", tau=2.0)


# --- choices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "message"), [
    ("--preset", "--preset: got 'nope'; allowed: dapo, dapo-dominate, dapo-lowprob, dapo-ppl, dr-grpo, grpo, gspo, reinforce, rloo"),
    ("--schedule", "--schedule: got 'nope'; allowed: constant, cosine, gap-adaptive"),
    ("--task", "--task: got 'nope'; allowed: a task name (add, arith, countdown), optionally with integer options (add:repeat=4), or a .jsonl / .parquet question-answer file"),
])
def test_lm_train_checks_choices_before_loading_the_model(option, message, tmp_path):
    refused(["lm", "train", "--model", "/nowhere/model", "--out", str(tmp_path / "run"), option, "nope"], message)
    assert not (tmp_path / "run").exists()


def test_analyze_checks_the_task_name(tmp_path):
    refused(["analyze", "direction", "--base", "b", "--rl", "r", "--task", "nope", "--out", str(tmp_path / "d")],
            "--task: got 'nope'; allowed: a task name (add, arith, countdown)")


# --- usage errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["lm", "train", "--model", "m", "--lr", "abc"], "Invalid value for '--lr'"),
    (["run", "mab", "--bogus"], "No such option: --bogus"),
    (["run"], "Missing argument 'name'"),
    (["nope"], "No such command 'nope'"),
])
def test_usage_errors_are_one_line(args, message):
    line = refused(args, message)
    assert line.startswith("rlvrlab: ") and "--help" in line


def test_usage_errors_from_the_installed_command_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "rlvrlab.cli", "lm", "train", "--model", "m", "--lr", "abc"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "Invalid value for '--lr'" in proc.stderr and "╭" not in proc.stderr


# --- a refused run leaves nothing behind -------------------------------------------------------


def test_a_refused_analysis_leaves_nothing_so_the_corrected_command_can_use_its_directory(models, tmp_path):
    out = tmp_path / "runs" / "leash"
    refused(["analyze", "leash", "--base", str(models["bert"]), "--rl", str(models["qwen"]), "--quick", "--out", str(out)],
            "model: got")
    assert not (tmp_path / "runs").exists()  # nor the parent it made


@dataclasses.dataclass(frozen=True)
class _Settings:
    fail: bool = True

    @classmethod
    def quick(cls):
        return cls()


def _run_that_refuses(config, progress, workdir):
    (workdir / "sweep").mkdir(parents=True, exist_ok=True)
    (workdir / "sweep" / "cell.parquet").write_text("half")
    if config.fail:
        raise ValueError("model: got 'x'; allowed: a causal LM")
    from rlvrlab.experiments.base import Result

    return Result(tables={}, summary={"ok": 1})


@pytest.fixture
def refusing_experiment(monkeypatch):
    from rlvrlab.experiments import runner as runner_module
    from rlvrlab.experiments.base import Experiment

    exp = Experiment("refuses", "a run that finds a user mistake", "", _Settings, _run_that_refuses, lambda out: [])
    monkeypatch.setattr(runner_module, "get", lambda name: exp)
    return runner_module.run_experiment


def test_runner_undoes_a_refused_run_in_a_new_directory(refusing_experiment, tmp_path):
    with pytest.raises(ValueError, match="model: got 'x'"):
        refusing_experiment("refuses", tmp_path / "new" / "run")
    assert list(tmp_path.iterdir()) == []


def test_runner_restores_a_directory_it_was_forced_to_reuse(refusing_experiment, tmp_path):
    out = tmp_path / "run"
    assert refusing_experiment("refuses", out, settings={"fail": False})["headline"] == {"ok": 1}
    (out / "sweep" / "cell.parquet").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="model: got 'x'"):
        refusing_experiment("refuses", out, settings={"fail": True}, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # config and summary as they were
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # the refused run's half-written sweep cell is gone
    assert refusing_experiment("refuses", out, settings={"fail": False})["headline"] == {"ok": 1}  # read back, not refused
