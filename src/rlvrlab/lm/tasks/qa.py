"""Question-answer files as tasks: GSM8K (``#### 42``), ``\\boxed{...}`` answers (DeepScaleR,
DAPO-17k) and bare answers, in ``.jsonl`` or ``.parquet`` files (``load_qa``).

A file's records are its distinct questions: an exact repeat of a record is dropped, a question
given two different answers is refused, and a file with fewer than 2 distinct questions is
refused (a trainer holds some out, and a held-out question must not be a training one).
``sample(n, seed)`` returns distinct records only, at most the file's count, in a seeded order.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from rlvrlab import _checks
from rlvrlab.lm.tasks.base import Problem, Task, _check_sample_args

__all__ = ["MIN_DISTINCT", "QA_SUFFIXES", "QATask", "load_qa"]

_GSM8K_MARK = "####"
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NUMBER = re.compile(r"-?[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?(?:/[0-9]+)?")
_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
QA_SUFFIXES = (".jsonl", ".parquet")
MIN_DISTINCT = 2  # a trainer holds at least one question out and trains on the others


def _normalize(answer: str) -> str:
    """Whitespace collapsed, surrounding ``$`` and a final ``.`` dropped, thousands separators
    removed (``1,000`` -> ``1000``)."""
    s = " ".join(answer.split()).strip("$ ").rstrip(".").strip()
    return _THOUSANDS.sub("", s)


def _last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` (nested braces matched), if any."""
    found = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found = text[m.end(): i - 1]
    return found


def _marked_answer(text: str) -> str | None:
    """The answer after the last ``####`` (to the end of its line) or in the last ``\\boxed{}``."""
    if _GSM8K_MARK in text:
        tail = text.rsplit(_GSM8K_MARK, 1)[1].strip()
        return _normalize(tail.splitlines()[0]) if tail else None
    boxed = _last_boxed(text)
    return None if boxed is None else _normalize(boxed)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class QATask(Task):
    """Question-answer records from a file (see ``load_qa``).

    The prompt is the question as written. ``problem.answer`` is the reference's final answer:
    what follows the last ``####`` (GSM8K), else the content of the last ``\\boxed{...}``, else the
    whole reference (a bare answer), with thousands separators removed. ``problem.meta`` holds
    ``index`` (the record's position) and ``reference`` (the full answer text).

    ``extract`` reads a completion the same way, except that with neither marker it takes the
    last number. ``verify`` is 1 when the extracted answer and the reference answer are equal
    after normalization, or mathematically equal according to ``math_verify`` (``1/2`` and
    ``0.5``, ``\\frac{1}{2}`` and ``0.5``); answers ``math_verify`` cannot parse count as equal only
    when their normalized strings are.

    ``solution`` is the reference text when ``extract`` recovers the answer from it, else
    ``\\boxed{answer}`` (a bare non-numeric reference such as ``\\frac{1}{2}``, whose last number
    would be 2). ``sample(n, seed)`` returns min(n, count) distinct records in a seeded order, never
    one twice (``sample(m, seed)`` is a prefix of ``sample(n, seed)``). The problems are kept
    distinct: a repeated question (whitespace aside) with the same answer is dropped, with another
    answer refused, and fewer than 2 distinct questions are refused.
    """

    name: ClassVar[str] = "qa"

    def __init__(self, problems: Sequence[Problem], *, name: str = "qa") -> None:
        self.name = name  # the file's stem, so runs on two files are told apart
        self.problems = _distinct([(f"problem {i}", p) for i, p in enumerate(problems)], "problems")
        self._alphabet = frozenset("".join(p.prompt + self.solution(p) for p in self.problems))

    @property
    def alphabet(self) -> frozenset[str]:
        return self._alphabet

    def sample(self, n: int, seed: int) -> list[Problem]:
        """The first min(n, count) records of a seeded shuffle: no record twice, so that a trainer's
        held-out questions are never among its training ones."""
        _check_sample_args(n, seed)
        order = list(range(len(self.problems)))
        random.Random(seed).shuffle(order)
        return [self.problems[i] for i in order[:n]]

    def solution(self, problem: Problem) -> str:
        reference = problem.meta.get("reference", problem.answer)
        return reference if self.extract(reference) == problem.answer else f"\\boxed{{{problem.answer}}}"

    def extract(self, completion: str) -> str | None:
        if not isinstance(completion, str):
            return None
        marked = _marked_answer(completion)
        if marked:
            return marked
        numbers = _NUMBER.findall(completion)
        return _normalize(numbers[-1]) if numbers else None

    def verify(self, completion: str, problem: Problem) -> int:
        answer = self.extract(completion)
        if answer is None:
            return 0
        if answer == problem.answer:
            return 1
        # Imported here: sympy takes about a second to import, and the synthetic tasks never need it.
        from math_verify import parse, verify

        # math_verify bounds its time with signal.alarm, which only the main thread may set.
        timeout = 5 if _in_main_thread() else None
        gold = parse(f"\\boxed{{{problem.answer}}}", parsing_timeout=timeout)
        pred = parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout)
        if not gold or not pred:
            return 0
        return int(verify(gold, pred, timeout_seconds=timeout))


