"""Verifiable tasks for language models: problems, reference solutions, answer extraction, rewards.

RLVR needs a prompt distribution and a binary verifier r(o) ∈ {0, 1} (paper §2, eq. (1)-(2)).
The paper trained on GSM8K (easy) and on DeepScaleR / DAPO-17k (hard); rlvrlab's tiny
character-level models train on synthetic stand-ins of graded difficulty, and ``load_qa`` reads
real question-answer files when there is a model big enough for them.

A task is a small object with
- ``name`` and ``alphabet`` (every character its prompts and solutions use, so that a character
  tokenizer can be built from the union of the tasks' alphabets);
- ``sample(n, seed)``: n problems, the same for the same seed (and ``sample(m, seed)`` is a prefix
  of ``sample(n, seed)`` for m <= n);
- ``solution(problem)``: one full correct completion (a scratchpad, then ``#`` and the final
  answer), which supervised pretraining imitates;
- ``extract(completion)``: the final answer, or None when none can be read;
- ``verify(completion, problem)``: the reward, 0 or 1.
A completion is the text after the prompt up to (not including) EOS; the tasks never write EOS.

Synthetic tasks (``TASKS``, built by ``make_task(name, **options)``):

| name        | prompt          | solution                          | difficulty |
|-------------|-----------------|-----------------------------------|------------|
| `add`       | `57+68=`        | `7+8=15,5+6+1=12,#125`            | easy (GSM8K-like) |
| `arith`     | `(3+4)*5-2=`    | `3+4=7,7*5=35,35-2=33,#33`        | medium |
| `countdown` | `3,5,7>32:`     | `5*7=35,35-3=32,#5*7-3`           | hard (DeepScaleR / DAPO-like) |

Their verifiers check only the final answer (outcome reward, as in the paper): the scratchpad is
there to make the answer learnable, not to be graded.
"""

from __future__ import annotations

import inspect
import json
import random
import re
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from rlvrlab import _checks

__all__ = [
    "AdditionTask",
    "ArithmeticTask",
    "CountdownTask",
    "Problem",
    "QATask",
    "TASKS",
    "Task",
    "load_qa",
    "load_task",
    "make_task",
]

DIGITS = "0123456789"


@dataclass(frozen=True)
class Problem:
    """One prompt with its canonical answer; ``meta`` (difficulty, operands, ...) is left out of
    equality and hashing, so problems compare and hash by ``(prompt, answer)``."""

    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class Task(ABC):
    """The interface every task implements (see the module docstring)."""

    name: str = "task"

    @property
    @abstractmethod
    def alphabet(self) -> frozenset[str]:
        """Every character that a prompt or a solution of this task can contain."""

    @abstractmethod
    def sample(self, n: int, seed: int) -> list[Problem]:
        """``n`` problems, determined by ``seed``."""

    @abstractmethod
    def solution(self, problem: Problem) -> str:
        """One full correct completion of ``problem`` (scratchpad, then the final answer)."""

    @abstractmethod
    def extract(self, completion: str) -> str | None:
        """The final answer written in ``completion``, or None when there is none to read."""

    def verify(self, completion: str, problem: Problem) -> int:
        """1 when the extracted answer equals ``problem.answer`` exactly, else 0."""
        return int(self.extract(completion) == problem.answer)


