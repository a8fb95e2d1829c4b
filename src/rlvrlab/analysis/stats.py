"""The statistics experiments share, from scipy: rank correlation, AUC, bootstrap and slope CIs,
and the critical-rate search.

- ``spearman(x, y)`` — Spearman's ρ, the Pearson correlation of average ranks (scipy.stats.spearmanr);
- ``auc(pos, neg)`` — P(pos > neg) + ½ P(pos = neg), the Mann-Whitney U / (n₁·n₂)
  (scipy.stats.mannwhitneyu);
- ``bootstrap_ci(statistic, *samples)`` and ``spearman_ci(x, y)`` — bootstrap confidence intervals
  (scipy.stats.bootstrap, BCa by default);
- ``loglog_slope(x, y)`` — least-squares slope of log y on log x with a t-interval
  (scipy.stats.linregress, scipy.stats.t): how a critical rate scales with the length T (eq. 17 vs 18);
  with ``groups`` the within-group slope (a fixed intercept per group: the instance a rate was
  measured on shifts it at every T);
  ``loglog_exponents(y, x1=..., x2=...)`` the same with several regressors at once (least squares,
  t-intervals): which of two length measures a penalty scales with (Lemma 2: T_psi1 or T_inf);
- ``critical_rate(rates, converged, refine, bisection=...)`` — the upper edge of the window of step
  sizes at which training converges (the rate past which a step overshoots, Thm 2/4), from a grid,
  refined by bisection in log(rate); ``critical_rates`` does it for many cells at once, one batch
  of runs per bisection step;
- ``fit_plateau(lr, plateau)`` — least-squares c of the stagnation form J* = 1/(1 + (α/c)²) that
  eq. (17)-(18) suggest for GRPO at a fixed rate α (scipy.optimize.minimize_scalar), with its R²;
- ``proportion_diff_se(*p, n=n)`` — the standard error of a difference of accuracies, each measured
  on n independent completions (binomial).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize, stats

from rlvrlab import _checks

__all__ = ["CriticalRate", "PlateauFit", "SlopeFit", "auc", "bootstrap_ci", "critical_rate", "critical_rates", "fit_plateau",
           "loglog_exponents", "loglog_slope", "proportion_diff_se", "spearman", "spearman_ci"]


def _vector(field: str, value: Any) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    if a.ndim != 1:
        _checks.fail(field, f"an array of shape {a.shape}", "a one-dimensional sequence of numbers")
    return a


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector("x", x), _vector("y", y)
    if len(x) != len(y):
        _checks.fail("y", f"{len(y)} values", f"as many values as x ({len(x)})")
    return x, y


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation of paired samples x, y (N,), ties at their average rank.

    nan with fewer than 3 pairs or when x or y has no spread (no ranking to correlate)."""
    x, y = _pair(x, y)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def auc(pos: Any, neg: Any) -> float:
    """P(p > n) + ½ P(p = n) for p drawn from pos, n from neg: U / (n_pos·n_neg), U the Mann-Whitney
    statistic of pos. 0.5 means a threshold on the value cannot tell the two apart; nan when
    either is empty."""
    pos, neg = _vector("pos", pos), _vector("neg", neg)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    # asymptotic: only U is needed, not the exact p-value (whose cost grows with the sizes)
    u = stats.mannwhitneyu(pos, neg, method="asymptotic").statistic
    return float(u / (len(pos) * len(neg)))


