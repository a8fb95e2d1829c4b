"""The synthetic tasks of rlvrlab's tiny models, of graded difficulty (``TASKS``, ``make_task``).

| name        | prompt          | solution                          | difficulty |
|-------------|-----------------|-----------------------------------|------------|
| `add`       | `57+68=`        | `7+8=15,5+6+1=12,#125`            | easy (GSM8K-like) |
| `arith`     | `(3+4)*5-2=`    | `3+4=7,7*5=35,35-2=33,#33`        | medium |
| `countdown` | `3,5,7>32:`     | `5*7=35,35-3=32,#5*7-3`           | hard (DeepScaleR / DAPO-like) |

Their verifiers check only the final answer (outcome reward, as in the paper): the scratchpad is
there to make the answer learnable, not to be graded. One ``random.Random(seed)`` is consumed
problem by problem, so ``sample(m, seed)`` is a prefix of ``sample(n, seed)`` for m <= n.
"""

from __future__ import annotations

import inspect
import random
import re
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rlvrlab import _checks
from rlvrlab.lm.tasks import expr
from rlvrlab.lm.tasks.base import Problem, Task, _check_sample_args

__all__ = ["AdditionTask", "ArithmeticTask", "CountdownTask", "TASKS", "make_task"]

DIGITS = "0123456789"


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

    ``repeat`` writes the column steps that many times before the answer (``repeat=2``:
    ``7+8=15,5+6+1=12,7+8=15,5+6+1=12,#125``): a longer worked solution of the same problem, the
    response-length axis of the paper's §4 (the critical step against T) with the difficulty held
    fixed. Named in a task spec as ``add:repeat=4`` (rlvrlab.lm.tasks.parse_task_spec).
    """

    name: ClassVar[str] = "add"
    symbols: ClassVar[str] = "+=,"
    min_digits: int = 2
    max_digits: int = 4
    repeat: int = 1

    def __post_init__(self) -> None:
        _check_range("min_digits", self.min_digits, "max_digits", self.max_digits, 1)
        _check_range("repeat", self.repeat, "repeat", self.repeat, 1)

    def __repr__(self) -> str:
        # repeat=1 is left out so that the tiny models cached before it existed keep their names
        # (rlvrlab.lm.pretrain hashes the tasks' reprs)
        extra = f", repeat={self.repeat}" if self.repeat != 1 else ""
        return f"AdditionTask(min_digits={self.min_digits}, max_digits={self.max_digits}{extra})"

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
        return "".join(s + "," for s in steps) * self.repeat + f"#{a + b}"


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
        tree = expr.random_tree(rng, [rng.randint(1, self.max_operand) for _ in range(k)])
        text = expr.render(tree)
        return Problem(f"{text}=", str(expr.value(tree)),
                       {"operands": k, "depth": expr.depth(tree), "parens": text.count("(")})

    def solution(self, problem: Problem) -> str:
        tree = expr.parse(problem.prompt[:-1]) if problem.prompt.endswith("=") else None
        if tree is None:
            _checks.fail("problem.prompt", problem.prompt, "'<expression>=' over + - * and parentheses")
        value, steps = expr.steps(tree)
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
            tree = expr.nonnegative(expr.random_tree(rng, [rng.randint(1, self.max_number) for _ in range(k)]))
            target = expr.value(tree)
            if 1 <= target <= self.max_target and target not in expr.leaves(tree):
                break
        else:
            _checks.fail("max_target", self.max_target,
                         f"a value that {k} numbers from 1..{self.max_number} reach more often (raise it; "
                         "targets equal to one of the numbers are redrawn)")
        numbers = tuple(sorted(expr.leaves(tree)))
        return Problem(f"{','.join(map(str, numbers))}>{target}:", expr.render(tree),
                       {"numbers": numbers, "target": target, "n_numbers": k})

    def solution(self, problem: Problem) -> str:
        tree = expr.parse(problem.answer)
        if tree is None:
            _checks.fail("problem.answer", problem.answer, "an expression over + - * and parentheses")
        _, steps = expr.steps(tree)
        return "".join(s + "," for s in steps) + f"#{problem.answer}"

    def extract(self, completion: str) -> str | None:
        """The expression after the last ``#``, when it is a well-formed expression."""
        answer = _after_last_hash(completion)
        return answer if answer and expr.parse(answer) is not None else None

    def verify(self, completion: str, problem: Problem) -> int:
        """1 when the answer uses only the given numbers, each at most once, and equals the target."""
        m = _COUNTDOWN_PROMPT.fullmatch(problem.prompt)
        if m is None:
            _checks.fail("problem.prompt", problem.prompt, "'<n1>,<n2>,...><target>:' with non-negative integers")
        tree = expr.parse(_after_last_hash(completion) or "")
        if tree is None:
            return 0
        numbers, target = Counter(int(x) for x in m[1].split(",")), int(m[2])
        return int(not Counter(expr.leaves(tree)) - numbers and expr.value(tree) == target)


_MAX_DRAWS = 10_000
_COUNTDOWN_PROMPT = re.compile(r"([0-9]+(?:,[0-9]+)*)>([0-9]+):")


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
