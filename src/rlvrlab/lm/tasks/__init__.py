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

A task is named by one string everywhere (configs, the command line): a synthetic task's name or
the path of a ``.jsonl`` / ``.parquet`` question-answer file. ``load_task(spec)`` resolves it;
``check_task_spec(spec)`` refuses what ``load_task`` would refuse, without reading the file.
"""

from __future__ import annotations

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
]


def _allowed() -> str:
    return f"a task name ({', '.join(sorted(TASKS))}) or a {' / '.join(QA_SUFFIXES)} question-answer file"


def check_task_spec(spec: str, *, name: str = "task") -> str:
    """``spec`` when it names a task: a synthetic task's name, or an existing file ending in .jsonl
    or .parquet (its records are read, and checked, by ``load_task``). For configs' checks;
    ``name`` is the setting or option a refusal names."""
    if not isinstance(spec, str) or not (spec in TASKS or spec.endswith(QA_SUFFIXES)):
        _checks.fail(name, spec, _allowed())
    if spec not in TASKS and not Path(spec).is_file():
        _checks.fail(name, f"{spec} (no such file)", _allowed())
    return spec


def load_task(spec: str, *, name: str = "task") -> Task:
    """The task ``spec`` names: a synthetic task (``make_task``) or a question-answer file (``load_qa``)."""
    check_task_spec(spec, name=name)
    return make_task(spec) if spec in TASKS else load_qa(spec)