def bootstrap_ci(statistic: Callable[..., Any], *samples: Any, confidence: float = 0.95, n_resamples: int = 2000,
                 paired: bool = False, method: str = "BCa", seed: int = 0) -> tuple[float, float]:
    """Bootstrap confidence interval (low, high) of ``statistic(*samples, axis=-1)`` (scipy.stats.bootstrap).

    statistic must be vectorized over a trailing resample axis (as np.mean is); ``paired`` resamples
    the samples' positions together (a statistic of pairs such as a correlation). (nan, nan) when
    the bootstrap distribution is degenerate (every resample gives the same value)."""
    if not 0 < confidence < 1:
        _checks.fail("confidence", confidence, "a number in (0, 1)")
    _checks.integer("n_resamples", n_resamples)
    _checks.choose("method", method, ("BCa", "percentile", "basic"))
    data = tuple(_vector("samples", s) for s in samples)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # reported as nan below
        res = stats.bootstrap(data, statistic, vectorized=True, paired=paired, confidence_level=confidence,
                              n_resamples=n_resamples, method=method, rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (low, high) if math.isfinite(low) and math.isfinite(high) else (math.nan, math.nan)


def _rank_correlation(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's ρ along ``axis`` (vectorized for the bootstrap): Pearson's r of average ranks."""
    rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis, keepdims=True)
    ry = ry - ry.mean(axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample without spread: nan
        return (rx * ry).sum(axis) / np.sqrt((rx**2).sum(axis) * (ry**2).sum(axis))


def spearman_ci(x: Any, y: Any, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of Spearman's ρ over pairs (x_i, y_i) (BCa); (nan, nan) where spearman is nan."""
    x, y = _pair(x, y)
    if math.isnan(spearman(x, y)):
        return math.nan, math.nan
    return bootstrap_ci(_rank_correlation, x, y, confidence=confidence, n_resamples=n_resamples, paired=True, seed=seed)


class SlopeFit(NamedTuple):
    """log y ≈ intercept + slope·log x over the n usable points, with the slope's t-interval [low, high]."""

    slope: float
    low: float
    high: float
    n: int
    intercept: float


def loglog_slope(x: Any, y: Any, *, confidence: float = 0.95, groups: Any = None) -> SlopeFit:
    """Least-squares slope of log y on log x with a two-sided Student-t interval (n - 2 degrees of freedom).

    Points where y is not finite and > 0 (a censored or missing measurement) are left out; with
    fewer than 3 usable points, or all at one x, the fit is nan (n says how many were usable).

    groups: optional labels (n,), one per point: then the model is log y = a_g + slope·log x with an
    intercept a_g per group (fixed effects), fitted by least squares on the within-group deviations,
    with n - #groups - 1 degrees of freedom; groups with a single usable point carry no slope
    information and are left out (n counts the points kept). The intercept returned is the mean
    log y minus slope × the mean log x of those points."""
    if not 0 < confidence < 1:
        _checks.fail("confidence", confidence, "a number in (0, 1)")
    x, y = _pair(x, y)
    if np.any(~(x > 0)):
        _checks.fail("x", x.tolist(), "numbers > 0 (their logarithm is taken)")
    ok = np.isfinite(y) & (y > 0)
    if groups is None:
        lx, ly = np.log(x[ok]), np.log(y[ok])
        n = int(ok.sum())
        if n < 3 or np.ptp(lx) == 0:
            return SlopeFit(math.nan, math.nan, math.nan, n, math.nan)
        fit = stats.linregress(lx, ly)
        half = stats.t.ppf((1 + confidence) / 2, n - 2) * fit.stderr
        return SlopeFit(float(fit.slope), float(fit.slope - half), float(fit.slope + half), n, float(fit.intercept))
    g = np.asarray(groups)
    if g.shape != x.shape:
        _checks.fail("groups", f"{g.size} labels", f"one label per point ({x.size})")
    labels, inverse, counts = np.unique(g[ok], return_inverse=True, return_counts=True)
    keep = counts[inverse] >= 2  # (usable points,) in a group of two or more
    lx, ly, gi = np.log(x[ok])[keep], np.log(y[ok])[keep], inverse[keep]
    n, k = len(lx), int((counts >= 2).sum())
    dx = lx - (np.bincount(gi, lx) / np.bincount(gi))[gi]  # within-group deviations
    dy = ly - (np.bincount(gi, ly) / np.bincount(gi))[gi]
    sxx = float(dx @ dx)
    if n - k - 1 < 1 or sxx == 0:
        return SlopeFit(math.nan, math.nan, math.nan, n, math.nan)
    slope = float(dx @ dy) / sxx
    resid = dy - slope * dx
    half = stats.t.ppf((1 + confidence) / 2, n - k - 1) * math.sqrt(float(resid @ resid) / (n - k - 1) / sxx)
    return SlopeFit(slope, slope - half, slope + half, n, float(ly.mean() - slope * lx.mean()))


def loglog_exponents(y: Any, *, confidence: float = 0.95, **x: Any) -> dict[str, SlopeFit]:
    """Least squares log y ≈ c + Σ_j b_j·log x_j, each exponent b_j with its Student-t interval
    (n - 1 - #regressors degrees of freedom); the intercept c is repeated in every SlopeFit.

    Points where y is not finite and > 0 are left out; with too few usable points (n <= #regressors
    + 1) or collinear regressors every fit is nan.
    """
    if not 0 < confidence < 1:
        _checks.fail("confidence", confidence, "a number in (0, 1)")
    if not x:
        _checks.fail("x", "no regressor", "at least one named regressor, e.g. T_psi1=[...]")
    yv = _vector("y", y)
    cols = {k: _vector(k, v) for k, v in x.items()}
    for k, v in cols.items():
        if v.shape != yv.shape:
            _checks.fail(k, f"{v.size} values", f"{yv.size} values, one per y")
        if np.any(~(v > 0)):
            _checks.fail(k, v.tolist(), "numbers > 0 (their logarithm is taken)")
    ok = np.isfinite(yv) & (yv > 0)
    n, p = int(ok.sum()), len(cols)
    X = np.column_stack([np.ones(n)] + [np.log(v[ok]) for v in cols.values()])
    nan = {k: SlopeFit(math.nan, math.nan, math.nan, n, math.nan) for k in cols}
    if n <= p + 1 or np.linalg.matrix_rank(X) < p + 1:
        return nan
    coef, *_ = np.linalg.lstsq(X, np.log(yv[ok]), rcond=None)
    resid = np.log(yv[ok]) - X @ coef
    dof = n - p - 1
    cov = (resid @ resid / dof) * np.linalg.inv(X.T @ X)
    half = stats.t.ppf((1 + confidence) / 2, dof) * np.sqrt(np.diag(cov))
    return {k: SlopeFit(float(coef[j + 1]), float(coef[j + 1] - half[j + 1]), float(coef[j + 1] + half[j + 1]), n, float(coef[0]))
            for j, k in enumerate(cols)}


class CriticalRate(NamedTuple):
    """The upper edge of the convergence window lies in [low, high]; rate = sqrt(low·high).

    low = high = rate = nan: no rate of the grid converged. high = inf (rate nan): every rate from
    the first converging one up to the largest converged, so the edge lies above the grid."""

    rate: float
    low: float
    high: float


def _check_grid(rates: Sequence[float], converged: Any, refine: Any, bisection: int,
                refine_kind: str) -> tuple[list[float], np.ndarray]:
    rates, ok = [float(r) for r in rates], np.asarray(converged, dtype=bool)
    if ok.shape[-1:] != (len(rates),):
        _checks.fail("converged", f"shape {ok.shape}", f"one flag per rate ({len(rates)})")
    if not rates or not all(r > 0 for r in rates) or any(b <= a for a, b in zip(rates, rates[1:])):
        _checks.fail("rates", rates, "increasing numbers > 0")
    _checks.integer("bisection", bisection, 0)
    if bisection and refine is None:
        _checks.fail("refine", None, f"a function {refine_kind} when bisection > 0")
    return rates, ok


def _bracket(rates: list[float], ok: np.ndarray) -> CriticalRate | tuple[float, float]:
    """The grid's bracket (low, high) of the window's upper edge, or the censored result."""
    if not ok.any():
        return CriticalRate(math.nan, math.nan, math.nan)
    first_ok = int(np.argmax(ok))
    fails = [i for i in range(first_ok + 1, len(rates)) if not ok[i]]
    if not fails:
        return CriticalRate(math.nan, rates[-1], math.inf)
    return rates[fails[0] - 1], rates[fails[0]]


def critical_rate(rates: Sequence[float], converged: Sequence[bool], refine: Callable[[float], bool] | None = None, *,
                  bisection: int = 0) -> CriticalRate:
    """The critical rate of a grid of runs: the upper edge of its convergence window.

    rates:     (L,) increasing step sizes > 0
    converged: (L,) whether the run at each rate converged
    refine:    rate -> converged, a run at one more rate (called ``bisection`` times)

    The window starts at the first converging rate (smaller ones may be too slow for the budget);
    its upper edge is bracketed by the first failing rate above it and the rate just below that,
    then narrowed ``bisection`` times at the geometric midpoint, keeping a converging lower end and
    a failing upper end.
    """
    rates, ok = _check_grid(rates, converged, refine, bisection, "rate -> converged")
    if ok.shape != (len(rates),):
        _checks.fail("converged", f"shape {ok.shape}", f"one flag per rate ({len(rates)})")
    found = _bracket(rates, ok)
    if isinstance(found, CriticalRate):
        return found
    lo, hi = found
    for _ in range(bisection):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if refine(mid) else (lo, mid)
    return CriticalRate(math.sqrt(lo * hi), lo, hi)


def critical_rates(rates: Sequence[float], converged: Any,
                   refine: Callable[[list[int], list[float]], Sequence[bool]] | None = None, *,
                   bisection: int = 0) -> list[CriticalRate]:
    """``critical_rate`` of n cells on one grid, their bisections advancing together.

    rates:     (L,) increasing step sizes > 0, shared by the cells
    converged: (n, L) whether each cell's run at each rate converged
    refine:    (cells, rates) -> converged: one more run for each listed cell, at the rate listed
               with it; called once per bisection step with every cell that has a bracket, so
               that a simulator batched over runs takes the step for all of them at once

    Cell by cell the same brackets, midpoints and results as ``critical_rate`` (tests hold them
    equal); only the order of the runs differs.
    """
    rates, ok = _check_grid(rates, converged, refine, bisection, "(cells, rates) -> converged")
    if ok.ndim != 2:
        _checks.fail("converged", f"shape {ok.shape}", f"(n, L): one row of flags per cell, one flag per rate ({len(rates)})")
    found = [_bracket(rates, row) for row in ok]
    cells = [i for i, f in enumerate(found) if not isinstance(f, CriticalRate)]
    brackets = {i: found[i] for i in cells}
    for _ in range(bisection if cells else 0):
        mids = [math.sqrt(lo * hi) for lo, hi in (brackets[i] for i in cells)]
        flags = list(refine(cells, mids))
        if len(flags) != len(cells):
            _checks.fail("refine", f"{len(flags)} flags", f"one flag per cell asked for ({len(cells)})")
        for i, mid, passed in zip(cells, mids, flags):
            lo, hi = brackets[i]
            brackets[i] = (mid, hi) if passed else (lo, mid)
    for i, (lo, hi) in brackets.items():
        found[i] = CriticalRate(math.sqrt(lo * hi), lo, hi)
    return found


class PlateauFit(NamedTuple):
    """J* ≈ 1/(1 + (lr/c)²) with the fit's coefficient of determination r2 (nan without spread)."""

    c: float
    r2: float


def fit_plateau(lr: Any, plateau: Any) -> PlateauFit:
    """Least-squares c in J* = 1/(1 + (lr/c)²) over runs at rates lr > 0 that plateaued at J*.

    The squared error is not convex in log c, so a grid over log c (5 e-folds beyond the rates on
    each side) finds the basin and a bounded Brent search refines it within ±0.1 of the best grid
    point. R² = 1 − SSE / Σ(J* − mean J*)², which is negative when the form fits worse than a constant."""
    lr, plateau = _pair(lr, plateau)
    if len(lr) == 0 or np.any(~(lr > 0)):
        _checks.fail("lr", lr.tolist(), "at least one rate, every one > 0")

    def sse(log_c: float) -> float:
        return float(((plateau - 1 / (1 + (lr / math.exp(log_c)) ** 2)) ** 2).sum())

    grid = np.linspace(math.log(lr.min()) - 5, math.log(lr.max()) + 5, 401)
    best = grid[int(np.argmin([sse(g) for g in grid]))]
    res = optimize.minimize_scalar(sse, bounds=(best - 0.1, best + 0.1), method="bounded", options={"xatol": 1e-12})
    log_c = float(res.x) if sse(float(res.x)) <= sse(best) else float(best)
    total = float(((plateau - plateau.mean()) ** 2).sum())
    return PlateauFit(math.exp(log_c), 1 - sse(log_c) / total if total > 0 else math.nan)


def proportion_diff_se(*proportions: float, n: int) -> float:
    """Standard error of a difference (or sum) of independent proportions p_i, each the success rate
    of n independent Bernoulli trials, with the plug-in binomial variance:

        SE = sqrt(Σ_i p_i(1 - p_i) / n)

    One proportion gives its own standard error. nan where a proportion is nan (a measurement missing)."""
    _checks.integer("n", n)
    for p in proportions:
        if not (math.isnan(p) or 0 <= p <= 1):
            _checks.fail("proportions", list(proportions), "numbers in [0, 1] (or nan)")
    return math.sqrt(sum(p * (1 - p) / n for p in proportions))