def _check_sample_args(n: int, seed: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        _checks.fail("n", n, "an integer >= 0")
    if isinstance(seed, bool) or not isinstance(seed, int):
        _checks.fail("seed", seed, "an integer")


def _check_range(low_name: str, low: int, high_name: str, high: int, minimum: int) -> None:
    for name, value in ((low_name, low), (high_name, high)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            _checks.fail(name, value, f"an integer >= {minimum}")
    if high < low:
        _checks.fail(high_name, high, f"an integer >= {low_name} ({low})")


class _Synthetic(Task):
    """Shared by the synthetic tasks: one ``random.Random(seed)`` consumed problem by problem
    (so a shorter sample is a prefix of a longer one), and ``#<answer>`` as the answer format."""

    symbols: ClassVar[str] = ""

    @property
    def alphabet(self) -> frozenset[str]:
        return frozenset(DIGITS + self.symbols + "#")

    def sample(self, n: int, seed: int) -> list[Problem]:
        _check_sample_args(n, seed)
        rng = random.Random(seed)
        return [self._problem(rng) for _ in range(n)]

    @abstractmethod
    def _problem(self, rng: random.Random) -> Problem: ...

    def extract(self, completion: str) -> str | None:
        """The integer after the last ``#`` (an optional ``-`` and digits, nothing else)."""
        answer = _after_last_hash(completion)
        return answer if answer is not None and _INTEGER.fullmatch(answer) else None


_INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only: \d would accept "٣"


def _after_last_hash(completion: str) -> str | None:
    if not isinstance(completion, str) or "#" not in completion:
        return None
    return completion.rsplit("#", 1)[1].strip()


# ---------------------------------------------------------------------------------------------
# add

_ADD_PROMPT = re.compile(r"([0-9]+)\+([0-9]+)=")


@dataclass(frozen=True, kw_only=True)
class AdditionTask(_Synthetic):
    """Addition of two non-negative integers, column by column from the right with carries.

    Prompt ``a+b=``. Solution: one step per column, rightmost first, ``x+y=s`` or, when the
    previous column carried, ``x+y+1=s``, each followed by ``,``; a shorter operand is padded with
    ``0``; ``s`` is the column sum, so its last digit is the answer digit and a two-digit ``s``
    carries 1 into the next column. Then ``#`` and the sum. Example::

        prompt   57+68=
        solution 7+8=15,5+6+1=12,#125

    ``123+4=`` gives ``3+4=7,2+0=2,1+0=1,#127``. Each operand has between ``min_digits`` and
    ``max_digits`` digits (uniform, no leading zero), so a problem with d columns has a solution
    of 7d + 1 to 10d + 2 characters (15 to 42 at the defaults, 2 to 4 digits); meta: ``a``, ``b``, ``digits``
    (the number of columns), ``carries``.
    """

    name: ClassVar[str] = "add"
    symbols: ClassVar[str] = "+=,"
    min_digits: int = 2
    max_digits: int = 4

    def __post_init__(self) -> None:
        _check_range("min_digits", self.min_digits, "max_digits", self.max_digits, 1)

    def _operand(self, rng: random.Random) -> int:
        d = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)

    def _problem(self, rng: random.Random) -> Problem:
        a, b = self._operand(rng), self._operand(rng)
        steps, carries = _column_steps(a, b)
        return Problem(f"{a}+{b}=", str(a + b),
                       {"a": a, "b": b, "digits": len(steps), "carries": carries})

    def solution(self, problem: Problem) -> str:
        m = _ADD_PROMPT.fullmatch(problem.prompt)
        if m is None:
            _checks.fail("problem.prompt", problem.prompt, "'<a>+<b>=' with non-negative integers a, b")
        a, b = int(m[1]), int(m[2])
        steps, _ = _column_steps(a, b)
        return "".join(s + "," for s in steps) + f"#{a + b}"


def _column_steps(a: int, b: int) -> tuple[list[str], int]:
    """The per-column steps of ``a + b`` (rightmost first) and how many columns carried."""
    xs, ys = str(a)[::-1], str(b)[::-1]
    width = max(len(xs), len(ys))
    xs, ys = xs.ljust(width, "0"), ys.ljust(width, "0")
    steps, carry, carries = [], 0, 0
    for x, y in zip(xs, ys):
        s = int(x) + int(y) + carry
        steps.append(f"{x}+{y}" + ("+1" if carry else "") + f"={s}")
        carry = s // 10
        carries += carry
    return steps, carries


# ---------------------------------------------------------------------------------------------
# expression trees, shared by arith and countdown: a leaf is an int, a node is (op, left, right)

_PRECEDENCE = {"+": 1, "-": 1, "*": 2}
_APPLY: dict[str, Callable[[int, int], int]] = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
}

Tree = int | tuple  # (op, Tree, Tree)


def _random_tree(rng: random.Random, leaves: Sequence[int]) -> Tree:
    """A uniformly random split of ``leaves`` (kept in order) with uniformly random operators."""
    if len(leaves) == 1:
        return leaves[0]
    k = rng.randint(1, len(leaves) - 1)
    op = rng.choice("+-*")
    return (op, _random_tree(rng, leaves[:k]), _random_tree(rng, leaves[k:]))


