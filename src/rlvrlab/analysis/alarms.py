"""Early warning of a collapsing RLVR run: labels from held-out accuracy, streaming detectors over a
run's per-step metrics, and their scores (the "warning-bench" experiment).

rlvrlab claims that its Gradient-Gap warning fires before a run's success rate collapses, earlier
and more reliably than heuristics on the training curves. This module turns that into numbers.

**Labels** (``label_run``) use the held-out accuracy alone, never a detector's input. With a0 the
step-0 accuracy and m a noise margin (about two standard errors of one evaluation):

- collapsed: from some evaluation on, every evaluation (to the end) is ≤ a0/2, and a0 > m;
  onset = the earliest evaluation from which on every evaluation is < a0 − m;
- healthy: not collapsed, and the mean of the last two evaluations is ≥ a0 + m;
- stalled: everything else.

**Detectors** see a run's rows one at a time, in step order (``update(row) -> bool``), so none
can look ahead; ``alarm_steps`` / ``first_alarm`` feed them a run. ``DETECTORS`` maps a name to a
factory (keyword parameters with defaults) and ``GRIDS`` the same name to the parameter values a
tuning run tries. The rlvrlab detectors read the monitor's ``gap/`` (or ``gap_fresh/``) diagnostics:

- ``rlvrlab/current``, ``rlvrlab/fresh``: crit_ratio > 1 or log_odds_change < 0 for ``patience``
  consecutive measured steps (rlvrlab.lm.monitor.gap_warnings' "crit" rule);
- ``rlvrlab/lr_crit``: the geometric running mean of lr_crit, exp(s_k) with
  s_k = smoothing·s_{k−1} + (1 − smoothing)·log lr_crit_k, below factor·learning_rate for
  ``patience`` consecutive steps after the first ``warmup``;
- ``rlvrlab/log_odds_trend``: the mean of the last ``window`` log_odds_change values below
  ``threshold`` after the first ``warmup`` steps.

The baselines are single signals from the GRPO literature: ``entropy_drop`` (entropy collapse),
``grad_norm_spike`` and ``kl_spike`` (x > mean + n_sigma·σ of the trailing window),
``zero_std`` (most groups have no reward variance), ``reward_drop`` ("watch the reward").

**Scores** (``score``) over labelled runs, one detector at a time: recall = TP/#collapsed,
false-alarm rate = FP/#healthy, precision = TP/(TP + FP), F1 = 2TP/(2TP + FP + FN), lead time =
onset − first alarm step, with bootstrap intervals over runs (rlvrlab.analysis.stats.bootstrap_ci).
``tune`` picks a detector's parameters on tuning runs by F1.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any, Protocol

import numpy as np

from rlvrlab import _checks
from rlvrlab.analysis.stats import bootstrap_ci

__all__ = ["DETECTORS", "GRIDS", "Detector", "EntropyDrop", "LogOddsTrend", "LrCritBelow", "OvershootStreak", "RewardDrop",
           "RunLabel", "Score", "ScoredRun", "Spike", "ZeroStd", "alarm_steps", "detector", "evals_from_rows", "f1_score",
           "first_alarm", "label_counts", "label_run", "meets_label_mix", "param_grid", "score", "scored_runs", "tune"]

Row = Mapping[str, Any]
KINDS = ("collapsed", "stalled", "healthy")


def _get(row: Row, key: str) -> float:
    """A row's value as a float; missing or null (a parquet None) is NaN."""
    v = row.get(key)
    return math.nan if v is None else float(v)


# --- labels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLabel:
    """What a run's held-out accuracy did (see ``label_run``).

    kind:   "collapsed", "stalled" or "healthy"
    onset:  the step of the first evaluation of the fall (collapsed runs only, else None)
    start:  a0, the step-0 accuracy
    final:  the mean of the last two evaluations
    last:   the last evaluation
    margin: the noise margin the label used
    """

    kind: str
    onset: int | None
    start: float
    final: float
    last: float
    margin: float


def evals_from_rows(rows: Sequence[Row]) -> list[tuple[int, float]]:
    """(step, eval/accuracy) of every row that has a finite held-out accuracy, in row order."""
    return [(int(r["step"]), _get(r, "eval/accuracy")) for r in rows if math.isfinite(_get(r, "eval/accuracy"))]


