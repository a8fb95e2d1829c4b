"""Each experiment end to end on small settings, the run-directory contract, and what every
experiment module must be: registered, a config + run + plot, importing no other experiment."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import math
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
    "stagnation": ["lrs=1,100", "steps=30", "seeds=1", "prompts=8", "workers=1", "sampled_Gs=4", "sampled_lrs=10,1000",
                   "sampled_J0s=0.95", "sampled_steps=20", "sampled_seeds=2", "sampled_instances=1"],
    "controller": ["lengths=2", "steps=25", "prompts=8", "lrs=1,100", "bisection=1", "workers=1"],
    "success-scaling": ["J_grid=0.5,0.9,0.98", "prompts=8", "eta_points=29", "bisection=10", "J0s=0.8,0.95", "lr_points=5", "steps=15", "lr_bisection=1"],
    "multi-prompt": ["steps=30", "condition_steps=40", "eta_points=3"],
    "length-penalty": ["T_infs=4,8", "eos_points=4", "seeds=1", "feature_kinds=onehot", "eta_points=2", "steps=3", "position_T_infs=3,4"],
}
VOCABULARY = {"run", "step", "J", "log_odds", "M", "delta_mu", "eta"}


# lm-grpo needs a model directory: the session's tiny pretrained model (see conftest.py)
LM_SMALL = ["steps=3", "batch_size=8", "group=4", "prompts=20", "max_new_tokens=8", "eval_every=1", "eval_samples=2", "fresh_samples=2",
            "tasks=add,countdown"]
# warning-bench trains a corpus of runs through the LM sweep: the smallest grid whose labels and detectors run
WB_SMALL = ["tasks=add", "presets=grpo", "lrs=1e-4,3e-2", "seeds=0,1", "tune_seeds=0", "steps=3", "batch_size=8", "group=4",
            "prompts=20", "max_new_tokens=8", "eval_every=1", "eval_samples=2", "fresh_samples=2", "workers=1"]
# lr-oracle: both grids on the session's tiny model, two rates, one probe step, one adaptive start
LO_SMALL = ["tasks=add", "lrs=1e-4,1e-3,3e-2", "seeds=0,1", "steps=3", "batch_size=8", "group=4", "prompts=20", "max_new_tokens=8",
            "eval_every=1", "eval_samples=2", "fresh_samples=0", "repeats=1,2", "length_presets=grpo", "length_seeds=0",
            "length_steps=3", "probe_steps=1", "probe_fresh=2", "probe_tuned_on=1", "adaptive_starts=3e-2", "probe_every=2",
            "adaptive_seeds=2", "probe_rescan=lower",
            "workers=1"]
LM = {"lm-grpo": LM_SMALL, "warning-bench": WB_SMALL, "lr-oracle": LO_SMALL}


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
    assert set(SMALL) | set(LM) | ANALYSIS == set(names())
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


@pytest.mark.parametrize("name", sorted(SMALL) + sorted(LM))
def test_experiment_end_to_end(name, tmp_path, request):
    settings = SMALL[name] if name in SMALL else LM[name] + [f"model={request.getfixturevalue('tiny_base_model')}"]
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
    with pytest.raises(ValueError, match=r"^task: got 'x.csv'; allowed: a task name \(add, arith, countdown\), optionally with integer options \(add:repeat=4\), or a .jsonl"):
        resolve_config("lm-grpo", settings=["tasks=add,x.csv"])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_setting_is_documented(name):
    for field, _, _, help_text in describe_fields(get(name).settings()):
        assert help_text, f"{name}.{field} has no help"


# --- phase: cells batched by instance -----------------------------------------------------------------------


def _same_floats(a, b) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def _products_in_blocks_of_tile() -> bool:
    """Whether this machine's matrix products take rows in blocks of phase.TILE, the rest one by one
    (MKL here): where they do, phase's batched runs are its cells' runs bit for bit."""
    import torch

    from rlvrlab.experiments.phase import TILE

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(TILE + 2, 20, generator=g, dtype=torch.float64), torch.randn(20, 640, generator=g, dtype=torch.float64)
    whole = a @ b
    return (torch.backends.mkl.is_available() and torch.equal(whole[:TILE], a[:TILE] @ b)
            and all(torch.equal(whole[i], (a[i:i + 1] @ b)[0]) for i in range(TILE, TILE + 2))
            and not torch.equal(whole[0], (a[:1] @ b)[0]))


def _phase_cell_alone(params: dict):
    """A cell computed by itself, as phase did before batching: its grid in one simulate, then one
    simulate per bisection step (critical_rate): (trajectory, final J (L,), critical rate)."""
    import torch

    from rlvrlab.analysis import critical_rate
    from rlvrlab.experiments.phase import _direction
    from rlvrlab.simulate import simulate
    from rlvrlab.simulate.instances import initial_theta, token_bandit

    lrs = np.geomspace(params["lr_min"], params["lr_max"], params["lr_points"]).tolist()

    def train(rates):
        policy, reward, beta = token_bandit(params["seed"], params["T"], prompts=params["prompts"], dim=params["dim"],
                                            vocab=params["vocab"], rho=params["rho"])
        theta0 = initial_theta(policy, reward, beta, params["J0"]).expand(len(rates), -1).clone()
        return simulate(policy, reward, theta0, steps=params["steps"], direction=_direction(params),
                        step_size=torch.tensor(rates, dtype=torch.float64), generator=torch.Generator().manual_seed(1000 + params["seed"]),
                        record_every=max(1, params["steps"] // 50))

    traj = train(lrs)
    final = traj.metrics["J"][-1].numpy()
    refine = lambda lr: bool(train([lr]).metrics["J"][-1, 0] >= params["target_J"])  # noqa: E731
    return traj, final, critical_rate(lrs, final >= params["target_J"], refine, bisection=params["bisection"])


@pytest.mark.parametrize("lr_points, J0s", [(13, (0.2, 0.5)), (6, (0.1, 0.3, 0.6)), (7, (0.3, 0.5)), (3, (0.4, 0.6)),
                                            (9, (0.1, 0.2, 0.4, 0.6, 0.8))])
def test_phase_group_equals_its_cells_one_at_a_time(lr_points, J0s):
    """Grids and bisections batched over the J0s of an instance give each cell's tables as the cell
    alone gives them: the same critical rates, flags and final J, and trajectories (bit for bit where
    matrix products take rows in blocks as phase's layout assumes; elsewhere to rounding)."""
    import torch

    from rlvrlab.experiments.phase import PhaseConfig, phase_cell, phase_group, phase_groups

    config = PhaseConfig(presets=("reinforce", "grpo"), lengths=(1, 4), J0s=J0s, lr_min=0.1, lr_max=1e6, lr_points=lr_points,
                         steps=60, seeds=1, prompts=12, bisection=3)
    tol = 0.0 if _products_in_blocks_of_tile() else 1e-10
    bracketed = 0
    for group in phase_groups(config):
        got = phase_group(group)
        for j, J0 in enumerate(group["J0s"]):
            cell = dict({k: v for k, v in group.items() if k != "J0s"}, J0=J0)
            traj, final, crit = _phase_cell_alone(cell)
            rows = {name: t.filter(np.asarray(t.column("J0").to_pylist()) == J0) for name, t in got.items()}
            (row,) = rows["critical"].to_pylist()
            assert _same_floats((row["lr"], row["lr_crit_low"], row["lr_crit_high"]), crit), (row, crit)
            bracketed += math.isfinite(crit.rate)
            np.testing.assert_allclose(rows["grid"].column("final_J").to_numpy(), final, rtol=tol, atol=tol)
            assert rows["grid"].column("converged").to_pylist() == (final >= cell["target_J"]).tolist()
            for name, m in traj.metrics.items():
                got_m = rows["trajectories"].column(name).to_numpy(zero_copy_only=False)
                np.testing.assert_allclose(got_m, m.T.reshape(-1).numpy(), rtol=tol, atol=tol, err_msg=name)
        if len(group["J0s"]) > 1:  # phase_cell is a group of one
            one = phase_cell(dict({k: v for k, v in group.items() if k != "J0s"}, J0=group["J0s"][1]))
            ((a,), (b,)) = (one["critical"].to_pylist(), [r for r in got["critical"].to_pylist() if r["J0"] == group["J0s"][1]])
            assert _same_floats(a.values(), [b[k] for k in a]), (a, b)
    assert bracketed >= 2 or lr_points < 5  # the bisections ran


def test_phase_run_writes_the_cells_of_a_sweep_over_cells(tmp_path):
    """run sweeps over groups of cells, then writes every table cell by cell in the order of
    phase_cells, each cell's settings first, as a sweep over the cells themselves would."""
    from rlvrlab.experiments.phase import PhaseConfig, phase_cell, phase_cells
    from rlvrlab.integrations.sweep import run_sweep

    settings = ["lengths=1,2", "J0s=0.2,0.5", "lr_points=5", "steps=20", "seeds=2", "prompts=6", "bisection=2", "workers=1"]
    run_experiment("phase", tmp_path / "run", quick=True, settings=settings)
    config = resolve_config("phase", quick=True, settings=settings)
    assert isinstance(config, PhaseConfig)
    by_cell = run_sweep(phase_cell, phase_cells(config), tmp_path / "cells", workers=1)
    for name, file in (("critical", "critical"), ("grid", "grid"), ("trajectories", "metrics")):
        written, want = read_table(tmp_path / "run" / f"{file}.parquet"), by_cell[name]
        assert written.column_names == want.column_names and written.num_rows == want.num_rows, name
        for col in want.column_names:  # NaN where NaN (censored rates)
            np.testing.assert_array_equal(written.column(col).to_numpy(zero_copy_only=False),
                                          want.column(col).to_numpy(zero_copy_only=False), err_msg=f"{name}.{col}")


def test_phase_refuses_a_J0_given_twice():
    from rlvrlab.experiments.phase import PhaseConfig

    with pytest.raises(ValueError, match=r"^J0s: got \[0.2, 0.5, 0.2\]; allowed: distinct numbers in \(0, 1\)$"):
        PhaseConfig(J0s=(0.2, 0.5, 0.2))


def test_phase_tolerates_the_prompts_the_target_can_lose():
    from rlvrlab.experiments.phase import tolerated_prompts

    assert tolerated_prompts(40, 0.9) == 4  # 36/40 = 0.9 still converges; 40·0.1 rounds above 4 in floating point
    assert tolerated_prompts(24, 0.9) == 2
    assert tolerated_prompts(8, 0.95) == 0


def test_phase_prediction_stats_by_hand():
    from rlvrlab.experiments.phase import prediction_stats

    measured = np.array([100.0, 100.0, 100.0, 100.0, math.nan, math.nan])
    low = np.array([90.0, 90.0, 90.0, 90.0, 1e5, 1e5])
    predicted = np.array([140.0, 60.0, 30.0, math.inf, 8e4, 1e3])  # ratios 1.4, 0.6, 0.3, none; two censored cells
    st = prediction_stats(predicted, measured, low)
    assert st["cells"] == 6 and st["cells_measured"] == 4 and st["cells_predicted"] == 5
    assert st["within_1.5x"] == 0.25 and st["within_2x"] == 0.5  # 1.4 | 1.4 and 0.6; inf counts as outside
    assert math.isclose(st["ratio_min"], 0.3) and math.isclose(st["ratio_max"], 1.4) and math.isclose(st["ratio_median"], 0.6)
    assert st["censored_above_grid"] == 2 and st["censored_consistent"] == 1  # 8e4 >= 1e5/1.5; 1e3 is not


def test_phase_refuses_a_bad_predict_fraction():
    from rlvrlab.experiments.phase import PhaseConfig

    with pytest.raises(ValueError, match=r"^predict_fraction: got 0; allowed: a number in \(0, 1\]$"):
        PhaseConfig(predict_fraction=0)


def test_controller_compares_each_adaptive_contender_with_the_oracle_cell_by_cell(tmp_path):
    from rlvrlab.experiments.controller import ADAPTIVE

    summary = run_experiment("controller", tmp_path / "run", quick=True, settings=SMALL["controller"])
    out = read_table(tmp_path / "run" / "outcomes.parquet")
    who = np.asarray(out.column("contender").to_pylist())
    cols = columns(out, ("final_J", "steps_to_target"))
    best_J, best_steps = cols["final_J"][who == "grpo-best"], cols["steps_to_target"][who == "grpo-best"]
    for c in ADAPTIVE:
        vs = summary["headline"]["vs_oracle"][c]
        np.testing.assert_allclose(vs["final_J_minus_oracle"], cols["final_J"][who == c] - best_J)
        steps = cols["steps_to_target"][who == c]
        within = [s <= 1.5 * b for s, b in zip(steps, best_steps)]  # inf <= inf: neither reaches the target
        assert vs["cells_steps_within_1.5x"] == float(np.mean(within))
    assert {"cross-prompt", "capped-line"} <= set(who.tolist())


def test_controller_runs_the_instances_from_first_seed(tmp_path):
    from rlvrlab.experiments.controller import ControllerConfig

    run_experiment("controller", tmp_path / "run", quick=True, settings=[*SMALL["controller"], "first_seed=3", "seeds=2"])
    seeds = set(read_table(tmp_path / "run" / "outcomes.parquet").column("seed").to_pylist())
    assert seeds == {3, 4}
    with pytest.raises(ValueError, match="first_seed"):
        ControllerConfig(first_seed=-1)


# --- phase: the slope difference and the independence of its presets (issue 15) ------------------------------


def _within_slope_by_lstsq(x, y, groups):
    """The plain reference: least squares on [log x, one indicator column per group], the slope's
    t-interval from the residual variance with n - #groups - 1 degrees of freedom."""
    from scipy.stats import t

    labels = sorted(set(groups))
    X = np.column_stack([np.log(x)] + [[float(g == lab) for g in groups] for lab in labels])
    coef, *_ = np.linalg.lstsq(X, np.log(y), rcond=None)
    resid = np.log(y) - X @ coef
    dof = len(y) - X.shape[1]
    cov = np.linalg.inv(X.T @ X) * (resid @ resid) / dof
    half = t.ppf(0.975, dof) * math.sqrt(cov[0, 0])
    return coef[0], coef[0] - half, coef[0] + half


def test_loglog_slope_within_groups_is_least_squares_with_an_intercept_per_group():
    from rlvrlab.analysis import loglog_slope

    rng = np.random.default_rng(0)
    x = np.tile([1.0, 2.0, 4.0, 8.0, 16.0], 3)
    groups = np.repeat([0, 1, 2], 5)
    y = np.exp(np.array([0.0, 2.0, -1.0])[groups] - 0.7 * np.log(x) + 0.1 * rng.standard_normal(15))
    y[3] = math.nan  # censored: left out
    x, y, groups = np.append(x, 3.0), np.append(y, 5.0), np.append(groups, 7)  # a group of one point: left out
    fit = loglog_slope(x, y, groups=groups)
    keep = np.isfinite(y) & (groups != 7)
    want = _within_slope_by_lstsq(x[keep], y[keep], groups[keep].tolist())
    np.testing.assert_allclose([fit.slope, fit.low, fit.high], want, rtol=1e-10)
    assert fit.n == 14
    pooled = loglog_slope(x[keep], y[keep])
    assert fit.high - fit.low < (pooled.high - pooled.low) / 3  # the group shifts no longer widen the interval
    with pytest.raises(ValueError, match=r"^groups: got '3 labels'; allowed: one label per point \(16\)"):
        loglog_slope(x, y, groups=[0, 1, 2])


def test_phase_slope_difference_is_the_paired_fit_of_the_log_ratio():
    import pyarrow as pa

    from rlvrlab.experiments.phase import slope_difference

    Ts = [1, 2, 4, 8]
    rows = []
    for seed, scale in enumerate((1.0, 3.0)):  # an instance shifts both presets' rates: the pairing cancels it ...
        for T in Ts:
            rows.append(("grpo", T, 0.5, seed, scale * 5.0 * (1.1 if T == 4 else 1.0) * (2.0 if seed else 1.0)))
            rows.append(("reinforce", T, 0.5, seed, scale * 5.0 / T))  # ... and an intercept per instance takes the rest
            rows.append(("reinforce", T, 0.2, seed, 1.0))  # another J0: not paired
    rows.append(("grpo", 16, 0.5, 0, math.nan))  # censored: its pair is left out
    rows.append(("reinforce", 16, 0.5, 0, 0.3))
    table = pa.table(dict(zip(("preset", "T", "J0", "seed", "lr"), map(list, zip(*rows)))))
    got = slope_difference(table, "grpo", "reinforce", 0.5)
    T = np.array(Ts * 2, dtype=float)
    ratio = T * np.array([1.1 if t == 4 else 1.0 for t in Ts] * 2) * np.repeat([1.0, 2.0], 4)
    slope, low, high = _within_slope_by_lstsq(T, ratio, [0] * 4 + [1] * 4)
    assert got["cells_paired"] == 8 and 0.9 < slope < 1.1
    np.testing.assert_allclose([got["slope"], *got["ci95"]], [slope, low, high], rtol=1e-9)
    assert math.isclose(got["ci95_width"], high - low, rel_tol=1e-9)
    assert slope_difference(table, "grpo", "dr-grpo", 0.5)["cells_paired"] == 0


def test_phase_presets_whose_expected_updates_are_rescalings_of_each_other():
    """Why Dr. GRPO's slope is not independent of REINFORCE's and grpo-sum's is: with every response
    T tokens long, Dr. GRPO's expected update is REINFORCE's / N and grpo-sum's is GRPO's × T, while
    grpo-sum / REINFORCE is 1/σ_c per prompt (GRPO's), which moves with J_c along a run."""
    import torch

    from rlvrlab.experiments.phase import _preset
    from rlvrlab.simulate.instances import initial_theta, token_bandit
    from rlvrlab.updates import get_preset

    T, N = 4, 16.0
    policy, reward, beta = token_bandit(0, T, prompts=5, dim=3, vocab=4, rho=0.5)
    model, theta = policy.bind(reward), initial_theta(policy, reward, beta, 0.3)

    def update(name, weights=torch.full((1, 5), 0.2, dtype=torch.float64)):
        base, overrides = _preset(name, N)
        return model.expected_update(theta, weights, get_preset(base, **overrides))

    torch.testing.assert_close(update("dr-grpo") * N, update("reinforce"))
    torch.testing.assert_close(update("grpo-sum"), T * update("grpo"))
    J = model.masses(theta)[0].exp()[0]  # (C,)
    for c in range(5):  # prompt by prompt, grpo-sum = REINFORCE / σ_c, σ_c = sqrt(J_c(1 - J_c)): a weight that moves with J_c
        w = torch.zeros(1, 5, dtype=torch.float64)
        w[0, c] = 1.0
        sigma = float((J[c] * (1 - J[c])).sqrt())
        torch.testing.assert_close(update("grpo-sum", w), update("reinforce", w) / sigma)  # exact: no std_eps in expectation


def test_phase_refuses_a_bad_max_ci_width_and_names_grpo_sum():
    from rlvrlab.experiments.phase import PhaseConfig

    with pytest.raises(ValueError, match=r"^max_ci_width"):
        PhaseConfig(max_ci_width=0.0)
    with pytest.raises(ValueError, match=r"^presets: got 'grpo-mean'.*grpo-sum"):
        PhaseConfig(presets=("grpo-mean",))