def _render(tree: Tree) -> str:
    """The expression with the fewest parentheses that parses back (left-associative, ``*``
    before ``+``/``-``) to exactly this tree, so the prompt fixes the scratchpad's order."""
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    ls, rs = _render(left), _render(right)
    if not isinstance(left, int) and _PRECEDENCE[left[0]] < _PRECEDENCE[op]:
        ls = f"({ls})"
    if not isinstance(right, int) and _PRECEDENCE[right[0]] <= _PRECEDENCE[op]:
        rs = f"({rs})"
    return ls + op + rs


def _steps(tree: Tree) -> tuple[int, list[str]]:
    """The value and the scratchpad ``x op y=z`` of every operation, in evaluation order
    (left operand first, then right, then the operation: a post-order walk)."""
    if isinstance(tree, int):
        return tree, []
    op, left, right = tree
    x, left_steps = _steps(left)
    y, right_steps = _steps(right)
    z = _APPLY[op](x, y)
    return z, left_steps + right_steps + [f"{x}{op}{y}={z}"]


def _depth(tree: Tree) -> int:
    return 0 if isinstance(tree, int) else 1 + max(_depth(tree[1]), _depth(tree[2]))


_TOKEN = re.compile(r"[0-9]+|[-+*()]")
_MAX_NESTING = 32  # a model can write "((((...": bound the parser's recursion


