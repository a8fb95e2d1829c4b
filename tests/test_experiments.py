"""Each experiment end to end on small settings, the run-directory contract, and what every
experiment module must be: registered, a config + run + plot, importing no other experiment."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

import rlvrlab.experiments
from rlvrlab.experiments import apply_settings, experiments, get, names, resolve_config, run_experiment
from rlvrlab.experiments.base import Experiment, describe_fields
from rlvrlab.io import columns, read_table

# Small enough for the test suite, large enough that every check has something to check.
SMALL = {
    "mab": ["steps=400"],
    "contextual": ["steps=150", "eval_contexts=40", "pool=30", "record_every=5"],
    "two-response": ["steps=200"],
    "collapse": ["steps=300", "T_infs=1,3", "record_every=5"],
    "bounds": ["steps=25", "runs_per_direction=3"],
    "phase": ["lengths=1,4", "lr_points=5", "steps=25", "seeds=2", "prompts=8", "bisection=1", "workers=1"],
    "stagnation": ["lrs=1,100", "steps=30", "seeds=1", "prompts=8", "workers=1"],
    "controller": ["lengths=2", "steps=25", "prompts=8", "lrs=1,100", "bisection=1", "workers=1"],
}
VOCABULARY = {"run", "step", "J", "log_odds", "M", "delta_mu", "eta"}


# lm-grpo needs a model directory: the session's tiny pretrained model (see conftest.py)
LM_SMALL = ["steps=3", "batch_size=8", "group=4", "prompts=20", "max_new_tokens=8", "eval_every=1", "eval_samples=2",
            "tasks=add,countdown"]


PACKAGE = Path(rlvrlab.experiments.__file__).parent
MACHINERY = {"__init__", "base", "runner", "registry"}  # what experiments are made of, not experiments
EXPERIMENT_MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in MACHINERY)
ANALYSIS = {"leash", "direction"}  # end to end in tests/test_analysis_experiments.py


def test_every_experiment_module_is_registered_as_config_run_plot():
    registered = {}
    for stem in EXPERIMENT_MODULES:
        exp = importlib.import_module(f"rlvrlab.experiments.{stem}").EXPERIMENT
        assert isinstance(exp, Experiment) and get(exp.name) is exp, stem
        registered[exp.name] = stem
        assert dataclasses.is_dataclass(exp.config) and exp.config.__dataclass_params__.frozen
        assert isinstance(exp.config.quick(), exp.config) and isinstance(exp.config(), exp.config)
        assert list(inspect.signature(exp.run).parameters) == ["config", "progress", "workdir"], stem
        assert list(inspect.signature(exp.plot).parameters) == ["out"], stem
        assert exp.title and exp.description, stem
    assert sorted(registered) == sorted(names())  # no registered name without its module, and the reverse


def test_small_settings_cover_every_experiment():
    assert set(SMALL) | {"lm-grpo"} | ANALYSIS == set(names())
    assert not set(SMALL) & ANALYSIS


def _imported_modules(path: Path) -> set[str]:
    """Every module an experiment file imports, at the top or inside functions, resolved to full names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = ".".join(["rlvrlab.experiments"] + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("stem", EXPERIMENT_MODULES)
def test_no_experiment_imports_another(stem):
    others = {f"rlvrlab.experiments.{m}" for m in EXPERIMENT_MODULES if m != stem}
    imported = _imported_modules(PACKAGE / f"{stem}.py")
    assert not imported & others, f"{stem} imports {sorted(imported & others)}: move what they share into the library"
    assert "rlvrlab.experiments" not in imported  # `from rlvrlab.experiments import phase` would hide it


def test_the_import_check_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from rlvrlab.experiments.phase import phase_cell\n    from . import leash\n")
    assert {"rlvrlab.experiments.phase", "rlvrlab.experiments.leash"} <= _imported_modules(path)


def test_every_experiment_has_a_section_in_the_report(tmp_path):
    from rlvrlab.report import write_report

    for name in names():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"experiment": name, "quick": True, "seconds": 1.0, "headline": {}, "checks": [], "checks_passed": True,
             "figures": [], "tables": ["metrics.parquet"]}))
    page = write_report(tmp_path, names()).read_text()
    for name in names():
        assert f'id="{name}"' in page and get(name).title.split(":")[0] in page, name


