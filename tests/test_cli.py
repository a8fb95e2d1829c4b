"""The rlvrlab command: user mistakes give one clear line and exit 2, never a traceback."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from rlvrlab.cli import SCHEDULES, app
from rlvrlab.experiments import names

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_list_names_every_experiment():
    result = invoke("list")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert listed == names() and len(names()) >= 11  # every registered experiment, in order, and nothing else


def _commands(group=None, path=()):
    """(path, click command) for every command of the rlvrlab CLI, nested groups included."""
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def test_every_option_of_every_command_has_help_text():
    commands = dict(_commands())
    assert {("lm", "train"), ("lm", "pretrain"), ("generate",), ("run",), ("analyze", "leash")} <= set(commands)
    for path, cmd in commands.items():
        for param in cmd.params:
            if param.param_type_name == "option":
                assert param.help and param.help.strip(), f"{' '.join(path)} {param.opts} has no help"


def test_help_lists_every_value_of_every_choice():
    from rlvrlab.analysis.decoding import CRITERIA, MODES
    from rlvrlab.lm.tasks import TASKS
    from rlvrlab.updates import PRESETS

    choices = {("lm", "train"): {"--preset": PRESETS, "--schedule": SCHEDULES, "--task": TASKS},
               ("lm", "probe"): {"--preset": PRESETS, "--task": TASKS},
               ("generate",): {"--mode": MODES, "--criterion": CRITERIA},
               ("analyze", "leash"): {"--task": TASKS}, ("analyze", "direction"): {"--task": TASKS},
               ("run",): {"name": names()}}
    commands = dict(_commands())
    assert len(PRESETS) == 9 and len(SCHEDULES) == 4
    for path, options in choices.items():
        params = {p.opts[0] if p.param_type_name == "option" else p.name: p for p in commands[path].params}
        for option, values in options.items():
            for value in values:
                assert value in params[option].help, (path, option, value)
    shown = invoke("lm", "train", "--help").output
    assert all(name in shown for name in PRESETS)  # the rendered help too: it listed 6 of the 9 presets


@pytest.mark.parametrize(("command", "config"), [("train", "TrainConfig"), ("pretrain", "PretrainConfig")])
def test_help_settings_prints_every_field_with_type_default_and_doc(command, config):
    from rlvrlab.lm.config import TrainConfig
    from rlvrlab.lm.pretrain import PretrainConfig

    cls = {"TrainConfig": TrainConfig, "PretrainConfig": PretrainConfig}[config]
    result = invoke("lm", command, "--help-settings")  # no --model needed: it prints and exits first
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"rlvrlab lm {command} --set key=value takes these settings of {config}:"
    rows = {line.split()[0]: line for line in lines[2:]}
    fields = dataclasses.fields(cls)
    assert list(rows) == [f.name for f in fields]
    for f in fields:
        doc = f.metadata.get("help", "")
        assert doc.strip() and "\n" not in doc, f"{config}.{f.name} has no one-line doc"
        assert rows[f.name].endswith(doc) and repr(f.default) in rows[f.name]
    typed = {"train": ("alpha", "a number or none"), "pretrain": ("tasks", "a comma-separated list of strings")}[command]
    assert typed[1] in rows[typed[0]]  # the type, as --set parses it


def test_train_config_docs_leave_its_record_unchanged_and_a_run_is_named_by_its_non_default_settings():
    """Checkpoints, run directories and cached descendants compare TrainConfig.identity(): the settings
    that differ from the defaults (docs live in metadata only), so that a setting added later, at its
    default, leaves every earlier run what it was."""
    from rlvrlab.lm.config import TrainConfig, nondefault_settings

    record = dataclasses.asdict(TrainConfig())
    assert list(record) == ["model", "task", "preset", "advantage", "alpha", "prompts", "batch_size", "group",
                            "max_new_tokens", "steps", "lr", "optimizer", "schedule", "adaptive_fraction", "adaptive_smoothing",
                            "adaptive_growth", "adaptive_ratchet", "adaptive_start", "probe_every", "probe_rescan", "probe_steps",
                            "probe_fresh", "lr_min", "lr_max", "epochs", "max_grad_norm", "temperature", "holdout", "eval_every",
                            "eval_samples", "diagnostics", "diagnostics_unmixed",
                            "fresh_samples", "prompt_table", "kl_reference", "checkpoint_every", "tensorboard", "device", "seed"]
    assert record["lr"] == 1e-3 and record["schedule"] == "constant" and record["alpha"] is None and record["prompts"] == 400
    assert TrainConfig().identity() == {}
    config = TrainConfig(model="m", lr=3e-4, seed=2)
    assert config.identity() == {"model": "m", "lr": 3e-4, "seed": 2}
    before_probe = {k: v for k, v in dataclasses.asdict(config).items() if not k.startswith("probe_")}  # an older config.json
    assert nondefault_settings(before_probe) == config.identity()
    assert nondefault_settings({**before_probe, "probe_every": 5}) != config.identity()
    # diagnostics_unmixed came later, at 1.0: every earlier run measured every group, as the default does
    before_sampling = {k: v for k, v in dataclasses.asdict(config).items() if k != "diagnostics_unmixed"}
    assert nondefault_settings(before_sampling) == config.identity()


def test_list_verbose_shows_settings_and_defaults():
    result = invoke("list", "-v")
    assert result.exit_code == 0
    assert "etas" in result.output and "(0.1, 1.0, 10.0)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "nope"), "allowed: " + ", ".join(sorted(names()))),
        (("run", "mab", "--set", "bogus=1"), "allowed: the settings of this experiment"),
        (("run", "mab", "--set", "steps=abc"), "allowed: an integer"),
        (("run", "mab", "--set", "etas=-0.1"), "finite numbers > 0"),
        (("run", "mab", "--set", "etas=inf"), "finite numbers > 0"),
        (("run", "collapse", "--set", "T_infs=1,40"), "integers in [1, 12]"),
        (("reproduce", "--only", "nope"), "allowed: bounds, collapse"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_no_traceback_from_the_installed_command():
    proc = subprocess.run([sys.executable, "-m", "rlvrlab.cli", "run", "mab", "--set", "steps=-3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "steps: got -3; allowed: an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_run_writes_the_run_directory(tmp_path):
    out = tmp_path / "mab"
    result = invoke("run", "mab", "--quick", "--set", "steps=60", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert {"config.json", "summary.json", "metrics.parquet", "figure4.png"} <= {p.name for p in out.iterdir()}
    assert "PASS" in result.output


def test_reproduce_writes_a_report_with_figures_and_checks(tmp_path):
    result = invoke("reproduce", "--quick", "--only", "two-response", "--only", "mab", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert 'src="two-response/two_response.png"' in html and 'src="mab/figure4.png"' in html
    assert "PASS" in html and "FAIL" not in html
    assert str(tmp_path / "report.html") in result.output


def test_resume_is_the_default_and_force_starts_over(tmp_path):
    out = tmp_path / "tr"
    assert invoke("run", "two-response", "--quick", "--set", "steps=30", "--out", str(out)).exit_code == 0
    first = (out / "summary.json").read_text()
    assert invoke("run", "two-response", "--quick", "--set", "steps=30", "--out", str(out), "--resume").exit_code == 0
    assert (out / "summary.json").read_text() == first  # read back, not rewritten
    refused = invoke("run", "two-response", "--quick", "--set", "steps=40", "--out", str(out))
    assert refused.exit_code == 2 and "--force" in refused.output
    assert invoke("run", "two-response", "--quick", "--set", "steps=40", "--out", str(out), "--force").exit_code == 0
    assert '"steps": 40' in (out / "config.json").read_text()
