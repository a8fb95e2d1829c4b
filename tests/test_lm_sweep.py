"""Grids of GRPO runs (rlvrlab.lm.sweep, rlvrlab.integrations.sweep.lm_sweep, `rlvrlab lm sweep`):
every run once in its own run directory, skipped when finished, resumed when interrupted, a
diverging run recorded without stopping the others, bad grids refused before anything is written.

A tiny random Qwen2 (as in test_lm_trainer) answers one-digit sums ("3+4=" -> 7) from a
question-answer file: its random completions end in the right digit often enough for groups with
reward variance, so the runs have gradients and diagnostics.
"""

from __future__ import annotations

import json
import math
import shutil

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from rlvrlab.cli import app
from rlvrlab.integrations.sweep import lm_sweep
from rlvrlab.lm.sweep import expand_grid, parse_assignments, run_name, run_state, runs_table, train_run

runner = CliRunner()
NAMES = ["lr=0.01,seed=0", "lr=0.01,seed=1", "lr=0.03,seed=0", "lr=0.03,seed=1"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "digits.jsonl"
    path.write_text("".join(json.dumps({"question": f"{a}+{b}=", "answer": str(a + b)}) + "\n"
                            for a in range(10) for b in range(10 - a)))
    return path


@pytest.fixture(scope="module")
def grid(tiny_model, digits):
    return {"model": str(tiny_model), "task": str(digits), "prompts": 40, "batch_size": 16, "group": 4, "max_new_tokens": 6,
            "steps": 2, "eval_every": 1, "eval_samples": 2, "checkpoint_every": 1, "lr": [1e-2, 3e-2], "seed": [0, 1]}


@pytest.fixture(scope="module")
def swept(grid, tmp_path_factory):
    """The 2 x 2 grid, swept once on the local backend with two workers."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    table = lm_sweep(grid, out, backend="local", workers=2, threads=1)
    return out, table


def _metrics(path):
    return pq.read_table(path / "metrics.parquet")


def assert_same_table(ta, tb):
    """Equal column for column, NaN equal to NaN (Table.equals says NaN != NaN)."""
    assert ta.column_names == tb.column_names
    for name in ta.column_names:
        a, b = ta.column(name).to_pylist(), tb.column(name).to_pylist()
        same = [x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) for x, y in zip(a, b)]
        assert len(a) == len(b) and all(same), (name, a, b)


def assert_same_metrics(a, b):
    assert_same_table(_metrics(a), _metrics(b))


# --- the grid -----------------------------------------------------------------------------------


def test_a_grid_expands_in_field_order_with_stable_names(tiny_model):
    grid = {"seed": [0, 1], "lr": [1e-3, 3e-4], "model": str(tiny_model), "steps": 60}
    runs = expand_grid(grid)
    assert [n for n, _ in runs] == ["lr=1e-3,seed=0", "lr=1e-3,seed=1", "lr=3e-4,seed=0", "lr=3e-4,seed=1"]
    assert [(c.lr, c.seed, c.steps) for _, c in runs] == [(1e-3, 0, 60), (1e-3, 1, 60), (3e-4, 0, 60), (3e-4, 1, 60)]
    assert [n for n, _ in expand_grid(dict(reversed(grid.items())))] == [n for n, _ in runs]  # file order is irrelevant
    assert run_name({"task": "/data/gsm8k.jsonl", "preset": "dr-grpo", "lr": 1.0, "diagnostics": False}) == \
        "task=gsm8k.jsonl,preset=dr-grpo,lr=1.0,diagnostics=false"
    assert expand_grid({"model": "m", "lr": 1})[0] == ("run", expand_grid({"model": "m", "lr": 1.0})[0][1])


def test_command_line_values_are_toml_values_or_bare_words():
    assert parse_assignments(["steps=60", "model=/a/b", "diagnostics=false"], ["lr=1e-4, 3e-4", "task=add,arith"]) == \
        {"steps": 60, "model": "/a/b", "diagnostics": False, "lr": [1e-4, 3e-4], "task": ["add", "arith"]}


# --- running it ---------------------------------------------------------------------------------


def test_every_run_once_in_its_own_run_directory(swept, grid):
    out, table = swept
    assert table.column("run").to_pylist() == NAMES
    assert table.column("status").to_pylist() == ["finished"] * 4
    for name, config in expand_grid(grid):
        run = out / name
        assert json.loads((run / "config.json").read_text())["settings"]["lr"] == config.lr
        assert (run / "checkpoints" / "latest.pt").exists() and (run / "model" / "model.safetensors").exists()
        assert _metrics(run).column("step").to_pylist() == [0, 1, 2]
        record = json.loads((run / "sweep.json").read_text())
        assert (record["status"], record["attempts"], record["threads"]) == ("finished", 1, 1) and record["seconds"] > 0
    assert_same_table(pq.read_table(out / "runs.parquet"), table)
    assert not list(out.glob("**/*.tmp")) and not (out / ".preflight").exists()


def test_runs_table_is_what_the_run_directories_hold(swept, grid):
    out, table = swept
    for row in table.to_pylist():
        run = out / row["run"]
        settings = json.loads((run / "config.json").read_text())["settings"]
        assert {k: row[k] for k in settings} == settings
        metrics = _metrics(run).to_pydict()
        acc = [a for a in metrics["eval/accuracy"] if not math.isnan(a)]
        assert (row["step"], row["accuracy_start"], row["accuracy_end"]) == (metrics["step"][-1], acc[0], acc[-1])
        assert row["M_end"] == metrics["gap/M"][-1] and row["M_end"] > 0  # the runs had gradients
        ratios = [r for r in metrics["gap/crit_ratio"] if not math.isnan(r)]
        assert row["median_crit_ratio"] == pytest.approx(float(torch.tensor(ratios).median()))
        assert row["seconds"] == json.loads((run / "sweep.json").read_text())["seconds"]


def test_a_second_sweep_trains_nothing_again(swept, grid):
    out, table = swept
    files = [out / n / f for n in NAMES for f in ("metrics.parquet", "model/model.safetensors", "checkpoints/latest.pt")]
    before = [f.stat().st_mtime_ns for f in files]
    seen = []
    again = lm_sweep(grid, out, workers=2, on_run=lambda row, trained: seen.append((row["run"], trained)))
    assert seen == [(n, False) for n in NAMES]
    assert [f.stat().st_mtime_ns for f in files] == before
    assert_same_table(again, table)
    # the same grid from a TOML file, through the command line
    toml = out.parent / "grid.toml"
    toml.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in grid.items()) + "\n")
    result = runner.invoke(app, ["lm", "sweep", str(toml), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("(done before)") == 4 and "4 runs: 4 finished" in result.output
    assert [f.stat().st_mtime_ns for f in files] == before


def test_an_interrupted_sweep_resumes_to_the_metrics_of_an_uninterrupted_one(swept, grid, tmp_path):
    out = tmp_path / "out"
    runs = dict(expand_grid(grid))

    class Killed(BaseException):
        """A kill: nothing is recorded (KeyboardInterrupt and SystemExit pass through train_run the same way)."""

    def stop(exc):
        def hook(n):
            raise exc
        return hook

    with pytest.raises(Killed):
        train_run(runs[NAMES[0]], out / NAMES[0], on_step=stop(Killed()))
    failed = train_run(runs[NAMES[1]], out / NAMES[1], on_step=stop(RuntimeError("out of disk")))
    assert (failed["status"], failed["message"]) == ("failed", "RuntimeError: out of disk")
    table = runs_table(list(runs.items()), out)
    assert table.column("status").to_pylist() == ["interrupted", "failed", "pending", "pending"]
    assert table.column("step").to_pylist() == [1, 1, 0, 0]

    steps = []  # the killed run goes on from its checkpoint at step 1: one step left
    train_run(runs[NAMES[0]], out / NAMES[0], on_step=steps.append)
    assert steps == [1]
    done = lm_sweep(grid, out, workers=2)  # resumes the failed one, runs the rest
    assert done.column("status").to_pylist() == ["finished"] * 4
    assert done.column("attempts").to_pylist() == [1, 2, 1, 1]
    for name in NAMES:
        assert_same_metrics(out / name, swept[0] / name)


def test_a_diverging_run_is_recorded_and_the_others_go_on(grid, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["lm", "sweep", "--out", str(out), "--grid", "lr=1e9,1e-2", "--workers", "1",
                                 *[f"--set={k}={json.dumps(v)}" for k, v in grid.items() if k not in ("lr", "seed")]])
    assert result.exit_code == 0, result.output
    assert "lr=1e9: the loss or the model became non-finite" in result.output and "2 runs: 1 diverged, 1 finished" in result.output
    row = pq.read_table(out / "runs.parquet").to_pylist()[0]
    assert row["status"] == "diverged" and "learning rate 1e+09" in row["message"]
    assert run_state(out / "lr=1e9", expand_grid({**grid, "lr": 1e9, "seed": 0})[0][1])["status"] == "diverged"
    again = lm_sweep({**grid, "lr": [1e9, 1e-2], "seed": 0}, out)  # final: not tried again
    assert again.column("attempts").to_pylist() == [1, 1] and again.column("status").to_pylist() == ["diverged", "finished"]


def test_ray_backend_against_a_local_instance(swept, grid, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        table = lm_sweep(grid, tmp_path / "out", backend="ray", workers=2)
    finally:
        ray.shutdown()
    assert table.column("status").to_pylist() == ["finished"] * 4
    for name in NAMES:
        assert_same_metrics(tmp_path / "out" / name, swept[0] / name)
    assert_same_table(table.drop_columns(["seconds"]), swept[1].drop_columns(["seconds"]))


# --- bad input ----------------------------------------------------------------------------------


def _refused(args, message, out):
    result = runner.invoke(app, ["lm", "sweep", *args, "--out", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["--grid", "lrr=1,2"], "grid: got 'lrr'; allowed: the settings of TrainConfig (model, task"),
    (["--grid", "lr=abc"], "lr: got 'abc'; allowed: a number"),
    (["--grid", "lr="], "lr: got []; allowed: a non-empty list of values"),
    (["--grid", "seed=0,0"], "seed: got [0, 0]; allowed: distinct values"),
    (["--set", "steps=1.5"], "steps: got 1.5; allowed: an integer"),
    (["--set", "diagnostics=yes"], "diagnostics: got 'yes'; allowed: true or false"),
    (["--grid", "schedule=constant,linear"], "schedule: got 'linear'; allowed: constant, cosine, gap-adaptive"),
    (["--grid", "batch_size=8,6"], "batch_size: got 6; allowed: a multiple of group = 4"),
    (["--grid", "task=add,nope"], "task: got 'nope'; allowed: a task name"),
    (["--set", "prompts=2"], "batch_size: got 8; allowed: at most group × 1"),  # the trainer's own check, before any run
    (["--backend", "slurm"], "backend: got 'slurm'; allowed: local, ray"),
    (["--workers", "0"], "workers: got 0; allowed: an integer >= 1"),
    (["--threads", "0"], "threads: got 0; allowed: an integer >= 1"),
])
def test_bad_grids_are_refused_before_anything_is_written(tiny_model, tmp_path, args, message):
    base = ["--set", f"model={tiny_model}", "--set", "batch_size=8", "--set", "group=4"]
    if any(a.startswith("batch_size") for a in args):
        base = base[:2] + base[4:]
    _refused(base + args, message, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_or_unreadable_grids(tmp_path):
    _refused([], "grid: got {}; allowed: settings of TrainConfig, at least model", tmp_path / "out")
    (tmp_path / "g.toml").write_text('model = "m"\n[axes]\nlr = [1e-3]\n')
    _refused([str(tmp_path / "g.toml")], "grid: got 'axes'; allowed: the settings of TrainConfig", tmp_path / "out")
    (tmp_path / "g.toml").write_text("lr = [1e-3\n")
    _refused([str(tmp_path / "g.toml")], "allowed: a TOML file of settings (", tmp_path / "out")
    _refused([str(tmp_path / "none.toml")], "grid: got", tmp_path / "out")
    _refused(["--set", "model=/nonexistent"], "model: got '/nonexistent'; allowed: a directory", tmp_path / "out")
    (tmp_path / "file").touch()
    _refused(["--set", "model=m"], "--out: got", tmp_path / "file" / "out")
    assert not (tmp_path / "out").exists()


def test_a_run_directory_of_other_settings_is_never_touched(swept, grid, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(swept[0], out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(ValueError, match=r"this run has other settings: steps=2 there, 3 now"):
        lm_sweep({**grid, "steps": 3}, out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