def label_run(evals: Sequence[tuple[int, float]], *, margin: float) -> RunLabel:
    """Label a run from its held-out accuracy alone.

    evals:  (step, accuracy) in increasing step order, the first at step 0 (a0, before training);
            NaN accuracies (a missing evaluation) are dropped
    margin: the noise margin m >= 0, e.g. 2·sqrt(a0(1 − a0)/n_eval)

    The rule, with a_i the evaluations in order and a0 the first:

    - **collapsed**: some evaluation i >= 1 has a_j ≤ a0/2 for every j ≥ i (accuracy fell at least
      half-way from its start to 0 and did not come back: equivalently, the last evaluation is
      ≤ a0/2), and a0 > m (a run that starts at about 0 cannot collapse). Its **onset** is the
      step of the earliest evaluation i with a_j < a0 − m for every j ≥ i; when there is none
      (m ≥ a0/2, the fall to a0/2 stays within the noise), the earliest i with a_j ≤ a0/2 for
      every j ≥ i.
    - **healthy**: not collapsed, and final = (a_{n−1} + a_n)/2, the mean of the last two
      evaluations (to damp the noise of one), is ≥ a0 + m.
    - **stalled**: everything else: neither improved by the margin nor collapsed, including a
      partial drop, a fall that came back, and a start at about 0 that stayed there.
    """
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not (math.isfinite(margin) and margin >= 0):
        _checks.fail("margin", margin, "a finite number >= 0")
    margin = float(margin)
    pts = [(int(s), float(a)) for s, a in evals if not math.isnan(float(a))]
    if len(pts) < 2:
        _checks.fail("evals", list(evals), "the step-0 evaluation and at least one more (non-NaN accuracies)")
    steps = [s for s, _ in pts]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        _checks.fail("evals", steps, "evaluations in increasing step order")
    acc = [a for _, a in pts]
    a0, last, final = acc[0], acc[-1], (acc[-2] + acc[-1]) / 2
    if a0 > margin and last <= a0 / 2:
        onset = _tail_start(acc, lambda a: a < a0 - margin)
        if onset is None:
            onset = _tail_start(acc, lambda a: a <= a0 / 2)
        return RunLabel("collapsed", steps[onset], a0, final, last, margin)
    kind = "healthy" if final >= a0 + margin else "stalled"
    return RunLabel(kind, None, a0, final, last, margin)


def _tail_start(acc: list[float], holds: Callable[[float], bool]) -> int | None:
    """The earliest index i >= 1 from which ``holds`` is true of every value to the end."""
    i = len(acc)
    while i > 1 and holds(acc[i - 1]):
        i -= 1
    return i if i < len(acc) else None


def label_counts(labels: Sequence[RunLabel]) -> dict[str, int]:
    """How many runs of each kind: {"collapsed": n, "stalled": n, "healthy": n}."""
    return {k: sum(lab.kind == k for lab in labels) for k in KINDS}


def meets_label_mix(labels: Sequence[RunLabel], *, min_fraction: float = 0.25) -> bool:
    """Whether at least ``min_fraction`` of the runs collapsed and at least as many are healthy
    (the corpus needs both kinds for recall and false alarms to mean anything)."""
    counts, n = label_counts(labels), len(labels)
    return n > 0 and counts["collapsed"] >= min_fraction * n and counts["healthy"] >= min_fraction * n


# --- streaming detectors -----------------------------------------------------------------------


class Detector(Protocol):
    """Sees a run's rows one at a time in step order; ``update`` says whether it alarms at that step."""

    name: str

    def reset(self) -> None: ...

    def update(self, row: Row) -> bool: ...


class _Streak:
    """How many consecutive measured steps a condition has held; an unmeasured step (None) leaves
    the count as it is, as a row without gap/ values does in the monitor."""

    def __init__(self, patience: int):
        _checks.integer("patience", patience)
        self.patience, self.n = patience, 0

    def update(self, held: bool | None) -> bool:
        if held is None:
            return False
        self.n = self.n + 1 if held else 0
        return self.n >= self.patience


class _Window:
    """The last ``size`` finite values of a signal."""

    def __init__(self, size: int):
        _checks.integer("window", size)
        self.values: deque[float] = deque(maxlen=size)

    @property
    def full(self) -> bool:
        return len(self.values) == self.values.maxlen

    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    def std(self) -> float:
        """Population standard deviation (ddof 0)."""
        m = self.mean()
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / len(self.values))


