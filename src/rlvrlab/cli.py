"""The ``rlvrlab`` command: list, run and reproduce the experiments.

A user mistake (an unknown name, a bad --set, an --out that cannot be written, a usage error such
as ``--lr abc``) prints one line naming the problem and the allowed values and exits with status 2,
never a traceback. ``run`` and ``reproduce`` exit with status 1 when a theorem check fails.
"""

from __future__ import annotations

import functools
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer._click import exceptions as click_exceptions
from typer.core import TyperGroup

from rlvrlab import _checks
from rlvrlab.analysis.decoding import CRITERIA, MODES
from rlvrlab.experiments import experiments, names, resolve_config, run_experiment
from rlvrlab.experiments.base import describe_fields
from rlvrlab.lm.config import TrainConfig
from rlvrlab.lm.tasks import TASKS
from rlvrlab.report import write_report
from rlvrlab.updates import PRESETS

SCHEDULES = typing.get_args(typing.get_type_hints(TrainConfig)["schedule"])
out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class _OneLineErrors(TyperGroup):
    """Typer's usage errors (``--lr abc``, an unknown option, a missing argument) on one line, as
    the library's own errors are, instead of a usage box; the exit status stays 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)  # an Exit comes back as its code
        except click_exceptions.ClickException as err:
            where = f" (see '{err.ctx.command_path} --help')" if getattr(err, "ctx", None) is not None else ""
            message = " ".join(err.format_message().split()).rstrip(".")
            err_console.print(f"[bold red]rlvrlab:[/] {escape(message + where)}", highlight=False, markup=True)
            sys.exit(err.exit_code)
        except typer.Abort:  # Ctrl-C at a prompt
            err_console.print("Aborted.")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="rlvrlab: the optimization dynamics of RL with verifiable rewards (Gradient Gap, step-size thresholds).")


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """ValueError from the library is a user mistake: one line on stderr, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            err_console.print(f"[bold red]rlvrlab:[/] {escape(str(err))}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper


class RichProgress:
    """The experiments' progress interface on a rich progress bar."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def task(self, description: str, total: int) -> Callable[[int], None]:
        task_id = self.progress.add_task(description, total=total)
        return lambda n: self.progress.advance(task_id, n)


def _progress() -> Progress:
    """A progress bar on a terminal; none in a pipe or a log (where it would only leave a blank line)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err_console, transient=True, disable=not err_console.is_terminal)


def _print_checks(name: str, summary: dict[str, Any], out: Path) -> bool:
    table = Table(title=f"{name}: {summary['title']}", show_lines=False)
    for col in ("", "kind", "check", "measured"):
        table.add_column(col, overflow="fold")
    ok = True
    for c in summary["checks"]:
        if c["kind"] == "theorem":
            mark = "[green]PASS[/]" if c["passed"] else "[red]FAIL[/]"
            ok &= c["passed"]
        else:
            mark = "[green]seen[/]" if c["passed"] else "[yellow]not seen[/]"
            mark = mark if c.get("enough", True) else "[dim]not enough data[/]"
        table.add_row(mark, c["kind"], c["name"], c["measured"])
    out_console.print(table)
    out_console.print(f"results: {out}  ({summary['seconds']:.1f} s)")
    return ok


@app.command("list")
@_user_errors
def list_experiments(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show every setting of every experiment.")) -> None:
    """Name every experiment (and with -v its settings and defaults)."""
    for name, exp in experiments().items():
        out_console.print(f"[bold]{name}[/]  {exp.title}", highlight=False)
        if verbose:
            table = Table(show_header=True, box=None, padding=(0, 2))
            for col in ("setting", "type", "default", "meaning"):
                table.add_column(col, overflow="fold")
            for row in describe_fields(exp.settings()):
                table.add_row(*row)
            out_console.print(table)


def _print_settings(config: Any, command: str) -> None:
    """Every field of a config dataclass, one per line: name, type, default, doc (the keys of --set)."""
    rows = [("setting", "type", "default", "meaning"), *describe_fields(config)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out_console.print(f"{command} --set key=value takes these settings of {type(config).__name__}:", highlight=False, markup=False)
    for row in rows:
        out_console.print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3],
                          highlight=False, markup=False)


def _help_settings(make: Callable[[], Any], config_name: str, command: str) -> Any:
    """An eager --help-settings flag: print every setting of the config ``make()`` returns, and exit."""

    def show(value: bool) -> None:
        if value:
            _print_settings(make(), command)
            raise typer.Exit()

    return typer.Option(False, "--help-settings", is_eager=True, expose_value=False, callback=show,
                        help=f"Print every setting of {config_name} (name, type, default, meaning: the keys of --set) and exit.")