@pytest.mark.parametrize("name", sorted(SMALL) + ["lm-grpo"])
def test_experiment_end_to_end(name, tmp_path, request):
    settings = SMALL[name] if name in SMALL else LM_SMALL + [f"model={request.getfixturevalue('tiny_base_model')}"]
    summary = run_experiment(name, tmp_path, quick=True, settings=settings)
    # The contract: config first, tables, figures, summary last.
    for f in ("config.json", "summary.json", "metrics.parquet"):
        assert (tmp_path / f).exists()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["experiment"] == name and config["quick"] is True
    assert summary["figures"], "every experiment draws at least one figure"
    for fig in summary["figures"]:
        assert (tmp_path / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["checks"], "every experiment checks what the theory says"
    theorems = [c for c in summary["checks"] if c["kind"] == "theorem"]
    failed = [c for c in theorems if not c["passed"]]
    assert not failed, failed
    assert summary["checks_passed"] is True
    table = read_table(tmp_path / "metrics.parquet")
    assert VOCABULARY <= set(table.column_names)
    cols = columns(table, ("J", "step"))
    assert np.nanmin(cols["J"]) >= 0 and np.nanmax(cols["J"]) <= 1
    assert cols["step"].min() == 0


def test_mab_checks_the_closed_form_of_app_i1(tmp_path):
    summary = run_experiment("mab", tmp_path, quick=True, settings=["steps=300", "etas=0.5,5"])
    names_ = [c["name"] for c in summary["checks"]]
    assert any("App. I.1 closed form" in n for n in names_)
    # max over steps of Delta_mu cannot exceed the quadratic's maximum K/(4(K-1)).
    assert max(summary["headline"]["max_delta_mu"]) <= summary["headline"]["max_delta_mu_closed_form"] + 1e-12


def test_finished_run_is_read_back_not_recomputed(tmp_path, monkeypatch):
    first = run_experiment("two-response", tmp_path, quick=True, settings=["steps=50"])
    exp = get("two-response")

    def boom(*a, **k):
        raise AssertionError("a finished run was recomputed")

    monkeypatch.setitem(experiments(), "two-response", dataclasses.replace(exp, run=boom))
    again = run_experiment("two-response", tmp_path, quick=True, settings=["steps=50"])
    assert again == first


def test_other_settings_in_the_same_directory_are_refused_then_forced(tmp_path):
    run_experiment("two-response", tmp_path, quick=True, settings=["steps=50"])
    with pytest.raises(ValueError, match="--force"):
        run_experiment("two-response", tmp_path, quick=True, settings=["steps=60"])
    summary = run_experiment("two-response", tmp_path, quick=True, settings=["steps=60"], force=True)
    assert json.loads((tmp_path / "config.json").read_text())["settings"]["steps"] == 60
    assert summary["checks_passed"]


def test_interrupted_run_is_run_again(tmp_path):
    run_experiment("two-response", tmp_path, quick=True, settings=["steps=50"])
    (tmp_path / "summary.json").unlink()  # as if killed before the last write
    (tmp_path / "metrics.parquet").write_bytes(b"half a file")
    summary = run_experiment("two-response", tmp_path, quick=True, settings=["steps=50"])
    assert summary["checks_passed"]
    assert read_table(tmp_path / "metrics.parquet").num_rows == 6 * 51  # 6 runs × (50 steps + final)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_settings_are_parsed_by_type():
    cfg = resolve_config("mab", settings=["steps=12", "etas=0.5, 2", "dtype=float32", "record_every=3"])
    assert (cfg.steps, cfg.etas, cfg.dtype, cfg.record_every) == (12, (0.5, 2.0), "float32", 3)
    assert apply_settings(cfg, {"steps": 7}).steps == 7


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("bogus=1", "setting 'bogus'.*allowed: the settings of this experiment: arms, steps"),
        ("steps=abc", "--set steps: got 'abc'; allowed: an integer"),
        ("dtype=float16", "--set dtype.*one of 'float32', 'float64'"),
        ("etas=", "--set etas.*comma-separated list of numbers"),
        ("steps", "--set: got 'steps'; allowed: key=value"),
        ("steps=0", "steps: got 0; allowed: an integer >= 1"),
        ("etas=0.1,-1", "etas: got -1.0; allowed: finite numbers > 0"),
        ("etas=nan", "etas: got nan; allowed: finite numbers > 0"),
        ("best_arm=100", "best_arm: got 100; allowed: an arm index in \\[0, 99\\]"),
    ],
)
def test_bad_settings_name_the_field_and_the_allowed_values(assignment, message):
    with pytest.raises(ValueError, match=message):
        resolve_config("mab", settings=[assignment])


def test_unknown_experiment_lists_the_valid_names():
    with pytest.raises(ValueError, match=f"^experiment: got 'nope'; allowed: {re.escape(', '.join(sorted(names())))}$"):
        get("nope")
    assert len(names()) == len(EXPERIMENT_MODULES)


def test_lm_grpo_takes_task_names_and_files(tmp_path):
    path = tmp_path / "add.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(3)))
    assert resolve_config("lm-grpo", settings=[f"tasks=arith,{path}"]).tasks == ("arith", str(path))
    with pytest.raises(ValueError, match=r"^tasks: got .*; allowed: tasks with distinct names \(a file is named by its stem\)"):
        resolve_config("lm-grpo", settings=[f"tasks=add,{path}"])
    with pytest.raises(ValueError, match=r"^task: got 'x.csv'; allowed: a task name \(add, arith, countdown\) or a .jsonl"):
        resolve_config("lm-grpo", settings=["tasks=add,x.csv"])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_setting_is_documented(name):
    for field, _, _, help_text in describe_fields(get(name).settings()):
        assert help_text, f"{name}.{field} has no help"