class OvershootStreak:
    """``gap_warnings``' "crit" rule: the step overshot, {prefix}crit_ratio > 1 or
    {prefix}log_odds_change < 0, for ``patience`` consecutive measured steps. A row is measured
    when it has {prefix}crit_ratio (NaN included, as in the monitor); other rows neither extend
    nor break the streak. Alarms at every step where the streak is ≥ patience."""

    def __init__(self, name: str = "rlvrlab/current", *, prefix: str = "gap/", patience: int = 3):
        self.name, self.prefix = name, prefix
        self._streak = _Streak(patience)

    def reset(self) -> None:
        self._streak.n = 0

    def update(self, row: Row) -> bool:
        if row.get(self.prefix + "crit_ratio") is None:
            return self._streak.update(None)
        past = _get(row, self.prefix + "crit_ratio") > 1 or _get(row, self.prefix + "log_odds_change") < 0
        return self._streak.update(past)


# lr_crit is inf where there is no second-order threshold and 0 after a step against the gap; in
# the running mean of its log they count as 10³ times above / below the step's learning rate, far
# enough to decide the comparison yet finite, so that one such step does not pin the mean forever.
_LOG_RANGE = math.log(1e3)


class LrCritBelow:
    """The geometric running mean of {prefix}lr_crit below factor·learning_rate for ``patience``
    consecutive steps:

        x_k = clip(log lr_crit_k, log lr_k − log 10³, log lr_k + log 10³)
        s_k = smoothing·s_{k−1} + (1 − smoothing)·x_k   (s = x at the first counted step)
        alarm when s_k < log(factor·lr_k) at ``patience`` consecutive counted steps

    Rows with step ≤ ``warmup`` are ignored (neither averaged nor counted): Adam's bias-corrected
    first steps have size about lr whatever the gradient, which puts lr_crit near lr and raises
    false alarms. Rows without a finite learning rate > 0 or with a NaN lr_crit are unmeasured."""

    name = "rlvrlab/lr_crit"

    def __init__(self, *, factor: float = 1.0, patience: int = 3, warmup: int = 5, smoothing: float = 0.5,
                 prefix: str = "gap/"):
        _checks.positive("factor", factor)
        _checks.integer("warmup", warmup, 0)
        if not 0 <= smoothing < 1:
            _checks.fail("smoothing", smoothing, "a number in [0, 1)")
        self.factor, self.warmup, self.smoothing, self.prefix = factor, warmup, smoothing, prefix
        self._streak = _Streak(patience)
        self._s = math.nan

    def reset(self) -> None:
        self._streak.n, self._s = 0, math.nan

    def update(self, row: Row) -> bool:
        if _get(row, "step") <= self.warmup:
            return False
        lr, lr_crit = _get(row, "learning_rate"), _get(row, self.prefix + "lr_crit")
        if not (math.isfinite(lr) and lr > 0) or math.isnan(lr_crit):
            return self._streak.update(None)
        log_lr = math.log(lr)
        x = log_lr + min(max(math.log(lr_crit) - log_lr if lr_crit > 0 else -math.inf, -_LOG_RANGE), _LOG_RANGE)
        self._s = x if math.isnan(self._s) else self.smoothing * self._s + (1 - self.smoothing) * x
        return self._streak.update(self._s < log_lr + math.log(self.factor))


class LogOddsTrend:
    """The mean of the last ``window`` finite {prefix}log_odds_change values (each clipped to
    ±log 10³, so that an infinite one keeps the mean finite) below ``threshold``, once the window
    is full. Rows with step ≤ ``warmup`` are ignored; a row without a value alarms never."""

    name = "rlvrlab/log_odds_trend"

    def __init__(self, *, window: int = 5, threshold: float = 0.0, warmup: int = 0, prefix: str = "gap/"):
        _checks.integer("warmup", warmup, 0)
        self.threshold, self.warmup, self.prefix = threshold, warmup, prefix
        self._window = _Window(window)

    def reset(self) -> None:
        self._window.values.clear()

    def update(self, row: Row) -> bool:
        v = _get(row, self.prefix + "log_odds_change")
        if _get(row, "step") <= self.warmup or math.isnan(v):
            return False
        self._window.values.append(min(max(v, -_LOG_RANGE), _LOG_RANGE))
        return self._window.full and self._window.mean() < self.threshold