def load_qa(path: str | Path, *, question_key: str = "question", answer_key: str = "answer") -> QATask:
    """A ``QATask`` over the records of a ``.jsonl`` (one JSON object per line) or ``.parquet``
    file, each with a question under ``question_key`` and an answer under ``answer_key``: GSM8K's
    ``<working> #### 42``, a ``\\boxed{...}`` answer, or a bare answer."""
    path = Path(path)
    if path.suffix not in QA_SUFFIXES:
        _checks.fail("path", str(path), "a file ending in " + ", ".join(QA_SUFFIXES))
    if not path.is_file():
        _checks.fail("path", f"{path} (no such file)", "an existing .jsonl or .parquet file")
    records = _read_jsonl(path) if path.suffix == ".jsonl" else _read_parquet(path)
    if not records:
        _checks.fail(str(path), "no records", f"a file with at least {MIN_DISTINCT} distinct question-answer records")
    problems = []
    for index, (where, record) in enumerate(records):
        missing = [k for k in (question_key, answer_key) if k not in record]
        if missing:
            _checks.fail(f"{path} {where}", f"keys {sorted(record)} (missing {', '.join(map(repr, missing))})",
                         f"records with keys {question_key!r} and {answer_key!r} "
                         "(set question_key= / answer_key= for other names)")
        question, reference = (_text(record[k]) for k in (question_key, answer_key))
        for key, value in ((question_key, question), (answer_key, reference)):
            if not value.strip():
                _checks.fail(f"{path} {where} {key!r}", "an empty value", "non-empty text")
        answer = _marked_answer(reference) if (_GSM8K_MARK in reference or _BOXED.search(reference)) \
            else _normalize(reference)
        if not answer:
            _checks.fail(f"{path} {where} {answer_key!r}", reference,
                         "a final answer after '####', inside \\boxed{...}, or bare")
        problems.append((where, Problem(question, answer, {"index": index, "reference": reference})))
    return QATask(_distinct(problems, str(path)), name=path.stem)


def _distinct(problems: list[tuple[str, Problem]], source: str) -> list[Problem]:
    """The first problem of each question (whitespace collapsed), given as (where, problem); a
    question repeated with another answer, or fewer than MIN_DISTINCT questions, are refused."""
    first: dict[str, tuple[str, Problem]] = {}
    for where, p in problems:
        seen_where, seen = first.setdefault(" ".join(p.prompt.split()), (where, p))
        if seen.answer != p.answer:
            _checks.fail(f"{source} {where}", f"the question of {seen_where} with another answer ({p.answer!r}, not "
                         f"{seen.answer!r})", "one answer per question")
    if len(first) < MIN_DISTINCT:
        _checks.fail(source, f"{len(first)} distinct question-answer record{'s' if len(first) != 1 else ''}",
                     f"at least {MIN_DISTINCT} distinct questions (one is held out, and it must not be a training one)")
    return [p for _, p in first.values()]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    records = []
    with path.open(encoding="utf-8") as f:
        try:
            lines = list(f)
        except UnicodeDecodeError as e:
            _checks.fail(str(path), f"bytes that are not UTF-8 ({e.reason})", "UTF-8 text")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            _checks.fail(f"{path} line {number}", f"malformed JSON ({e.msg})", "one JSON object per line")
        if not isinstance(record, dict):
            _checks.fail(f"{path} line {number}", f"a JSON {type(record).__name__}", "one JSON object per line")
        records.append((f"line {number}", record))
    return records


def _read_parquet(path: Path) -> list[tuple[str, dict]]:
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowInvalid, OSError) as e:
        reason = str(e).replace(str(path), "it")
        _checks.fail(str(path), f"an unreadable Parquet file ({reason})", "a Parquet file of question-answer records")
    return [(f"row {i}", row) for i, row in enumerate(rows)]
