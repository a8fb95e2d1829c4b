"""The ``rlvrlab`` command: list, run and reproduce the experiments.

A user mistake (an unknown name, a bad --set) prints one line naming the problem and the allowed
values and exits with status 2, never a traceback. ``run`` and ``reproduce`` exit with status 1
when a theorem check fails.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rlvrlab.experiments import experiments, names, resolve_config, run_experiment
from rlvrlab.experiments.base import describe_fields
from rlvrlab.report import write_report

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="rlvrlab: the optimization dynamics of RL with verifiable rewards (Gradient Gap, step-size thresholds).")
out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """ValueError from the library is a user mistake: one line on stderr, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            err_console.print(f"[bold red]rlvrlab:[/] {err}", highlight=False, markup=True)
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
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err_console, transient=True)


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


@app.command()
@_user_errors
def run(
    name: str = typer.Argument(..., help="Experiment name (see `rlvrlab list`)."),
    quick: bool = typer.Option(False, "--quick", help="Small settings that finish in seconds."),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/NAME)."),
    settings: list[str] | None = typer.Option(None, "--set", help="Override a setting: --set key=value (repeatable)."),
    resume: bool = typer.Option(True, "--resume/--force",
                                help="--resume (default): a finished run with the same settings is read back, an interrupted one "
                                     "rerun; --force: start over, also where OUT holds a run of other settings."),
) -> None:
    """Run one experiment into its run directory."""
    force = not resume
    resolve_config(name, quick, settings or [])  # validate before any output
    out = out or Path("runs") / name
    with _progress() as progress:
        summary = run_experiment(name, out, quick=quick, settings=settings or [], force=force, progress=RichProgress(progress))
    if not _print_checks(name, summary, out):
        raise typer.Exit(1)


@app.command()
@_user_errors
def reproduce(
    quick: bool = typer.Option(False, "--quick", help="Small settings: the whole reproduction in about a minute."),
    out: Path = typer.Option(Path("runs/reproduce"), "--out", help="Directory for the runs and report.html."),
    only: list[str] | None = typer.Option(None, "--only", help="Reproduce only these experiments (repeatable)."),
    resume: bool = typer.Option(True, "--resume/--force",
                                help="--resume (default): finished experiments with the same settings are read back; "
                                     "--force: run everything again."),
) -> None:
    """Run every experiment and write OUT/report.html."""
    force = not resume
    chosen = only or names()
    for name in chosen:
        resolve_config(name, quick)
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


@lm_app.command("pretrain")
@_user_errors
def lm_pretrain(
    settings: list[str] | None = typer.Option(None, "--set", help="Override a PretrainConfig setting: --set key=value (repeatable)."),
    cache: Path | None = typer.Option(None, "--cache", help="Model cache (default: $RLVRLAB_CACHE or ~/.cache/rlvrlab)."),
) -> None:
    """Train the tiny base model (a small Qwen2 on the synthetic tasks), or find it in the cache; print its directory."""
    from rlvrlab.experiments.base import apply_settings
    from rlvrlab.io import read_json
    from rlvrlab.lm.pretrain import PretrainConfig, pretrain

    config = apply_settings(PretrainConfig(), settings or [])
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
    task: str = typer.Option("add", "--task", help="add, arith, countdown, or a .jsonl/.parquet question-answer file."),
    out: Path = typer.Option(Path("runs/lm-train"), "--out", help="Run directory."),
    preset: str = typer.Option("grpo", "--preset", help="Update rule: reinforce, rloo, grpo, dr-grpo, dapo, gspo."),
    steps: int = typer.Option(100, "--steps"),
    lr: float = typer.Option(1e-3, "--lr", help="Adam's (initial) learning rate."),
    schedule: str = typer.Option("constant", "--schedule", help="constant, cosine or gap-adaptive."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to OUT/tensorboard."),
    settings: list[str] | None = typer.Option(None, "--set", help="Any other TrainConfig setting: --set key=value (repeatable)."),
    resume: bool = typer.Option(True, "--resume/--force",
                                help="--resume (default): continue from OUT's checkpoint; --force: start over."),
) -> None:
    """GRPO (or any preset) on a causal LM with live Gradient-Gap diagnostics; metrics in OUT/metrics.parquet."""
    import shutil

    from rlvrlab.experiments.base import apply_settings
    from rlvrlab.lm.trainer import GRPOTrainer, TrainConfig, summary_of

    config = apply_settings(TrainConfig(model=model, task=task, preset=preset, steps=steps, lr=lr, schedule=schedule,
                                        tensorboard=tensorboard), settings or [])
    if not resume and out.exists():
        for stale in ("checkpoints", "metrics.parquet", "model", "tensorboard"):
            target = out / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    with _progress() as progress:
        trainer = GRPOTrainer(config, out, on_step=RichProgress(progress).task(f"{config.preset} on {task}", config.steps),
                              on_warning=lambda message: progress.console.print(f"[bold yellow]warning:[/] {message}", highlight=False))
        rows = trainer.train(resume=resume)
    s = summary_of(rows)
    out_console.print(f"held-out accuracy {s['accuracy_start']:.3f} -> {s['accuracy_end']:.3f}; cumulative gap alignment "
                      f"M = {s['M_end']:.3g}; median step / critical step {s['median_crit_ratio']:.2f} "
                      f"({s['steps_past_crit']} of {s['steps']} steps above 1)")
    out_console.print(f"results: {out}", highlight=False)


