"""The task interface: a ``Problem`` and the ``Task`` every verifiable task implements (see
rlvrlab.lm.tasks for what a task promises)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from rlvrlab import _checks

__all__ = ["Problem", "Task"]


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
        """``n`` problems, determined by ``seed`` (a question-answer file: at most its distinct records)."""

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
    """The arguments of ``Task.sample``: a count n >= 0 and an integer seed."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        _checks.fail("n", n, "an integer >= 0")
    if isinstance(seed, bool) or not isinstance(seed, int):
        _checks.fail("seed", seed, "an integer")