class EntropyDrop:
    """Entropy collapse: entropy < fraction × its first finite value."""

    name = "entropy_drop"

    def __init__(self, *, fraction: float = 0.5):
        _checks.positive("fraction", fraction)
        self.fraction = fraction
        self._first = math.nan

    def reset(self) -> None:
        self._first = math.nan

    def update(self, row: Row) -> bool:
        h = _get(row, "entropy")
        if math.isnan(self._first) and math.isfinite(h):
            self._first = h
        return h < self.fraction * self._first


class Spike:
    """A spike of ``key``: x > mean + n_sigma·σ (population σ) of the ``window`` previous finite
    values, once there are ``window`` of them. x = +inf counts as a spike; NaN or a missing value
    never alarms; only finite values enter the window."""

    def __init__(self, name: str = "grad_norm_spike", key: str = "grad_norm", *, window: int = 10, n_sigma: float = 3.0):
        _checks.positive("n_sigma", n_sigma)
        self.name, self.key, self.n_sigma = name, key, n_sigma
        self._window = _Window(window)

    def reset(self) -> None:
        self._window.values.clear()

    def update(self, row: Row) -> bool:
        x = _get(row, self.key)
        alarm = self._window.full and x > self._window.mean() + self.n_sigma * self._window.std()
        if math.isfinite(x):
            self._window.values.append(x)
        return alarm


class ZeroStd:
    """Most groups have no reward variance (no GRPO signal): frac_reward_zero_std > threshold."""

    name = "zero_std"

    def __init__(self, *, threshold: float = 0.5):
        self.threshold = threshold

    def reset(self) -> None:
        pass

    def update(self, row: Row) -> bool:
        return _get(row, "frac_reward_zero_std") > self.threshold


class RewardDrop:
    """"Watch the reward": the mean of the last ``window`` finite rewards below fraction × the mean
    of the first ``window`` (checked once the first window is full)."""

    name = "reward_drop"

    def __init__(self, *, window: int = 10, fraction: float = 0.5):
        _checks.positive("fraction", fraction)
        self.fraction = fraction
        self._window = _Window(window)
        self._first = math.nan

    def reset(self) -> None:
        self._window.values.clear()
        self._first = math.nan

    def update(self, row: Row) -> bool:
        r = _get(row, "reward")
        if not math.isfinite(r):
            return False
        self._window.values.append(r)
        if not self._window.full:
            return False
        if math.isnan(self._first):
            self._first = self._window.mean()
        return self._window.mean() < self.fraction * self._first


DETECTORS: dict[str, Callable[..., Detector]] = {
    "rlvrlab/current": partial(OvershootStreak, "rlvrlab/current", prefix="gap/"),
    "rlvrlab/fresh": partial(OvershootStreak, "rlvrlab/fresh", prefix="gap_fresh/"),
    "rlvrlab/lr_crit": LrCritBelow,
    "rlvrlab/log_odds_trend": LogOddsTrend,
    "entropy_drop": EntropyDrop,
    "grad_norm_spike": partial(Spike, "grad_norm_spike", "grad_norm"),
    "zero_std": ZeroStd,
    "kl_spike": partial(Spike, "kl_spike", "kl"),
    "reward_drop": RewardDrop,
}

# The values ``tune`` tries for each detector (the cartesian product); a detector's defaults are
# the setting from its source (the monitor, or the literature).
GRIDS: dict[str, dict[str, tuple]] = {
    "rlvrlab/current": {"patience": (1, 2, 3, 5)},
    "rlvrlab/fresh": {"patience": (1, 2, 3, 5)},
    "rlvrlab/lr_crit": {"factor": (0.5, 1.0, 2.0), "patience": (2, 3, 5), "warmup": (0, 5, 10), "smoothing": (0.0, 0.5, 0.8)},
    "rlvrlab/log_odds_trend": {"window": (1, 3, 5, 10), "warmup": (0, 5, 10)},
    "entropy_drop": {"fraction": (0.3, 0.5, 0.7)},
    "grad_norm_spike": {"window": (5, 10, 20), "n_sigma": (2.0, 3.0, 4.0)},
    "zero_std": {"threshold": (0.3, 0.5, 0.7, 0.9)},
    "kl_spike": {"window": (5, 10, 20), "n_sigma": (2.0, 3.0, 4.0)},
    "reward_drop": {"window": (5, 10), "fraction": (0.3, 0.5, 0.7)},
}


