"""rlvrlab.analysis.stats against plain-loop references and worked examples: AUC by counting
pairs, Spearman as Pearson's r of hand-ranked data, the slope's t-interval from sums of squares,
bootstrap intervals that cover a known mean, the critical-rate search on windows whose edge
is known, the plateau fit against exact data and a dense grid, and the standard error of a
difference of accuracies against Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlvrlab.analysis.stats import (auc, bootstrap_ci, critical_rate, critical_rates, fit_plateau, loglog_slope, proportion_diff_se,
                                    spearman, spearman_ci)


def _auc_by_pairs(pos, neg) -> float:
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def _average_ranks(a) -> list[float]:
    """Ranks 1..N, tied values sharing the mean of the ranks they occupy (a plain loop)."""
    order = sorted(range(len(a)), key=lambda i: a[i])
    ranks = [0.0] * len(a)
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and a[order[j + 1]] == a[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(a, b) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sizes, values", [((30, 40), 5), ((7, 3), 1000), ((1, 9), 2)])
def test_auc_against_counting_pairs(seed, sizes, values):
    rng = np.random.default_rng(seed)
    pos, neg = rng.integers(0, values, sizes[0]).astype(float), rng.integers(0, values, sizes[1]).astype(float)
    assert auc(pos, neg) == pytest.approx(_auc_by_pairs(pos, neg), abs=1e-12)


def test_auc_worked_examples():
    assert auc([3, 4], [1, 2]) == 1.0  # every positive above every negative
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 1], [1, 1, 1]) == 0.5  # all ties count one half
    assert auc([2, 0], [1]) == 0.5  # one pair won, one lost
    assert math.isnan(auc([], [1.0])) and math.isnan(auc([1.0], []))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n, values", [(10, 3), (50, 1000), (3, 2)])
def test_spearman_is_pearson_of_average_ranks(seed, n, values):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, values, n).astype(float), rng.integers(0, values, n).astype(float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert math.isnan(spearman(x, y))
    else:
        assert spearman(x, y) == pytest.approx(_pearson(_average_ranks(x), _average_ranks(y)), abs=1e-12)


def test_spearman_worked_examples():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1, 2, 3) against (1.5, 1.5, 3): r = 1.5 / sqrt(2 · 1.5) = sqrt(3)/2
    assert spearman([1, 2, 3], [5, 5, 9]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match=r"^y: got '2 values'; allowed: as many values as x \(3\)"):
        spearman([1, 2, 3], [1, 2])


def test_loglog_slope_against_sums_of_squares():
    rng = np.random.default_rng(0)
    x = np.array([1.0, 2, 4, 8, 16, 1, 2, 4])
    y = 3.0 * x**-0.8 * np.exp(0.2 * rng.standard_normal(len(x)))
    lx, ly = [math.log(v) for v in x], [math.log(v) for v in y]
    n = len(lx)
    mx, my = sum(lx) / n, sum(ly) / n
    sxx = sum((a - mx) ** 2 for a in lx)
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx
    resid = [b - my - slope * (a - mx) for a, b in zip(lx, ly)]
    se = math.sqrt(sum(r * r for r in resid) / (n - 2) / sxx)
    t = 2.4469118511449692  # Student's t, 97.5% quantile, 6 degrees of freedom
    fit = loglog_slope(x, y)
    assert fit.n == n
    assert fit.slope == pytest.approx(slope, rel=1e-12)
    assert (fit.low, fit.high) == pytest.approx((slope - t * se, slope + t * se), rel=1e-12)
    assert fit.intercept == pytest.approx(my - slope * mx, rel=1e-12)


def test_loglog_slope_of_an_exact_power_law_and_censored_points():
    x = np.array([1.0, 2, 4, 8, 3])
    y = 5.0 * x**-1.0
    y[-1] = math.inf  # censored: left out
    fit = loglog_slope(x, y)
    assert fit.n == 4 and fit.slope == pytest.approx(-1.0) and fit.intercept == pytest.approx(math.log(5))
    assert fit.high - fit.low == pytest.approx(0.0, abs=1e-9)  # no residual, no width
    few = loglog_slope([1.0, 2, 4], [1.0, math.nan, 0.0])
    assert few.n == 1 and math.isnan(few.slope) and math.isnan(few.low)
    assert math.isnan(loglog_slope([2.0, 2, 2], [1.0, 2, 3]).slope)  # one x: no slope
    with pytest.raises(ValueError, match=r"^x: got \[0.0, 1.0, 2.0\]; allowed: numbers > 0"):
        loglog_slope([0.0, 1, 2], [1.0, 1, 1])


def test_bootstrap_ci_covers_the_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(100):
        sample = rng.normal(2.0, 1.0, 40)
        low, high = bootstrap_ci(np.mean, sample, n_resamples=500, seed=int(rng.integers(1 << 30)))
        assert low < sample.mean() < high
        covered += low <= 2.0 <= high
    assert 88 <= covered <= 99  # 95% nominal; a binomial(100, 0.95) lies in [88, 99] with prob > 0.99


def test_bootstrap_ci_is_seeded_and_degenerate_data_give_nan():
    data = np.arange(20.0)
    assert bootstrap_ci(np.mean, data, seed=3) == bootstrap_ci(np.mean, data, seed=3)
    assert all(math.isnan(v) for v in bootstrap_ci(np.mean, np.ones(10)))
    with pytest.raises(ValueError, match=r"^confidence: got 1.5"):
        bootstrap_ci(np.mean, data, confidence=1.5)


def test_spearman_ci_brackets_the_estimate():
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    low, high = spearman_ci(x, y)
    assert low < spearman(x, y) < high and 0 < low and high < 1
    assert all(math.isnan(v) for v in spearman_ci([1.0, 2.0], [1.0, 2.0]))


def _window(a: float, b: float):
    """Runs converge exactly for rates in [a, b)."""
    calls = []

    def refine(rate: float) -> bool:
        calls.append(rate)
        return a <= rate < b

    return refine, calls


def test_critical_rate_brackets_the_window_edge_and_halves_it_per_bisection():
    rates = [0.1, 1.0, 10.0, 100.0, 1000.0]
    refine, calls = _window(0.5, 42.0)
    ok = [refine(r) for r in rates]
    calls.clear()
    crit = critical_rate(rates, ok, refine, bisection=6)
    assert len(calls) == 6
    assert crit.low <= 42.0 < crit.high
    assert math.log(crit.high / crit.low) == pytest.approx(math.log(10) / 2**6)  # log-width halves each time
    assert crit.rate == pytest.approx(math.sqrt(crit.low * crit.high))
    # worked example, one bisection: [10, 100] -> midpoint sqrt(1000) = 31.6 converges -> [31.6, 100]
    one = critical_rate(rates, ok, _window(0.5, 42.0)[0], bisection=1)
    assert (one.low, one.high) == pytest.approx((math.sqrt(1000), 100.0))


def test_critical_rate_censored_cases():
    rates = [1.0, 2.0, 4.0]
    assert all(math.isnan(v) for v in critical_rate(rates, [False] * 3))  # no window in the grid
    above = critical_rate(rates, [False, True, True])
    assert math.isnan(above.rate) and (above.low, above.high) == (4.0, math.inf)
    # the first failure after the window starts counts, not the slow small rates before it
    assert critical_rate(rates, [False, True, False]) == (math.sqrt(8.0), 2.0, 4.0)
    with pytest.raises(ValueError, match=r"^rates: got \[2.0, 1.0\]; allowed: increasing numbers > 0"):
        critical_rate([2.0, 1.0], [True, False])
    with pytest.raises(ValueError, match=r"^refine: got None"):
        critical_rate(rates, [True, False, False], bisection=2)


def _random_refine(rng: np.random.Generator):
    """A cell's runs off the grid: a window [a, b) in log-rate space, or (half the cells) flags that
    depend on the rate but not monotonically (as a noisy simulator's could)."""
    if rng.random() < 0.5:
        a, b = np.sort(rng.uniform(-3, 5, 2))
        return lambda rate: bool(a <= math.log10(rate) < b)
    salt = int(rng.integers(1 << 30))
    return lambda rate: bool(hash((salt, round(math.log(rate), 9))) % 2)


@pytest.mark.parametrize("seed", range(20))
def test_critical_rates_equal_critical_rate_cell_by_cell(seed):
    """The batched search asks each cell for the same rates in the same order and returns the same
    brackets and rates as the per-cell search, on random grids, flags and refine functions."""
    rng = np.random.default_rng(seed)
    n, L, bisection = int(rng.integers(1, 7)), int(rng.integers(1, 9)), int(rng.integers(0, 6))
    rates = np.sort(10 ** rng.uniform(-2, 4, L))
    converged = rng.random((n, L)) < rng.uniform(0.1, 0.9)
    refines = [_random_refine(rng) for _ in range(n)]

    asked_each: list[list[float]] = []
    expected = []
    for i in range(n):
        asked = []

        def refine(rate, i=i, asked=asked):
            asked.append(rate)
            return refines[i](rate)

        expected.append(critical_rate(rates, converged[i], refine, bisection=bisection))
        asked_each.append(asked)

    asked_batched: list[list[float]] = [[] for _ in range(n)]
    calls = []

    def refine_batch(cells, mids):
        calls.append(list(cells))
        for i, mid in zip(cells, mids):
            asked_batched[i].append(mid)
        return [refines[i](mid) for i, mid in zip(cells, mids)]

    got = critical_rates(rates, converged, refine_batch, bisection=bisection)
    assert asked_batched == asked_each  # the same midpoints, in the same order, cell by cell
    bracketed = [i for i in range(n) if asked_each[i]]
    assert calls == ([bracketed] * bisection if bracketed else [])  # one call per bisection step
    for g, e in zip(got, expected, strict=True):
        assert all((a == b) or (math.isnan(a) and math.isnan(b)) for a, b in zip(g, e)), (g, e)


def test_critical_rates_worked_example_and_bad_input():
    rates = [0.1, 1.0, 10.0, 100.0, 1000.0]
    window = [[False, True, True, False, False],  # [10, 100] -> sqrt(1000) converges -> [31.6, 100]
              [False, False, False, False, False],  # no window: never refined
              [True, True, True, True, True]]  # above the grid: never refined
    calls = []

    def refine(cells, mids):
        calls.append((cells, mids))
        return [True] * len(cells)

    got = critical_rates(rates, window, refine, bisection=1)
    assert calls == [([0], [pytest.approx(math.sqrt(1000))])]
    assert (got[0].low, got[0].high) == pytest.approx((math.sqrt(1000), 100.0))
    assert all(math.isnan(v) for v in got[1]) and (got[2].low, got[2].high) == (1000.0, math.inf)
    with pytest.raises(ValueError, match=r"^converged: got 'shape \(5,\)'"):
        critical_rates(rates, window[0])
    with pytest.raises(ValueError, match=r"^refine: got None"):
        critical_rates(rates, window, bisection=1)
    with pytest.raises(ValueError, match=r"^refine: got '2 flags'"):
        critical_rates(rates, window, lambda cells, mids: [True, True], bisection=1)


def _plateau_sse(c: float, lr, plateau) -> float:
    return sum((j - 1 / (1 + (a / c) ** 2)) ** 2 for a, j in zip(lr, plateau))


def test_fit_plateau_recovers_c_from_exact_plateaus():
    lr = np.array([1.0, 3, 10, 30, 100, 300])
    c, r2 = fit_plateau(lr, 1 / (1 + (lr / 30.0) ** 2))
    assert c == pytest.approx(30.0, rel=1e-6) and r2 == pytest.approx(1.0, abs=1e-12)


def test_fit_plateau_against_a_dense_grid():
    rng = np.random.default_rng(4)
    lr = np.repeat([1.0, 10, 100, 1000], 3)
    plateau = np.clip(1 / (1 + (lr / 200.0) ** 2) + 0.05 * rng.standard_normal(len(lr)), 0, 1)
    c, r2 = fit_plateau(lr, plateau)
    dense = [math.exp(x) for x in np.linspace(math.log(1e-3), math.log(1e6), 50_001)]
    best = min(dense, key=lambda v: _plateau_sse(v, lr, plateau))
    assert c == pytest.approx(best, rel=1e-3)
    assert _plateau_sse(c, lr, plateau) <= _plateau_sse(best, lr, plateau) + 1e-12
    total = sum((j - plateau.mean()) ** 2 for j in plateau)
    assert r2 == pytest.approx(1 - _plateau_sse(c, lr, plateau) / total, rel=1e-9)


def test_fit_plateau_edge_cases():
    assert math.isnan(fit_plateau([1.0, 2.0], [0.5, 0.5]).r2)  # no spread to explain
    with pytest.raises(ValueError, match=r"^lr: got \[1.0, 0.0\]; allowed: at least one rate, every one > 0"):
        fit_plateau([1.0, 0.0], [0.5, 0.4])


def test_proportion_diff_se_worked_examples():
    assert proportion_diff_se(0.5, n=100) == pytest.approx(0.05, rel=1e-15)  # sqrt(0.25/100)
    assert proportion_diff_se(0.5, 0.5, n=100) == pytest.approx(math.sqrt(0.005), rel=1e-15)
    assert proportion_diff_se(0.2, 0.9, n=64) == pytest.approx(math.sqrt((0.16 + 0.09) / 64), rel=1e-15)  # 0.0625
    assert proportion_diff_se(0.0, 1.0, n=10) == 0.0  # no spread in either
    assert math.isnan(proportion_diff_se(0.3, math.nan, n=10))  # a missing measurement
    with pytest.raises(ValueError, match=r"^n: got 0; allowed: an integer >= 1"):
        proportion_diff_se(0.5, n=0)
    with pytest.raises(ValueError, match=r"^proportions: got \[0.5, 1.5\]; allowed: numbers in \[0, 1\]"):
        proportion_diff_se(0.5, 1.5, n=10)


@pytest.mark.parametrize("p, q, n", [(0.3, 0.6, 50), (0.05, 0.1, 400), (0.5, 0.5, 16)])
def test_proportion_diff_se_is_the_spread_of_simulated_differences(p, q, n):
    rng = np.random.default_rng(11)
    draws = 200_000
    diff = rng.binomial(n, p, draws) / n - rng.binomial(n, q, draws) / n
    se = proportion_diff_se(p, q, n=n)
    # a sample standard deviation of 200,000 draws has a relative SE of about 1/sqrt(2·draws) = 0.16%
    assert diff.std(ddof=1) == pytest.approx(se, rel=0.008)  # 5 SE

