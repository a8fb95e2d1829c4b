"""rlvrlab.analysis.passk and .support: pass@k against brute-force enumeration of k-subsets and
exact rational arithmetic (math.comb, Fractions) up to n = 10^5; its identities (pass@1 = c/n,
pass@n = [c > 0]) exactly; the support metrics on cases worked by hand, NaN where a rate is
undefined; the ε threshold; and the message of every bad input."""

from __future__ import annotations

import itertools
import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rlvrlab.analysis.passk import pass_at_k, pass_at_k_curve
from rlvrlab.analysis.support import answer_support, support_metrics, support_threshold


def _exact(n: int, c: int, k: int) -> Fraction:
    """1 − C(n−c, k) / C(n, k) in exact rationals (math.comb is 0 when n − c < k)."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def _close(got: float, exact: Fraction, rel: float) -> bool:
    """Relative closeness to an exact value; an exact 0 or 1 must come out exactly."""
    if exact in (0, 1):
        return got == exact
    return abs(Fraction(got) - exact) <= rel * exact


# --- pass@k -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration_of_all_k_subsets(n):
    for c in range(n + 1):
        samples = [1] * c + [0] * (n - c)  # which samples are correct does not matter, only how many
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            hit = sum(any(samples[i] for i in s) for s in subsets)
            brute = Fraction(hit, len(subsets))
            got = pass_at_k(n, c, k)
            assert isinstance(got, float)
            assert _close(got, brute, 1e-14), (n, c, k, got, brute)


@given(st.integers(1, 3000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_math_comb(nck):
    n, c, k = nck
    assert _close(pass_at_k(n, c, k), _exact(n, c, k), 1e-12)


@pytest.mark.parametrize("c, k", [(1, 1), (1, 50_000), (3, 7), (100, 1000), (500, 20), (2, 99_999), (50_000, 2),
                                  (99_990, 10), (99_989, 10), (99_999, 100_000)])
def test_pass_at_k_large_n_exact(c, k):
    n = 100_000
    assert _close(pass_at_k(n, c, k), _exact(n, c, k), 1e-12)


def test_pass_at_k_tiny_values_keep_relative_accuracy():
    # c = 1: pass@k = k/n; with 1 − Π computed naively 1e-5 would carry ~1e-11 relative error.
    assert pass_at_k(100_000, 1, 1) == 1e-5
    assert pass_at_k(100_000, 1, 3) == 3 / 100_000
    assert _close(pass_at_k(100_000, 2, 1), Fraction(2, 100_000), 1e-15)


@pytest.mark.parametrize("n", range(1, 41))
def test_pass_at_1_is_c_over_n_and_pass_at_n_is_indicator(n):
    for c in range(n + 1):
        assert pass_at_k(n, c, 1) == c / n
        assert pass_at_k(n, c, n) == (1.0 if c > 0 else 0.0)


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_pass_at_k_is_nondecreasing_in_k(nc):
    n, c = nc
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(a <= b for a, b in itertools.pairwise(values))


def test_pass_at_k_arrays_match_scalars_and_keep_shape():
    gen = np.random.default_rng(0)
    n = gen.integers(5, 40, size=(3, 4))
    c = gen.integers(0, 41, size=(3, 4)) % (n + 1)
    out = pass_at_k(n, c, 5)
    assert out.dtype == np.float64 and out.shape == (3, 4)
    assert all(out[i, j] == pass_at_k(int(n[i, j]), int(c[i, j]), 5) for i in range(3) for j in range(4))
    np.testing.assert_array_equal(pass_at_k(torch.from_numpy(n), torch.from_numpy(c).int(), 5), out)
    # a scalar n broadcasts against one c per problem
    np.testing.assert_array_equal(pass_at_k(10, np.array([0, 3, 10]), 2), [0.0, pass_at_k(10, 3, 2), 1.0])


def test_pass_at_k_curve_is_the_mean_over_problems():
    n, c = [10, 10, 8], [0, 3, 8]
    curve = pass_at_k_curve(n, c, [8, 1, 2, 2])
    assert list(curve) == [1, 2, 8]
    # by hand: pass@1 = (0 + 3/10 + 1) / 3; pass@2 = (0 + (1 − C(7,2)/C(10,2)) + 1) / 3 = (0 + 24/45 + 1) / 3
    assert curve[1] == pytest.approx((0 + 0.3 + 1) / 3, rel=1e-15)
    assert curve[2] == pytest.approx((0 + 24 / 45 + 1) / 3, rel=1e-15)
    assert curve[8] == pytest.approx(float((0 + _exact(10, 3, 8) + 1) / 3), rel=1e-15)
    assert all(isinstance(v, float) for v in curve.values())


_PASSK_BAD = [
    ((10, 3, 11), r"^k: got 11; allowed: an integer with 1 <= k <= n for every problem \(the smallest n is 10\)$"),
    (([10, 4], [3, 1], 5), r"^k: got 5; allowed: an integer with 1 <= k <= n .*smallest n is 4\)$"),
    ((10, 3, 0), r"^k: got 0; allowed: an integer >= 1$"),
    ((10, 3, -2), r"^k: got -2; allowed: an integer >= 1$"),
    ((10, 3, 2.0), r"^k: got 2.0; allowed: an integer >= 1$"),
    ((10, 3, True), r"^k: got True; allowed: an integer >= 1$"),
    ((10, 11, 1), r"^c: got 11; allowed: an integer with c <= n, the number of samples \(n = 10\)$"),
    (([10, 10], [3, 11], 1), r"^c: got '11 at index 1'; allowed: an integer with c <= n, .*\(n = 10\)$"),
    ((10, -1, 1), r"^c: got -1; allowed: an integer >= 0$"),
    ((0, 0, 1), r"^n: got 0; allowed: an integer >= 1$"),
    ((np.array([[4, 4], [4, 0]]), 0, 1), r"^n: got '0 at index \(1, 1\)'; allowed: an integer >= 1$"),
    ((10.0, 3, 1), r"^n: got 10.0; allowed: integers \(a Python int, or an integer numpy/torch array\)$"),
    ((10, 2.5, 1), r"^c: got 2.5; allowed: integers"),
    ((10, True, 1), r"^c: got True; allowed: integers"),
    ((torch.tensor([10.0]), 3, 1), r"^n: got 'an array of dtype float32'; allowed: integers"),
    ((np.array([10, 10]), np.array([True, False]), 1), r"^c: got 'an array of dtype bool'; allowed: integers"),
    (([], [], 1), r"^n: got 'an empty array of shape \(0,\)'; allowed: one count per problem, at least one problem$"),
    ((10, np.zeros(0, dtype=int), 1), r"^c: got 'an empty array of shape \(0,\)'; allowed: one count per problem"),
    (([10, 10], [1, 1, 1], 1), r"^c: got 'shape \(3,\)'; allowed: a shape that broadcasts with n's shape \(2,\)$"),
]


@pytest.mark.parametrize("args, message", _PASSK_BAD)
def test_pass_at_k_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(*args)


@pytest.mark.parametrize("ks, message", [
    ([], r"^ks: got \[\]; allowed: a non-empty sequence of integers k >= 1$"),
    (4, r"^ks: got 4; allowed: a non-empty sequence of integers k >= 1$"),
    ([1, 11], r"^k: got 11; allowed: an integer with 1 <= k <= n"),
    ([1, 0.5], r"^k: got 0.5; allowed: an integer >= 1$"),
])
def test_pass_at_k_curve_bad_input(ks, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k_curve([10, 12], [1, 2], ks)


# --- support metrics ----------------------------------------------------------------------------


def _m(P, E, S, O, SRR, NDR, SDS, NSCR) -> dict:
    return {"P": P, "E": E, "S": S, "O": O, "SRR": SRR, "NDR": NDR, "SDS": SDS, "NSCR": NSCR}


def _assert_metrics(got: dict, expected: dict) -> None:
    assert set(got) == {"P", "E", "S", "O", "SRR", "NDR", "SDS", "NSCR"}
    for key, want in expected.items():
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got[key]), (key, got[key])
        else:
            assert got[key] == pytest.approx(want, rel=1e-15, abs=0), (key, got[key])


def test_support_metrics_worked_by_hand():
    base = [True, True, True, False, False, True, False, True]
    rl = [True, False, True, True, False, True, False, False]
    # problem:  0  1  2  3  4  5  6  7
    # class:    P  S  P  E  O  P  O  S   ->  P = 3, E = 1, S = 2, O = 2
    # SRR = 3/(3+2) = 0.6;  NDR = 1/(3+1) = 0.25;  SDS = 2·0.6·0.25/0.85 = 0.3/0.85 = 6/17
    # NSCR = (1 − 2)/(3 + 1 + 2) = −1/6
    expected = {"P": 3, "E": 1, "S": 2, "O": 2, "SRR": 0.6, "NDR": 0.25, "SDS": 6 / 17, "NSCR": -1 / 6}
    _assert_metrics(support_metrics(base, rl), expected)
    _assert_metrics(support_metrics(np.array(base), torch.tensor(rl)), expected)
    assert all(isinstance(support_metrics(base, rl)[key], int) for key in "PESO")


@pytest.mark.parametrize("base, rl, expected", [
    # only O: every denominator is 0 -> all four rates NaN
    ([False, False], [False, False], _m(0, 0, 0, 2, math.nan, math.nan, math.nan, math.nan)),
    # only E: P + S = 0 -> SRR NaN (and so SDS); NDR = 2/2 = 1; NSCR = (2 − 0)/2 = 1
    ([False, False], [True, True], _m(0, 2, 0, 0, math.nan, 1.0, math.nan, 1.0)),
    # only S: P + E = 0 -> NDR NaN (and so SDS); SRR = 0/1 = 0; NSCR = (0 − 1)/1 = −1
    ([True, False], [False, False], _m(0, 0, 1, 1, 0.0, math.nan, math.nan, -1.0)),
    # one E, one S: SRR = 0/1 = 0, NDR = 1/1 = 1, SDS = 2·0·1/(0 + 1) = 0, NSCR = (1 − 1)/2 = 0
    ([True, False], [False, True], _m(0, 1, 1, 0, 0.0, 1.0, 0.0, 0.0)),
    # only P: SRR = 1, NDR = 0/2 = 0, SDS = 0, NSCR = 0/2 = 0
    ([True, True], [True, True], _m(2, 0, 0, 0, 1.0, 0.0, 0.0, 0.0)),
])
def test_support_metrics_edge_cases(base, rl, expected):
    got = support_metrics(base, rl)
    _assert_metrics(got, expected)
    assert not any(math.isinf(v) for v in got.values())


@pytest.mark.parametrize("base, rl, message", [
    ([True, False], [True], r"^rl_solved: got '1 problems'; allowed: one entry per problem, as in base_solved \(2\)$"),
    ([], [], r"^base_solved: got 'an empty array of shape \(0,\)'; allowed: one boolean per problem, at least one"),
    ([True], [], r"^rl_solved: got 'an empty array of shape \(0,\)'"),
    ([1, 0], [True, False], (r"^base_solved: got 'an array of dtype int64'; allowed: booleans, one per problem "
                             r"\(from correct counts, pass counts > 0\)$")),
    ([True, False], torch.tensor([0.0, 1.0]), r"^rl_solved: got 'an array of dtype float32'; allowed: booleans"),
    ([True, False], ["yes", "no"], r"^rl_solved: got 'an array of dtype <U3'; allowed: booleans"),
    ([[True], [False]], [[True], [False]], r"^base_solved: got 'shape \(2, 1\)'; allowed: a 1-D sequence of booleans"),
    (True, True, r"^base_solved: got 'shape \(\)'; allowed: a 1-D sequence of booleans"),
])
def test_support_metrics_bad_input(base, rl, message):
    with pytest.raises(ValueError, match=message):
        support_metrics(base, rl)


# --- threshold ----------------------------------------------------------------------------------


def test_support_threshold():
    eps = support_threshold(8192, 0.05)
    assert eps == pytest.approx(3.657e-4, rel=1e-3)
    assert eps == -math.log(0.05) / 8192
    assert (1 - eps) ** 8192 <= 0.05  # the defining bound: unseen in k draws has probability ≤ ζ
    assert support_threshold(100) == -math.log(0.05) / 100  # ζ defaults to 0.05


@pytest.mark.parametrize("args, message", [
    ((0,), r"^k: got 0; allowed: an integer >= 1$"),
    ((8192.0,), r"^k: got 8192.0; allowed: an integer >= 1$"),
    ((8192, 0.0), r"^zeta: got 0.0; allowed: a number in \(0, 1\), exclusive$"),
    ((8192, 1), r"^zeta: got 1; allowed: a number in \(0, 1\), exclusive$"),
    ((8192, math.nan), r"^zeta: got nan; allowed: a number in \(0, 1\)"),
    ((8192, True), r"^zeta: got True; allowed: a number in \(0, 1\)"),
])
def test_support_threshold_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        support_threshold(*args)


# --- answer-level support -----------------------------------------------------------------------


def test_answer_support_by_hand():
    answers = [["12", "3+9", None, "12", "7"], ["x", None], ["5"]]
    correct = [[1, 1, 0, 1, 0], [0, 0], [True]]
    # problem 0: two distinct verified answers ("12" twice is one class); "7" and None wrong
    # problem 1: nothing correct -> empty (unsolved); problem 2: bools accepted
    assert answer_support(answers, correct) == [{"12", "3+9"}, set(), {"5"}]
    # budget k = 1: only the first sample of each problem
    assert answer_support(answers, correct, k=1) == [{"12"}, set(), {"5"}]
    # rewards as numpy / torch scalars, and floats 0.0 / 1.0
    assert answer_support([["a", "b"]], [[np.int64(1), torch.tensor(0)]]) == [{"a"}]
    assert answer_support([["a", "b"]], [[1.0, 0.0]]) == [{"a"}]
    # solved problems are the non-empty supports, ready for support_metrics
    base = [bool(s) for s in answer_support(answers, correct)]
    rl = [bool(s) for s in answer_support([["12"], ["x"], ["4"]], [[1], [1], [0]])]
    assert support_metrics(base, rl)["P"] == 1 and support_metrics(base, rl)["E"] == 1


@pytest.mark.parametrize("answers, correct, k, message", [
    ([], [], None, r"^answers: got \[\]; allowed: a non-empty sequence with one sequence of answers per problem$"),
    ([["a"]], [[1], [0]], None, r"^correct: got '2 problems'; allowed: one sequence of rewards per problem \(1\)$"),
    ([["a", "b"]], [[1]], None, r"^correct\[0\]: got '1 rewards'; allowed: one per sample, as in answers\[0\] \(2\)$"),
    (["ab"], [[1, 0]], None, r"^answers\[0\]: got 'ab'; allowed: a sequence of extracted answers"),
    ([["a"], ["b"]], [[0], [2]], None, r"^correct\[1\]\[0\]: got 2; allowed: 0 or 1 \(or a bool\)$"),
    ([["a"]], [[0.5]], None, r"^correct\[0\]\[0\]: got 0.5; allowed: 0 or 1 \(or a bool\)$"),
    ([["a", None]], [[0, 1]], None, r"^correct\[0\]\[1\]: got 1; allowed: 0 for an unparseable answer \(None\)$"),
    ([["a", "a"]], [[1, 0]], None, "^" + re.escape("correct[0]: got \"answer 'a' flagged both correct and incorrect\"; "
                                                   "allowed: one verdict per distinct answer")),
    ([["a", "b"], ["c"]], [[1, 0], [1]], 2, (r"^k: got 2; allowed: at most the number of samples of every problem "
                                             r"\(problem 1 has 1\)$")),
    ([["a"]], [[1]], 0, r"^k: got 0; allowed: an integer >= 1$"),
])
def test_answer_support_bad_input(answers, correct, k, message):
    with pytest.raises(ValueError, match=message):
        answer_support(answers, correct, k=k)