def detector(name: str, **params: Any) -> Detector:
    """A fresh detector by registry name; an unknown name lists the valid ones."""
    return _checks.choose("name", name, DETECTORS)(**params)


def param_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid's values, in order (the last parameter varying fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _is_training_row(row: Row) -> bool:
    """A row with some training metric: a value other than step, eval/... and the cumulative .../M
    that is not NaN or null (the step-0 row has only the latter)."""
    return any(k != "step" and not k.startswith("eval/") and not k.endswith("/M") and v is not None and v == v
               for k, v in row.items())


def alarm_steps(det: Detector, rows: Sequence[Row]) -> list[int]:
    """The steps at which ``det`` alarms over a run's rows (in step order; rows without training
    metrics, such as step 0's, are skipped). The detector is reset first."""
    det.reset()
    return [int(r["step"]) for r in rows if _is_training_row(r) and det.update(r)]


def first_alarm(det: Detector, rows: Sequence[Row]) -> int | None:
    """The first step at which ``det`` alarms over a run's rows, or None (see ``alarm_steps``)."""
    det.reset()
    return next((int(r["step"]) for r in rows if _is_training_row(r) and det.update(r)), None)


# --- scores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredRun:
    """One labelled run and the steps at which one detector alarmed on it."""

    label: RunLabel
    alarms: tuple[int, ...] = ()

    @property
    def lead(self) -> float:
        """onset − first alarm (positive: early) for a collapsed run with an alarm, else NaN."""
        if self.label.kind != "collapsed" or not self.alarms:
            return math.nan
        return float(self.label.onset - min(self.alarms))


_NAN2 = (math.nan, math.nan)


@dataclass(frozen=True)
class Score:
    """A detector's score over labelled runs (see ``score``); *_ci are (low, high)."""

    n_collapsed: int
    n_healthy: int
    n_stalled: int
    tp: int
    fn: int
    fp: int
    recall: float
    false_alarm_rate: float
    precision: float
    f1: float
    stalled_alarm_rate: float
    leads: tuple[float, ...]
    lead_median: float
    lead_q25: float
    lead_q75: float
    recall_ci: tuple[float, float] = _NAN2
    false_alarm_ci: tuple[float, float] = _NAN2
    precision_ci: tuple[float, float] = _NAN2
    f1_ci: tuple[float, float] = _NAN2
    lead_median_ci: tuple[float, float] = _NAN2

    def row(self) -> dict[str, float]:
        """The score as one flat table row (intervals as *_low / *_high; leads left out)."""
        out: dict[str, float] = {}
        for f in fields(self):
            k, v = f.name, getattr(self, f.name)
            if k == "leads":
                continue
            if k.endswith("_ci"):
                out[k[:-3] + "_low"], out[k[:-3] + "_high"] = v
            else:
                out[k] = v
        return out


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


def f1_score(alarmed_collapsed: np.ndarray, alarmed_healthy: np.ndarray, axis: int = -1) -> np.ndarray:
    """F1 = 2TP/(2TP + FP + FN) = 2TP/(TP + #collapsed + FP) from whether each collapsed and each
    healthy run alarmed (0/1 arrays), vectorized over a trailing resample axis."""
    tp = alarmed_collapsed.sum(axis)
    return 2 * tp / (tp + alarmed_collapsed.shape[axis] + alarmed_healthy.sum(axis))


def _ci(statistic: Callable[..., Any], *samples: np.ndarray, **kw: Any) -> tuple[float, float]:
    """bootstrap_ci, with the cases it cannot take: a sample of fewer than 2 runs gives (nan, nan);
    samples without spread give (point, point), the bootstrap distribution being that one value."""
    if any(len(s) < 2 for s in samples):
        return _NAN2
    if all(np.ptp(s) == 0 for s in samples):
        point = float(statistic(*samples, axis=-1))
        return point, point
    return bootstrap_ci(statistic, *samples, **kw)


