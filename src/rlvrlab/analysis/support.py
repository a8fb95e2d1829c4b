"""Empirical support of a base model and its RLVR descendant (METHODS.md §A, "The Invisible Leash").

The correct set of a problem x is C = {y : R(x, y) = 1}; a policy's empirical support is the part of
C it reaches. Support is taken at the *answer* level: traces reaching the same verified answer are
one class (``answer_support``). With k samples per problem from each model, a problem is solved by
a model when at least one of its samples is correct, and falls in exactly one of

    P (preservation)      both models solve it
    E (expansion)         only the RLVR model solves it
    S (shrinkage)         only the base model solves it
    O (out of support)    neither does

With the counts summed over a benchmark (``support_metrics``):

    SRR  = P / (P + S)                    support retention rate
    NDR  = E / (P + E)                    net discovery rate
    SDS  = 2·SRR·NDR / (SRR + NDR)        support dynamics score (harmonic mean of the two)
    NSCR = (E − S) / (P + E + S)          net support change rate, in [−1, 1]

A rate whose denominator is 0 is undefined and returned as NaN (never ±inf); SDS is NaN exactly
when SRR or NDR is (its own denominator cannot vanish: NDR = 0 needs P > 0, which makes SRR > 0).

Threshold (``support_threshold``): an answer unseen in k i.i.d. samples has, with confidence 1 − ζ,
probability at most ε = −log(ζ)/k (from (1 − ε)^k ≤ e^{−εk} = ζ); k = 8192, ζ = 0.05 gives
ε ≈ 3.66e-4. Empirical support is therefore {y ∈ C : q(y|x) > ε} up to that confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlvrlab import _checks

__all__ = ["answer_support", "support_metrics", "support_threshold"]


def support_metrics(base_solved: Any, rl_solved: Any) -> dict[str, float]:
    """P/E/S/O counts and SRR, NDR, SDS, NSCR over a benchmark of C problems.

    base_solved: (C,) booleans, True where at least one base sample is correct
    rl_solved:   (C,) booleans, the same for the RLVR model (same problems, same order)

    Lists, numpy or torch boolean arrays. From per-problem correct counts pass ``counts > 0``; from
    ``answer_support`` pass ``[bool(s) for s in supports]``. Returns
    {"P", "E", "S", "O": int counts, "SRR", "NDR", "SDS", "NSCR": float, NaN where undefined}.
    """
    base = _solved("base_solved", base_solved)
    rl = _solved("rl_solved", rl_solved)
    if base.shape != rl.shape:
        _checks.fail("rl_solved", f"{rl.size} problems", f"one entry per problem, as in base_solved ({base.size})")
    P, E = int((base & rl).sum()), int((~base & rl).sum())
    S, O = int((base & ~rl).sum()), int((~base & ~rl).sum())
    SRR, NDR = _ratio(P, P + S), _ratio(E, P + E)
    SDS = math.nan if math.isnan(SRR) or math.isnan(NDR) else 2 * SRR * NDR / (SRR + NDR)
    return {"P": P, "E": E, "S": S, "O": O, "SRR": SRR, "NDR": NDR, "SDS": SDS, "NSCR": _ratio(E - S, P + E + S)}


def support_threshold(k: int, zeta: float = 0.05) -> float:
    """ε = −log(ζ)/k: with confidence 1 − ζ, an answer unseen in k i.i.d. samples has probability ≤ ε.

    k:    the number of samples per problem, an integer >= 1
    zeta: the allowed failure probability ζ, in (0, 1)
    """
    _checks.integer("k", k)
    if isinstance(zeta, bool) or not isinstance(zeta, (int, float)) or not 0 < zeta < 1:
        _checks.fail("zeta", zeta, "a number in (0, 1), exclusive")
    return -math.log(zeta) / k


def answer_support(
    answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[int | bool]], *, k: int | None = None
) -> list[set[str]]:
    """The distinct correct answers seen for each problem: its answer-level empirical support.

    answers: C problems, each a sequence of extracted answers, one per sample (None: unparseable)
    correct: the same nesting, the verifier's 0/1 (or bool) reward of each sample
    k:       use only the first k samples of each problem (the support at budget k); None: all

    Returns one set per problem (C,); a problem is solved exactly when its set is non-empty.
    The verifier judges the extracted answer, so one answer string flagged both correct and
    incorrect within a problem, or a None flagged correct, means misaligned inputs: a ValueError.
    """
    if isinstance(answers, (str, bytes)) or len(answers) == 0:
        _checks.fail("answers", answers, "a non-empty sequence with one sequence of answers per problem")
    if len(correct) != len(answers):
        _checks.fail("correct", f"{len(correct)} problems", f"one sequence of rewards per problem ({len(answers)})")
    if k is not None:
        _checks.integer("k", k)
    return [_one_support(i, a, r, k) for i, (a, r) in enumerate(zip(answers, correct))]


def _one_support(i: int, answers: Sequence[str | None], correct: Sequence[Any], k: int | None) -> set[str]:
    if isinstance(answers, (str, bytes)):
        _checks.fail(f"answers[{i}]", answers, "a sequence of extracted answers (str or None), one per sample")
    if len(correct) != len(answers):
        _checks.fail(f"correct[{i}]", f"{len(correct)} rewards", f"one per sample, as in answers[{i}] ({len(answers)})")
    if k is not None:
        if len(answers) < k:
            _checks.fail("k", k, f"at most the number of samples of every problem (problem {i} has {len(answers)})")
        answers, correct = answers[:k], correct[:k]
    right, wrong = set(), set()
    for j, (a, r) in enumerate(zip(answers, correct)):
        r = _reward(f"correct[{i}][{j}]", r)
        if r and a is None:
            _checks.fail(f"correct[{i}][{j}]", 1, "0 for an unparseable answer (None)")
        (right if r else wrong).add(a)
    both = right & wrong
    if both:
        _checks.fail(f"correct[{i}]", f"answer {min(both)!r} flagged both correct and incorrect",
                     "one verdict per distinct answer (rewards aligned with answers)")
    return right


def _reward(field: str, r: Any) -> bool:
    if isinstance(r, torch.Tensor) and r.numel() == 1 or isinstance(r, np.generic):
        r = r.item()
    if not (isinstance(r, (bool, int, float)) and r in (0, 1)):
        _checks.fail(field, r, "0 or 1 (or a bool)")
    return bool(r)


def _solved(field: str, value: Any) -> np.ndarray:
    """A 1-D numpy bool array; anything but booleans (0/1 ints, counts, floats) is refused."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.size == 0:
        _checks.fail(field, f"an empty array of shape {arr.shape}", "one boolean per problem, at least one problem")
    if arr.dtype != np.bool_:
        _checks.fail(field, f"an array of dtype {arr.dtype}",
                     "booleans, one per problem (from correct counts, pass counts > 0)")
    if arr.ndim != 1:
        _checks.fail(field, f"shape {arr.shape}", "a 1-D sequence of booleans (C,), one per problem")
    return arr


def _ratio(num: int, den: int) -> float:
    """num / den, NaN where den = 0 (the rate is undefined there, not infinite)."""
    return num / den if den else math.nan