def _parse(text: str) -> Tree | None:
    """The tree of an expression over non-negative integers with ``+ - *`` and parentheses
    (usual precedence, left-associative; no unary minus, no leading zeros), or None when
    ``text`` is not such an expression. The inverse of ``_render``."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            return None
        tokens.append(m.group())
        pos = m.end()
    if any(t[0] == "0" and len(t) > 1 for t in tokens):
        return None
    i = 0

    def expr(depth: int) -> Tree | None:
        nonlocal i
        tree = term(depth)
        while tree is not None and i < len(tokens) and tokens[i] in "+-":
            op = tokens[i]
            i += 1
            right = term(depth)
            tree = None if right is None else (op, tree, right)
        return tree

    def term(depth: int) -> Tree | None:
        nonlocal i
        tree = factor(depth)
        while tree is not None and i < len(tokens) and tokens[i] == "*":
            i += 1
            right = factor(depth)
            tree = None if right is None else ("*", tree, right)
        return tree

    def factor(depth: int) -> Tree | None:
        nonlocal i
        if i >= len(tokens) or depth > _MAX_NESTING:
            return None
        t = tokens[i]
        i += 1
        if t.isdigit():
            return int(t)
        if t != "(":
            return None
        tree = expr(depth + 1)
        if tree is None or i >= len(tokens) or tokens[i] != ")":
            return None
        i += 1
        return tree

    tree = expr(0)
    return tree if i == len(tokens) else None


def _value(tree: Tree) -> int:
    return tree if isinstance(tree, int) else _APPLY[tree[0]](_value(tree[1]), _value(tree[2]))


def _leaves(tree: Tree) -> list[int]:
    return [tree] if isinstance(tree, int) else _leaves(tree[1]) + _leaves(tree[2])


# ---------------------------------------------------------------------------------------------
# arith


@dataclass(frozen=True, kw_only=True)
class ArithmeticTask(_Synthetic):
    """Evaluate an integer expression with ``+``, ``-``, ``*`` and parentheses.

    Prompt ``<expression>=``: between ``min_operands`` and ``max_operands`` operands drawn from
    1..``max_operand``, combined by a random binary tree with random operators and written with
    the fewest parentheses that keep the tree (usual precedence, left to right). Solution: every
    operation in evaluation order as ``x<op>y=z,`` (operands and results may be negative, written
    with a leading ``-``), then ``#`` and the value. Example::

        prompt   (3+4)*5-2=
        solution 3+4=7,7*5=35,35-2=33,#33

    ``2-3*4=`` gives ``3*4=12,2-12=-10,#-10``; ``3-(2-5)=`` gives ``2-5=-3,3--3=6,#6``. A
    problem with k operands has k - 1 steps (8 to about 35 characters at the defaults); meta:
    ``operands``, ``depth`` (of the tree), ``parens`` (pairs written).
    """

    name: ClassVar[str] = "arith"
    symbols: ClassVar[str] = "+-*()=,"
    min_operands: int = 2
    max_operands: int = 4
    max_operand: int = 9

    def __post_init__(self) -> None:
        _check_range("min_operands", self.min_operands, "max_operands", self.max_operands, 2)
        _checks.integer("max_operand", self.max_operand)

    def _problem(self, rng: random.Random) -> Problem:
        k = rng.randint(self.min_operands, self.max_operands)
        tree = _random_tree(rng, [rng.randint(1, self.max_operand) for _ in range(k)])
        text = _render(tree)
        return Problem(f"{text}=", str(_value(tree)),
                       {"operands": k, "depth": _depth(tree), "parens": text.count("(")})

    def solution(self, problem: Problem) -> str:
        tree = _parse(problem.prompt[:-1]) if problem.prompt.endswith("=") else None
        if tree is None:
            _checks.fail("problem.prompt", problem.prompt, "'<expression>=' over + - * and parentheses")
        value, steps = _steps(tree)
        return "".join(s + "," for s in steps) + f"#{value}"


# ---------------------------------------------------------------------------------------------
# countdown


@dataclass(frozen=True, kw_only=True)
class CountdownTask(_Synthetic):
    """Reach a target from given numbers with ``+``, ``-``, ``*`` and parentheses.

    Prompt ``n1,n2,...>target:`` with the numbers in increasing order. The answer is an
    expression that uses each given number AT MOST ONCE (a number listed twice may be used twice;
    numbers not listed may not be used; no unary minus, no leading zeros) and equals the target.
    Several answers can be correct: ``verify`` checks validity, not equality with
    ``problem.answer`` (which is the expression the problem was generated from).

    Generation: between ``min_numbers`` and ``max_numbers`` numbers from 1..``max_number`` are
    combined by a random tree (every number used exactly once; a subtraction whose left side is
    smaller has its sides swapped, so every intermediate is >= 0); the tree's value is the target,
    redrawn until it lies in 1..``max_target`` and is not itself one of the numbers (which would
    make ``#<target>`` a one-token answer; about 1 problem in 7 otherwise). So a solution exists.

    Solution: the tree's operations in evaluation order as ``x<op>y=z,``, then ``#`` and the
    expression. Example::

        prompt   3,5,7>32:
        solution 5*7=35,35-3=32,#5*7-3

    About 18 to 23 characters at the defaults; meta: ``numbers`` (sorted tuple), ``target``,
    ``n_numbers``. ``solution`` and ``verify`` read the numbers and target from the prompt.
    """

    name: ClassVar[str] = "countdown"
    symbols: ClassVar[str] = "+-*()=,>:"
    min_numbers: int = 3
    max_numbers: int = 3
    max_number: int = 9
    max_target: int = 50

    def __post_init__(self) -> None:
        _check_range("min_numbers", self.min_numbers, "max_numbers", self.max_numbers, 2)
        for name in ("max_number", "max_target"):
            _checks.integer(name, getattr(self, name))

    def _problem(self, rng: random.Random) -> Problem:
        k = rng.randint(self.min_numbers, self.max_numbers)
        for _ in range(_MAX_DRAWS):  # redraw until the target is in range (~2 draws at the defaults)
            tree = _nonnegative(_random_tree(rng, [rng.randint(1, self.max_number) for _ in range(k)]))
            target = _value(tree)
            if 1 <= target <= self.max_target and target not in _leaves(tree):
                break
        else:
            _checks.fail("max_target", self.max_target,
                         f"a value that {k} numbers from 1..{self.max_number} reach more often (raise it; "
                         "targets equal to one of the numbers are redrawn)")
        numbers = tuple(sorted(_leaves(tree)))
        return Problem(f"{','.join(map(str, numbers))}>{target}:", _render(tree),
                       {"numbers": numbers, "target": target, "n_numbers": k})

    def solution(self, problem: Problem) -> str:
        tree = _parse(problem.answer)
        if tree is None:
            _checks.fail("problem.answer", problem.answer, "an expression over + - * and parentheses")
        _, steps = _steps(tree)
        return "".join(s + "," for s in steps) + f"#{problem.answer}"

    def extract(self, completion: str) -> str | None:
        """The expression after the last ``#``, when it is a well-formed expression."""
        answer = _after_last_hash(completion)
        return answer if answer and _parse(answer) is not None else None

    def verify(self, completion: str, problem: Problem) -> int:
        """1 when the answer uses only the given numbers, each at most once, and equals the target."""
        m = _COUNTDOWN_PROMPT.fullmatch(problem.prompt)
        if m is None:
            _checks.fail("problem.prompt", problem.prompt, "'<n1>,<n2>,...><target>:' with non-negative integers")
        tree = _parse(_after_last_hash(completion) or "")
        if tree is None:
            return 0
        numbers, target = Counter(int(x) for x in m[1].split(",")), int(m[2])
        return int(not Counter(_leaves(tree)) - numbers and _value(tree) == target)


_MAX_DRAWS = 10_000
_COUNTDOWN_PROMPT = re.compile(r"([0-9]+(?:,[0-9]+)*)>([0-9]+):")


def _nonnegative(tree: Tree) -> Tree:
    """Swap the sides of every subtraction whose left side is smaller (bottom up)."""
    if isinstance(tree, int):
        return tree
    op, left, right = tree[0], _nonnegative(tree[1]), _nonnegative(tree[2])
    if op == "-" and _value(left) < _value(right):
        left, right = right, left
    return (op, left, right)


# ---------------------------------------------------------------------------------------------
# the registry

TASKS: dict[str, Callable[..., Task]] = {
    "add": AdditionTask,
    "arith": ArithmeticTask,
    "countdown": CountdownTask,
}


def make_task(name: str, **options: Any) -> Task:
    """The synthetic task ``name`` built with ``options`` (each task's docstring lists them)."""
    factory = _checks.choose("task", name, TASKS)
    parameters = inspect.signature(factory).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        allowed = [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for key in options:
            if key not in allowed:
                _checks.fail(f"{name} option", key, ", ".join(allowed) or "none")
    return factory(**options)


# ---------------------------------------------------------------------------------------------
# real question-answer data (GSM8K, DeepScaleR, DAPO-17k, ...)

_GSM8K_MARK = "####"
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NUMBER = re.compile(r"-?[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?(?:/[0-9]+)?")
_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
_SUFFIXES = (".jsonl", ".parquet")


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
    would be 2). ``sample`` draws records without replacement, reshuffling when all are used.
    """

    name: ClassVar[str] = "qa"

    def __init__(self, problems: Sequence[Problem], *, name: str = "qa") -> None:
        if not problems:
            _checks.fail("problems", "none", "at least one problem")
        self.name = name  # the file's stem, so runs on two files are told apart
        self.problems = list(problems)
        self._alphabet = frozenset("".join(p.prompt + self.solution(p) for p in self.problems))

    @property
    def alphabet(self) -> frozenset[str]:
        return self._alphabet

    def sample(self, n: int, seed: int) -> list[Problem]:
        _check_sample_args(n, seed)
        rng, out = random.Random(seed), []
        while len(out) < n:
            order = list(range(len(self.problems)))
            rng.shuffle(order)
            out.extend(self.problems[i] for i in order[: n - len(out)])
        return out

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
    if path.suffix not in _SUFFIXES:
        _checks.fail("path", str(path), "a file ending in " + ", ".join(_SUFFIXES))
    if not path.is_file():
        _checks.fail("path", f"{path} (no such file)", "an existing .jsonl or .parquet file")
    records = _read_jsonl(path) if path.suffix == ".jsonl" else _read_parquet(path)
    if not records:
        _checks.fail(str(path), "no records", "a file with at least one question-answer record")
    problems = []
    for where, record in records:
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
        problems.append(Problem(question, answer, {"index": len(problems), "reference": reference}))
    return QATask(problems, name=path.stem)


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


def load_task(spec: str):
    """A task of rlvrlab.lm.tasks by name, or a question-answer file."""
    if spec in TASKS:
        return make_task(spec)
    if spec.endswith((".jsonl", ".parquet")):
        return load_qa(spec)
    _checks.fail("task", spec, f"a task name ({', '.join(sorted(TASKS))}) or a .jsonl / .parquet question-answer file")