def score(runs: Sequence[ScoredRun], *, intervals: bool = True, confidence: float = 0.95, n_resamples: int = 2000,
          method: str = "BCa", seed: int = 0) -> Score:
    """One detector's score over labelled runs.

    A run alarmed when the detector alarmed at least once. TP = collapsed runs that alarmed, FN =
    collapsed runs that did not, FP = healthy runs that alarmed. Stalled runs are left out of
    recall, false alarms, precision and F1 (they are neither a collapse to catch nor a run that
    should stay quiet); the fraction of them that alarmed is ``stalled_alarm_rate``.

        recall = TP/#collapsed     false_alarm_rate = FP/#healthy
        precision = TP/(TP + FP)   F1 = 2TP/(2TP + FP + FN)     (NaN where the denominator is 0)
        lead = onset − first alarm step, per collapsed run that alarmed (negative: late)

    lead_median, lead_q25, lead_q75 are numpy's (linear) percentiles of the leads.

    Intervals (``intervals``; rlvrlab.analysis.stats.bootstrap_ci with ``confidence``,
    ``n_resamples``, ``method``, ``seed``) resample runs within the group each number is a
    fraction of, so that no resample leaves it undefined: recall the collapsed runs, the
    false-alarm rate the healthy runs, precision the runs that alarmed (collapsed or healthy), F1
    the collapsed and the healthy runs independently (a stratified bootstrap), the median lead
    the collapsed runs that alarmed. An interval is (nan, nan) when its group has fewer than 2
    runs, and (point, point) when every run of it agrees (the bootstrap has nothing to vary).
    """
    collapsed = [bool(r.alarms) for r in runs if r.label.kind == "collapsed"]
    healthy = [bool(r.alarms) for r in runs if r.label.kind == "healthy"]
    stalled = [bool(r.alarms) for r in runs if r.label.kind == "stalled"]
    tp, fp = sum(collapsed), sum(healthy)
    fn = len(collapsed) - tp
    leads = tuple(r.lead for r in runs if r.label.kind == "collapsed" and r.alarms)
    q25, q50, q75 = (float(q) for q in np.percentile(leads, [25, 50, 75])) if leads else (math.nan,) * 3
    out = Score(n_collapsed=len(collapsed), n_healthy=len(healthy), n_stalled=len(stalled), tp=tp, fn=fn, fp=fp,
                recall=_div(tp, len(collapsed)), false_alarm_rate=_div(fp, len(healthy)), precision=_div(tp, tp + fp),
                f1=_div(2 * tp, 2 * tp + fp + fn), stalled_alarm_rate=_div(sum(stalled), len(stalled)), leads=leads,
                lead_median=q50, lead_q25=q25, lead_q75=q75)
    if not intervals:
        return out
    kw = {"confidence": confidence, "n_resamples": n_resamples, "method": method, "seed": seed}
    ac, ah = np.asarray(collapsed, dtype=float), np.asarray(healthy, dtype=float)
    hits = np.asarray([1.0] * tp + [0.0] * fp)  # per alarmed run: did it collapse?
    return replace(out, recall_ci=_ci(np.mean, ac, **kw), false_alarm_ci=_ci(np.mean, ah, **kw),
                   precision_ci=_ci(np.mean, hits, **kw), f1_ci=_ci(f1_score, ac, ah, **kw),
                   lead_median_ci=_ci(np.median, np.asarray(leads, dtype=float), **kw))


def scored_runs(det: Detector, runs_rows: Sequence[Sequence[Row]], labels: Sequence[RunLabel]) -> list[ScoredRun]:
    """Each run's label with ``det``'s alarm steps on its rows."""
    if len(runs_rows) != len(labels):
        _checks.fail("labels", f"{len(labels)} labels", f"one per run ({len(runs_rows)})")
    return [ScoredRun(lab, tuple(alarm_steps(det, rows))) for rows, lab in zip(runs_rows, labels)]


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def tune(factory: Callable[..., Detector], grid: Mapping[str, Sequence[Any]], runs_rows: Sequence[Sequence[Row]],
         labels: Sequence[RunLabel]) -> dict[str, Any]:
    """The parameters in ``grid`` (every combination) whose detector scores best on these runs:
    the highest F1, then the larger median lead, then the lower false-alarm rate, then the first in
    grid order (a NaN counts as the worst value of each)."""

    def key(params: dict[str, Any]) -> tuple[float, float, float]:
        s = score(scored_runs(factory(**params), runs_rows, labels), intervals=False)
        return _or(s.f1, -math.inf), _or(s.lead_median, -math.inf), -_or(s.false_alarm_rate, math.inf)

    candidates = param_grid(grid)
    keys = [key(p) for p in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (keys[i], -i))]