analyze_app = typer.Typer(no_args_is_help=True, help="What RLVR did to a model: a base model against its RLVR descendant.")
app.add_typer(analyze_app, name="analyze")


def _analyze(name: str, base: str, rl: str, task: str, quick: bool, out: Path | None, settings: list[str] | None,
             resume: bool) -> None:
    pair = [f"base={base}", f"rl={rl}", f"task={task}"]
    run(name=name, quick=quick, out=out or Path("runs") / f"analyze-{name}", settings=pair + list(settings or []), resume=resume)


_BASE = typer.Option(..., "--base", help="Directory of the base model (a Hugging Face causal LM and its tokenizer).")
_RL = typer.Option(..., "--rl", help="Directory of its RLVR-trained descendant (the same tokenizer).")
_QUICK = typer.Option(False, "--quick", help="Small settings.")
_SET = typer.Option(None, "--set", help="Any other setting of the experiment: --set key=value (repeatable).")
_RESUME = typer.Option(True, "--resume/--force", help="--resume (default): read a finished run back; --force: start over.")


@analyze_app.command("leash")
@_user_errors
def analyze_leash(base: str = _BASE, rl: str = _RL, task: str = typer.Option("add", "--task", help="A task or question-answer file."),
                  quick: bool = _QUICK, out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/analyze-leash)."),
                  settings: list[str] | None = _SET, resume: bool = _RESUME) -> None:
    """pass@k, support (P/E/S/O, SRR, NDR, SDS, NSCR) and token / answer entropy of a base and an RLVR model."""
    _analyze("leash", base, rl, task, quick, out, settings, resume)


@analyze_app.command("direction")
@_user_errors
def analyze_direction(base: str = _BASE, rl: str = _RL, task: str = typer.Option("add", "--task", help="A task of rlvrlab.lm.tasks."),
                      quick: bool = _QUICK, out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/analyze-direction)."),
                      settings: list[str] | None = _SET, resume: bool = _RESUME) -> None:
    """Δlog p against entropy and KL, selective replacement, selective extrapolation and training with reweighting."""
    _analyze("direction", base, rl, task, quick, out, settings, resume)


@app.command()
@_user_errors
def generate(
    base: str = _BASE, rl: str = _RL,
    prompt: list[str] = typer.Option(..., "--prompt", help="A prompt (repeatable)."),
    gamma: float = typer.Option(0.1, "--gamma", help="Extrapolation strength γ (0: the RLVR model itself)."),
    tau: float = typer.Option(-0.3, "--tau", help="Extrapolate only the tokens with Δlog p <= τ."),
    mode: str = typer.Option("extrapolate", "--mode", help="extrapolate, replace (with --criterion), base or rl."),
    criterion: str = typer.Option("delta-logp", "--criterion", help="Replacement criterion: delta-logp, entropy, kl, reverse-kl, js, random."),
    samples: int = typer.Option(1, "--samples", help="Completions per prompt."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_p: float = typer.Option(0.7, "--top-p", help="Nucleus (the direction paper: 0.7)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Decode with a base and an RLVR model together: selective test-time extrapolation (default) or replacement."""
    import torch

    from rlvrlab.analysis import check_pair
    from rlvrlab.analysis import generate as decode
    from rlvrlab.experiments.base import check_positive_int
    from rlvrlab.lm.sampling import completion_texts
    from rlvrlab.lm.trainer import load_model

    check_positive_int("samples", samples)
    check_positive_int("max_new_tokens", max_new_tokens)
    b, tok = load_model(base)
    r, rl_tok = load_model(rl)
    check_pair(b, tok, r, rl_tok)
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