def _check_task(option: str, task: str) -> None:
    """A task name, or a question-answer file that loads (checked before any model is loaded), by
    the one resolver every caller uses."""
    from rlvrlab.lm.tasks import load_task

    load_task(task, name=option)


_TASK_HELP = f"A task ({', '.join(TASKS)}) or a .jsonl / .parquet question-answer file."


@app.command()
@_user_errors
def run(
    name: str = typer.Argument(..., help=f"Experiment: {', '.join(names())} (see `rlvrlab list`)."),
    quick: bool = typer.Option(False, "--quick", help="Small settings that finish in seconds."),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/NAME)."),
    settings: list[str] | None = typer.Option(None, "--set", help="Override a setting: --set key=value (repeatable; "
                                              "`rlvrlab list -v` shows them)."),
    resume: bool = typer.Option(True, "--resume/--force",
                                help="--resume (default): a finished run with the same settings is read back, an interrupted one "
                                     "rerun; --force: start over, also where OUT holds a run of other settings."),
) -> None:
    """Run one experiment into its run directory."""
    force = not resume
    resolve_config(name, quick, settings or [])  # validate before any output
    out = out or Path("runs") / name
    _checks.writable_dir("--out", out)
    with _progress() as progress:
        summary = run_experiment(name, out, quick=quick, settings=settings or [], force=force, progress=RichProgress(progress))
    if not _print_checks(name, summary, out):
        raise typer.Exit(1)


@app.command()
@_user_errors
def reproduce(
    quick: bool = typer.Option(False, "--quick", help="Small settings: the whole reproduction in about a minute."),
    out: Path = typer.Option(Path("runs/reproduce"), "--out", help="Directory for the runs and report.html."),
    only: list[str] | None = typer.Option(None, "--only", help=f"Reproduce only these experiments (repeatable): {', '.join(names())}."),
    resume: bool = typer.Option(True, "--resume/--force",
                                help="--resume (default): finished experiments with the same settings are read back; "
                                     "--force: run everything again."),
) -> None:
    """Run every experiment and write OUT/report.html."""
    force = not resume
    chosen = only or names()
    for name in chosen:
        resolve_config(name, quick)
    _checks.writable_dir("--out", out)
    ok = True
    with _progress() as progress:
        for name in chosen:
            summary = run_experiment(name, out / name, quick=quick, force=force, progress=RichProgress(progress))
            ok &= summary["checks_passed"]
            progress.console.print(f"{name}: {'all theorem checks passed' if summary['checks_passed'] else 'A THEOREM CHECK FAILED'}"
                                   f" ({summary['seconds']:.1f} s)")
    report = write_report(out, chosen)
    out_console.print(f"report: {report}")
    if not ok:
        raise typer.Exit(1)


lm_app = typer.Typer(no_args_is_help=True, help="Language models: train a tiny base model, run GRPO with Gradient-Gap diagnostics.")
app.add_typer(lm_app, name="lm")


def _pretrain_config() -> Any:
    from rlvrlab.lm.pretrain import PretrainConfig

    return PretrainConfig()


@lm_app.command("pretrain")
@_user_errors
def lm_pretrain(
    settings: list[str] | None = typer.Option(None, "--set", help="Override a PretrainConfig setting: --set key=value "
                                              "(repeatable; --help-settings lists them)."),
    cache: Path | None = typer.Option(None, "--cache", help="Model cache (default: $RLVRLAB_CACHE or ~/.cache/rlvrlab)."),
    _: bool = _help_settings(_pretrain_config, "PretrainConfig", "rlvrlab lm pretrain"),
) -> None:
    """Train the tiny base model (a small Qwen2 on the synthetic tasks), or find it in the cache; print its directory."""
    from rlvrlab.experiments.base import apply_settings
    from rlvrlab.io import read_json
    from rlvrlab.lm.pretrain import PretrainConfig, pretrain

    config = apply_settings(PretrainConfig(), settings or [])
    if cache is not None:
        _checks.writable_dir("--cache", cache)
    root = cache / "models" if cache else None
    with _progress() as progress:
        path = pretrain(config, root, on_step=RichProgress(progress).task("pretraining", config.max_steps))
    record = read_json(path / "rlvrlab_pretrain.json")
    for task, success in record["held_out_success"].items():
        spread = record["fraction_of_prompts_strictly_between_0_and_1"][task]
        out_console.print(f"{task}: held-out success {success:.2f}, {spread:.0%} of prompts solved sometimes but not always")
    out_console.print(str(path), highlight=False)


