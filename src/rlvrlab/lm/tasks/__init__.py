"""Verifiable tasks for language models: problems, reference solutions, answer extraction, rewards.

RLVR needs a prompt distribution and a binary verifier r(o) ∈ {0, 1} (paper §2, eq. (1)-(2)).
The paper trained on GSM8K (easy) and on DeepScaleR / DAPO-17k (hard); rlvrlab's tiny
character-level models train on synthetic stand-ins of graded difficulty (``synthetic``: add,
arith, countdown, over the expressions of ``expr``), and ``qa`` reads real question-answer files
when there is a model big enough for them.

A task is a small object (``base.Task``) with
- ``name`` and ``alphabet`` (every character its prompts and solutions use, so that a character
  tokenizer can be built from the union of the tasks' alphabets);
- ``sample(n, seed)``: n problems, the same for the same seed (and ``sample(m, seed)`` is a prefix
  of ``sample(n, seed)`` for m <= n); a question-answer file gives at most its count of distinct
  records, none twice;
- ``solution(problem)``: one full correct completion (a scratchpad, then ``#`` and the final
  answer), which supervised pretraining imitates;
- ``extract(completion)``: the final answer, or None when none can be read;
- ``verify(completion, problem)``: the reward, 0 or 1.
A completion is the text after the prompt up to (not including) EOS; the tasks never write EOS.

A task is named by one string everywhere (configs, the command line): a synthetic task's name,
optionally with integer options after colons (``add:repeat=4``, ``add:min_digits=2:max_digits=2``;
each task's docstring lists its options), or the path of a ``.jsonl`` / ``.parquet``
question-answer file. ``load_task(spec)`` resolves it; ``check_task_spec(spec)`` refuses what
``load_task`` would refuse, without reading the file.
"""

from __future__ import annotations

import re
from pathlib import Path

from rlvrlab import _checks
from rlvrlab.lm.tasks.base import Problem, Task
from rlvrlab.lm.tasks.qa import MIN_DISTINCT, QA_SUFFIXES, QATask, load_qa
from rlvrlab.lm.tasks.synthetic import TASKS, AdditionTask, ArithmeticTask, CountdownTask, make_task

__all__ = [
    "MIN_DISTINCT",
    "QA_SUFFIXES",
    "AdditionTask",
    "ArithmeticTask",
    "CountdownTask",
    "Problem",
    "QATask",
    "TASKS",
    "Task",
    "check_task_spec",
    "load_qa",
    "load_task",
    "make_task",
    "parse_task_spec",
]


def _allowed() -> str:
    return (f"a task name ({', '.join(sorted(TASKS))}), optionally with integer options (add:repeat=4), "
            f"or a {' / '.join(QA_SUFFIXES)} question-answer file")


def parse_task_spec(spec: str, *, name: str = "task") -> tuple[str, dict[str, int]] | None:
    """A synthetic task's spec as (name, options): ``"add:repeat=4"`` → ``("add", {"repeat": 4})``;
    None when ``spec`` names no synthetic task (a question-answer file). Options are integers."""
    if not isinstance(spec, str):
        _checks.fail(name, spec, _allowed())
    task, *items = spec.split(":")
    if task not in TASKS:
        return None
    options: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not re.fullmatch(r"-?[0-9]+", value) or key in options:
            _checks.fail(name, spec, f"{task}:key=integer[:key=integer...], each key once (e.g. add:repeat=4)")
        options[key] = int(value)
    return task, options


def check_task_spec(spec: str, *, name: str = "task") -> str:
    """``spec`` when it names a task: a synthetic task's name with its options (built, so that a
    bad option is refused here), or an existing file ending in .jsonl or .parquet (its records are
    read, and checked, by ``load_task``). For configs' checks; ``name`` is the setting or option a
    refusal names."""
    synthetic = parse_task_spec(spec, name=name)
    if synthetic is not None:
        make_task(synthetic[0], **synthetic[1])
        return spec
    if not spec.endswith(QA_SUFFIXES):
        _checks.fail(name, spec, _allowed())
    if not Path(spec).is_file():
        _checks.fail(name, f"{spec} (no such file)", _allowed())
    return spec


def load_task(spec: str, *, name: str = "task") -> Task:
    """The task ``spec`` names: a synthetic task with its options (``make_task``) or a
    question-answer file (``load_qa``)."""
    check_task_spec(spec, name=name)
    synthetic = parse_task_spec(spec, name=name)
    return make_task(synthetic[0], **synthetic[1]) if synthetic is not None else load_qa(spec)