@lm_app.command("train")
@_user_errors
def lm_train(
    model: str = typer.Option(..., "--model", help="Directory of a Hugging Face causal LM and its tokenizer."),
    task: str = typer.Option("add", "--task", help=_TASK_HELP),
    out: Path = typer.Option(Path("runs/lm-train"), "--out", help="Run directory."),
    preset: str = typer.Option("grpo", "--preset", help=f"Update rule: {', '.join(PRESETS)}."),
    steps: int = typer.Option(100, "--steps", help="Optimizer steps."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam's (initial) learning rate."),
    schedule: str = typer.Option("constant", "--schedule", help=f"Learning-rate schedule: {', '.join(SCHEDULES)}."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to OUT/tensorboard."),
    settings: list[str] | None = typer.Option(None, "--set", help="Any other TrainConfig setting: --set key=value "
                                              "(repeatable; --help-settings lists them)."),
    resume: bool = typer.Option(True, "--resume/--force",
                                help="--resume (default): continue from OUT's checkpoint; --force: start over."),
    _: bool = _help_settings(TrainConfig, "TrainConfig", "rlvrlab lm train"),
) -> None:
    """GRPO (or any preset) on a causal LM with live Gradient-Gap diagnostics; metrics in OUT/metrics.parquet."""
    import shutil

    from rlvrlab.experiments.base import apply_settings
    from rlvrlab.lm.trainer import GRPOTrainer, summary_of

    # Everything checkable is checked before the model is loaded and before OUT is touched.
    _checks.writable_dir("--out", out)
    _checks.choose("--preset", preset, PRESETS)
    _checks.choose("--schedule", schedule, SCHEDULES)
    _check_task("--task", task)
    config = apply_settings(TrainConfig(model=model, task=task, preset=preset, steps=steps, lr=lr, schedule=schedule,
                                        tensorboard=tensorboard), settings or [])
    # --force: the previous run's files, listed now and removed once the trainer has accepted the
    # model and task, so that a refused command leaves the previous run as it was.
    stale = [out / n for n in ("checkpoints", "metrics.parquet", "prompts.parquet", "model") if (out / n).exists()] if not resume else []
    stale += list((out / "tensorboard").glob("*")) if not resume and (out / "tensorboard").is_dir() else []
    progress = _progress()  # shown from the first step on: a refused model prints its one line and nothing else
    trainer = GRPOTrainer(config, out, on_step=RichProgress(progress).task(f"{config.preset} on {task}", config.steps),
                          on_warning=lambda message: progress.console.print(f"[bold yellow]warning:[/] {message}", highlight=False))
    for target in stale:
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    with progress:
        rows = trainer.train(resume=resume)
    s = summary_of(rows)
    out_console.print(f"held-out accuracy {s['accuracy_start']:.3f} -> {s['accuracy_end']:.3f}; cumulative gap alignment "
                      f"M = {s['M_end']:.3g}; median step / critical step {s['median_crit_ratio']:.2f} "
                      f"({s['steps_past_crit']} of {s['steps']} steps above 1)")
    out_console.print(f"results: {out}", highlight=False)


@lm_app.command("probe")
@_user_errors
def lm_probe(
    model: str = typer.Option(..., "--model", help="Directory of a Hugging Face causal LM and its tokenizer."),
    task: str = typer.Option("add", "--task", help=_TASK_HELP),
    preset: str = typer.Option("grpo", "--preset", help=f"Update rule of the run to come: {', '.join(PRESETS)}."),
    out: Path = typer.Option(Path("runs/lm-probe"), "--out", help="Directory for probe.json and probe.parquet (the scan)."),
    steps: int = typer.Option(4, "--steps", help="Probe steps of the run's own update at --lr-probe (1 to 10)."),
    fresh: int = typer.Option(4, "--fresh", help="Completions per prompt and scanned rate (>= 2)."),
    lr_probe: float = typer.Option(1e-5, "--lr-probe", help="Rate of the probe steps, far below any threshold."),
    lr_low: float = typer.Option(1e-5, "--lr-low", help="Lowest rate scanned."),
    lr_high: float = typer.Option(1e-1, "--lr-high", help="Highest rate scanned."),
    points: int = typer.Option(25, "--points", help="Rates scanned (geometric grid, >= 3)."),
    settings: list[str] | None = typer.Option(None, "--set", help="Any other TrainConfig setting of the run to come: "
                                              "--set key=value (batch_size, group, max_new_tokens, seed, ...)."),
    _: bool = _help_settings(TrainConfig, "TrainConfig", "rlvrlab lm probe"),
) -> None:
    """Recommend a learning rate before training: the critical rate of the run's first steps, read
    off a scan of the success rate along them (rlvrlab.lm.probe)."""
    from rlvrlab.experiments.base import apply_settings
    from rlvrlab.lm.probe import probe

    _checks.writable_dir("--out", out)
    _checks.choose("--preset", preset, PRESETS)
    _check_task("--task", task)
    config = apply_settings(TrainConfig(model=model, task=task, preset=preset), settings or [])
    result = probe(config, out, steps=steps, fresh=fresh, lr_probe=lr_probe, lr_low=lr_low, lr_high=lr_high, points=points)
    table = Table("learning rate", "success rate after the first steps", "± se")
    for row in result.rows():
        table.add_row(f"{row['lr']:.3g}", f"{row['J']:.3f}", f"{row['se_J']:.3f}")
    out_console.print(table)
    out_console.print(f"success rate at the start {result.J0:.3f}; predicted critical rate {result.critical_rate:.3g} "
                      f"(where {steps} steps stop raising it); recommended rate {result.recommended_rate:.3g} (half of it); "
                      f"second-order estimate from the first step {result.second_order_rate:.3g}")
    out_console.print(f"results: {out}", highlight=False)


@lm_app.command("sweep")
@_user_errors
def lm_sweep(
    grid: Path | None = typer.Argument(None, help="A TOML file of TrainConfig settings: key = value for every run, "
                                       "key = a list of values for an axis of the grid (one run per combination)."),
    out: Path = typer.Option(..., "--out", help="Sweep directory: one `lm train` run directory per run, and runs.parquet."),
    axes: list[str] | None = typer.Option(None, "--grid", help="An axis: --grid key=v1,v2,... (repeatable; replaces the "
                                          "file's key)."),
    settings: list[str] | None = typer.Option(None, "--set", help="A setting of every run: --set key=value (repeatable; "
                                              "replaces the file's key; --help-settings lists them)."),
    backend: str = typer.Option("local", "--backend", help="local (a pool of processes here) or ray."),
    workers: int | None = typer.Option(None, "--workers", help="Runs at a time (default: cores / threads)."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads per run (default: 1; on 2 cores two "
                                       "1-thread runs finish 1.7x more runs per hour than one 2-thread run)."),
    _: bool = _help_settings(TrainConfig, "TrainConfig", "rlvrlab lm sweep"),
) -> None:
    """A grid of GRPO runs (task × lr × preset × seed × ...), each an `lm train` run directory, resumable; OUT/runs.parquet."""
    from rlvrlab.integrations.sweep import DEFAULT_THREADS, lm_sweep as sweep
    from rlvrlab.lm.sweep import load_grid, parse_assignments

    spec = load_grid(grid) if grid is not None else {}
    spec.update(parse_assignments(settings or [], axes or []))
    _checks.writable_dir("--out", out)

    def report(row: dict[str, Any], trained: bool) -> None:
        what = {"finished": f"held-out accuracy {row['accuracy_start']:.3f} -> {row['accuracy_end']:.3f}",
                "diverged": row["message"].split(":")[0]}.get(row["status"], f"{row['status']}: {row['message']}")
        when = f"{row['seconds']:.0f} s" if trained else "done before"
        out_console.print(f"{row['run']}: {what} ({when})", highlight=False, markup=False)

    threads = DEFAULT_THREADS if threads is None else threads
    table = sweep(spec, out, backend=backend, workers=workers, threads=threads, on_run=report)
    statuses = table.column("status").to_pylist()
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    out_console.print(f"{len(statuses)} runs: {counts}; results: {out / 'runs.parquet'}", highlight=False, markup=False)
    if "failed" in statuses:
        raise typer.Exit(1)


analyze_app = typer.Typer(no_args_is_help=True, help="What RLVR did to a model: a base model against its RLVR descendant.")
app.add_typer(analyze_app, name="analyze")


def _analyze(name: str, base: str, rl: str, task: str, quick: bool, out: Path | None, settings: list[str] | None,
             resume: bool) -> None:
    _check_task("--task", task)
    pair = [f"base={base}", f"rl={rl}", f"task={task}"]
    run(name=name, quick=quick, out=out or Path("runs") / f"analyze-{name}", settings=pair + list(settings or []), resume=resume)


_BASE = typer.Option(..., "--base", help="Directory of the base model (a Hugging Face causal LM and its tokenizer).")
_RL = typer.Option(..., "--rl", help="Directory of its RLVR-trained descendant (the same tokenizer).")
_QUICK = typer.Option(False, "--quick", help="Small settings.")
_SET = typer.Option(None, "--set", help="Any other setting of the experiment: --set key=value (repeatable; `rlvrlab list -v` "
                    "shows them).")
_RESUME = typer.Option(True, "--resume/--force", help="--resume (default): read a finished run back; --force: start over.")


@analyze_app.command("leash")
@_user_errors
def analyze_leash(base: str = _BASE, rl: str = _RL, task: str = typer.Option("add", "--task", help=_TASK_HELP),
                  quick: bool = _QUICK, out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/analyze-leash)."),
                  settings: list[str] | None = _SET, resume: bool = _RESUME) -> None:
    """pass@k, support (P/E/S/O, SRR, NDR, SDS, NSCR) and token / answer entropy of a base and an RLVR model."""
    _analyze("leash", base, rl, task, quick, out, settings, resume)


@analyze_app.command("direction")
@_user_errors
def analyze_direction(base: str = _BASE, rl: str = _RL,
                      task: str = typer.Option("add", "--task", help=_TASK_HELP),
                      quick: bool = _QUICK, out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/analyze-direction)."),
                      settings: list[str] | None = _SET, resume: bool = _RESUME) -> None:
    """Δlog p against entropy and KL, selective replacement, selective extrapolation and training with reweighting."""
    _analyze("direction", base, rl, task, quick, out, settings, resume)


@app.command()
@_user_errors
def generate(
    base: str = _BASE, rl: str = _RL,
    prompt: list[str] = typer.Option(..., "--prompt", help="A prompt (repeatable); every character must be one the tokenizer knows."),
    gamma: float = typer.Option(0.1, "--gamma", help="Extrapolation strength γ >= 0 (0: the RLVR model itself)."),
    tau: float = typer.Option(-0.3, "--tau", help="Extrapolate only the tokens with Δlog p <= τ (with --mode replace: the "
                              "criterion's threshold; a rate in [0, 1] for random)."),
    mode: str = typer.Option("extrapolate", "--mode", help=f"Decoding: {', '.join(MODES)} (replace: with --criterion)."),
    criterion: str = typer.Option("delta-logp", "--criterion", help=f"Replacement criterion: {', '.join(CRITERIA)}."),
    samples: int = typer.Option(1, "--samples", help="Completions per prompt."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Longest completion, in tokens."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (> 0)."),
    top_p: float = typer.Option(0.7, "--top-p", help="Nucleus, in (0, 1] (the direction paper: 0.7)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling generator."),
) -> None:
    """Decode with a base and an RLVR model together: selective test-time extrapolation (default) or replacement."""
    import torch

    from rlvrlab.analysis import check_pair
    from rlvrlab.analysis import generate as decode
    from rlvrlab.analysis.decoding import check_settings
    from rlvrlab.lm.models import check_prompts, load_model
    from rlvrlab.lm.sampling import completion_texts

    _checks.integer("--samples", samples)
    _checks.integer("--max-new-tokens", max_new_tokens)
    check_settings(mode=mode, criterion=criterion, tau=tau, gamma=gamma, temperature=temperature, top_p=top_p)
    b, tok = load_model(base)
    r, rl_tok = load_model(rl)
    check_pair(b, tok, r, rl_tok)
    check_prompts(tok, prompt, name="--prompt")
    roll, flags = decode(b, r, [tok(p)["input_ids"] for p in prompt], mode=mode, G=samples, max_new_tokens=max_new_tokens,
                         eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(seed),
                         criterion=criterion, tau=tau, gamma=gamma, temperature=temperature, top_p=top_p)
    for i, text in enumerate(completion_texts(tok, roll)):
        n = int(roll.completion_mask[i].sum())
        out_console.print(f"[{i // samples}.{i % samples}] {prompt[i // samples]}{text}", highlight=False, markup=False)
        out_console.print(f"      ({int(flags[i].sum())} of {n} tokens {'extrapolated' if mode == 'extrapolate' else 'replaced'})"
                          if mode in ("extrapolate", "replace") else "", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
