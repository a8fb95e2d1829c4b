"""Peer collapse monitors run on rlvrlab's per-step metric logs (warning-bench's baselines).

Three RL-training monitors that practitioners pip-install today, each fed through its own
documented API at its default thresholds, one metrics row at a time, in step order. They are the
optional extra ``pip install 'rlvrlab[peers]'``, pinned (rlwatch 0.5.1, rldoctor 0.2.0,
rlprobe 0.1.0).

Input: a run's metrics.parquet rows (rlvrlab.lm.trainer): ``row["step"]``, TRL's names for the
training curves, ``eval/accuracy`` every few steps. A NaN value means "not logged at that step" and
is never passed on (TRL leaves such a key out of its logs), so a detector that reads NaN as a
numerical failure (rlwatch's ``loss_nan``, rldoctor's non-finite gradient count) fires only on ±inf.
A row with none of a package's metrics is not fed to it (row 0, before training, has only
``eval/accuracy``: it reaches rldoctor alone).

**rlwatch** (``RLWatch.log_step``, the "manual" framework; a streaming check at every step, each
detector with its own warmup; alerts pass rlwatch's own cooldown, 100 steps per detector and
severity, at most 50 per run). Names mapped as its TRL callback maps them:

    entropy_collapse     entropy        -> entropy          < 1.0 for 25 (warning) / 50 (critical) steps
    kl_explosion         kl             -> kl_divergence    > 3σ (warning) / 4.5σ above the rolling mean
    reward_hacking       reward_std     -> reward_std       variance > 3x (warning) / 6x its baseline
    advantage_variance   advantage_std  -> advantage_std    > 3x (warning) / 6x the rolling mean
    loss_nan             loss           -> loss             non-finite loss (critical)
    gradient_norm_spike  grad_norm      -> grad_norm        > 3σ (warning) / 4.5σ above a frozen baseline
    reward_mean_drift    reward         -> reward_mean      monotone for 50 steps, moving >= 0.1 (warning)

(also fed, read by no detector: learning_rate. Its bimodality test needs per-sample rewards, which
rlvrlab does not log.) Alarms: severities ``warning`` and ``critical``, both of which rlwatch sends.
The config is ``RLWatchConfig()`` itself, not ``load_config``, so an rlwatch.yaml in the working
directory or RLWATCH_* variables can neither change a threshold nor send a message; its SQLite
store goes to a temporary directory and its console panels are swallowed.

**rldoctor** (``rl_doctor.live.LiveMonitor.log``, what its TRL callback drives: from the 60th
record on, every ``check_every`` = 25 records it diagnoses the history so far and returns the
findings that are new or worse; row 0 is a record, so the checks fall on steps 74, 99, ...). It
resolves TRL's names itself; we pass it exactly these keys:

    advantage_collapse   frac_reward_zero_std (+ reward)
    entropy_collapse     entropy (+ reward, eval/accuracy)
    reward_hacking       reward + eval/accuracy
    length_pathology     completions/mean_length (+ reward, eval/accuracy, completions/clipped_ratio)
    clip_saturation      clip_ratio/{region,low,high}_mean (+ entropy)
    kl_drift             kl (+ eval/accuracy, reward)
    gradient_pathology   grad_norm (+ loss, frac_reward_zero_std)
    reward_composition   unfed: needs one reward series per reward function (rlvrlab has one reward)
    plateau              eval/accuracy or reward

(also passed: reward_std, advantage_std, learning_rate, completions/max_length.) Alarms: findings
at ``WARNING`` or ``CRITICAL``, its LiveMonitor's ``alert_at`` default (``INFO`` is not an alarm).

**rlprobe** (its doctor, ``rlprobe.doctor.diagnose_view`` on a ``RunView`` of the records so far,
at the cadence of its TRL callback's live mode: every ``check_every`` = 25 steps, each
(signature, severity) reported once; each detector needs 30 records). Keys mapped as that
callback's table maps them, plus ``advantage_std -> adv_std``, a field it has that TRL does not log:

    KL_BLOWUP                     kl -> kl_mean
    ENTROPY_COLLAPSE              entropy -> entropy_mean (+ reward -> reward_mean)
    REWARD_HACK_LENGTH            reward + completions/mean_length -> completion_len_mean
    CLIP_SATURATION               clip_ratio/region_mean -> clip_fraction
    DEGENERATE_GROUPS             frac_reward_zero_std -> zero_variance_group_frac (> 0.4 for 15 steps)
    ADV_COLLAPSE                  advantage_std -> adv_std
    GRAD_PATHOLOGY                grad_norm (NaN/Inf counts unfed)
    TRUNCATION_STARVE             completions/clipped_ratio -> truncation_rate
    REWARD_STD_DEATH              reward_std (+ reward)
    FORMAT_GAMING                 unfed: per-function reward components
    VALUE_DIVERGENCE              unfed: a PPO value head
    REPETITION_SPIRAL             unfed: n-gram repetition rate
    REF_POLICY_DRIFT_ASYMMETRY    unfed: KL per token-position bucket
    THROUGHPUT_ROT                unfed: step time (and ``info`` only)

(also fed: loss, learning_rate -> lr, completions/max_length.) Alarms: severities ``warn`` and
``critical`` (``info`` is not).

On flat, noisy logs (tests/test_peers.py, 100 seeds of 80 steps) rlprobe stays silent; rlwatch's
3σ rules (kl_explosion, gradient_norm_spike) alarm on a quarter of them, half at 200 steps; rldoctor's
``plateau`` (best reward >= 30% of the run back) and ``reward_hacking`` (reward and held-out accuracy
rank-anticorrelated over >= 6 evaluations) fire on most of them by design.

No look-ahead: every package sees row k only after the alarms of rows < k are recorded, and the
alarms recorded while handling row k are those of step k; so the alarms at steps <= k of a run are
exactly those of the run cut after step k. ``check_every`` = 1 re-diagnoses rldoctor and rlprobe
at every step: their detection logic without the 25-step wait of their live defaults.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence

from rlvrlab import _checks

__all__ = ["PEERS", "peer_alarms", "peer_detectors"]

PEERS: tuple[str, ...] = ("rlwatch", "rldoctor", "rlprobe")
_MODULES = {"rlwatch": "rlwatch", "rldoctor": "rl_doctor", "rlprobe": "rlprobe"}
# each package's own live cadence, in steps (rlwatch checks every step and has no such setting)
CHECK_EVERY = {"rlwatch": 1, "rldoctor": 25, "rlprobe": 25}

# rlwatch.log_step keyword <- rlvrlab (TRL) key: the table of rlwatch's TRL callback
_RLWATCH_KEYS = {"entropy": "entropy", "kl_divergence": "kl", "reward_mean": "reward", "reward_std": "reward_std",
                 "advantage_std": "advantage_std", "loss": "loss", "learning_rate": "learning_rate",
                 "grad_norm": "grad_norm"}
# the names its alerts carry, in the order its DetectorSuite runs them
_RLWATCH_DETECTORS = ("entropy_collapse", "kl_explosion", "reward_hacking", "advantage_variance", "loss_nan",
                      "gradient_norm_spike", "reward_mean_drift")
# keys handed to rldoctor as they are (its aliases resolve them); gap/... and loss/... stay out of its way
_RLDOCTOR_KEYS = ("reward", "reward_std", "frac_reward_zero_std", "advantage_std", "entropy", "kl",
                  "clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean", "grad_norm",
                  "learning_rate", "loss", "completions/mean_length", "completions/max_length",
                  "completions/clipped_ratio", "eval/accuracy")
# rlprobe StepRecord field <- rlvrlab (TRL) key: its TRL callback's table, plus adv_std
_RLPROBE_KEYS = {"reward_mean": "reward", "reward_std": "reward_std",
                 "zero_variance_group_frac": "frac_reward_zero_std", "kl_mean": "kl", "entropy_mean": "entropy",
                 "clip_fraction": "clip_ratio/region_mean", "loss": "loss",
                 "lr": "learning_rate", "grad_norm": "grad_norm", "completion_len_mean": "completions/mean_length",
                 "completion_len_max": "completions/max_length", "truncation_rate": "completions/clipped_ratio",
                 "adv_std": "advantage_std"}


def peer_detectors(package: str) -> tuple[str, ...]:
    """The detectors of ``package`` (one of PEERS), named as the package names them, in its own order."""
    _import(package)
    if package == "rlwatch":
        return _RLWATCH_DETECTORS
    if package == "rldoctor":
        from rl_doctor.detectors import available
        return tuple(available())
    from rlprobe.doctor import REGISTRY
    return tuple(d.id for d in REGISTRY)


def peer_alarms(package: str, rows: Sequence[Mapping[str, float]], *,
                check_every: int | None = None) -> dict[str, list[int]]:
    """Run ``package`` (one of PEERS) over a run's metric rows, in step order, at its default thresholds.

    Returns, for every detector of ``peer_detectors(package)``, the steps (values of ``row["step"]``)
    at which it raised an alarm (severities: see the module docstring), ascending; the alarm at step
    k depends only on rows with step <= k. ``check_every``: steps between two diagnoses of rldoctor
    and rlprobe (default: their live default, 25; 1 diagnoses at every step); rlwatch checks every
    step and accepts only None or 1.
    """
    _import(package)
    every = CHECK_EVERY[package] if check_every is None else check_every
    _checks.integer("check_every", every)
    if package == "rlwatch" and every != 1:
        _checks.fail("check_every", check_every, "None or 1 for rlwatch, which checks every step")
    steps = [row["step"] for row in rows]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        _checks.fail("rows", "steps out of order", "rows in increasing step order")
    alarms: dict[str, list[int]] = {name: [] for name in peer_detectors(package)}

    def alarm(detector: str, step: int) -> None:
        at = alarms.setdefault(detector, [])
        if not at or at[-1] != step:  # a warning and a critical at the same step are one alarm
            at.append(step)

    _RUNNERS[package](rows, every, alarm)
    return alarms


def _rlwatch(rows: Sequence[Mapping[str, float]], every: int, alarm: Callable[[str, int], None]) -> None:
    import rlwatch
    from rlwatch.config import StorageConfig

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):  # alert panels
        monitor = rlwatch.RLWatch(rlwatch.RLWatchConfig(run_id="rlvrlab", framework="manual",
                                                        storage=StorageConfig(log_dir=tmp)))
        try:
            for row in rows:
                metrics = _fields(row, _RLWATCH_KEYS)
                if metrics:
                    for alert in monitor.log_step(int(row["step"]), **metrics):  # the alerts it sent
                        alarm(alert.detector, int(row["step"]))
        finally:
            monitor.store.close()


def _rldoctor(rows: Sequence[Mapping[str, float]], every: int, alarm: Callable[[str, int], None]) -> None:
    from rl_doctor.live import LiveMonitor

    # on_finding replaces its default, which logs each finding; alert_at and min_steps stay at theirs
    monitor = LiveMonitor(check_every=every, on_finding=lambda finding: None)
    for row in rows:
        record = _fields(row, {key: key for key in _RLDOCTOR_KEYS})
        if record:
            for finding in monitor.log(record, step=int(row["step"])):
                alarm(finding.detector, int(row["step"]))
    if getattr(monitor, "_errored", False):  # LiveMonitor swallows its own errors: silence is not "no alarm"
        raise RuntimeError("rldoctor's LiveMonitor failed on these rows and disabled itself")


def _rlprobe(rows: Sequence[Mapping[str, float]], every: int, alarm: Callable[[str, int], None]) -> None:
    from rlprobe.doctor import RunView, diagnose_view
    from rlprobe.schemas import RunManifest, StepRecord

    manifest = RunManifest(run_id="rlvrlab", created_at="", algorithm="grpo")
    records, reported = [], set()
    for row in rows:
        fields = _fields(row, _RLPROBE_KEYS)
        if not fields:
            continue
        step = int(row["step"])
        records.append(StepRecord(step=step, **fields))
        if step == 0 or step % every:  # its TRL callback: diagnose when step % diagnose_every == 0
            continue
        for finding in diagnose_view(RunView(manifest, list(records))):
            key = (finding.signature_id, finding.severity)
            if key not in reported:
                reported.add(key)
                if finding.severity in ("warn", "critical"):
                    alarm(finding.signature_id, step)


_RUNNERS = {"rlwatch": _rlwatch, "rldoctor": _rldoctor, "rlprobe": _rlprobe}


def _fields(row: Mapping[str, float], keys: Mapping[str, str]) -> dict[str, float]:
    """{name: row[key]} for the keys the row has a value for (NaN is "not logged"; ±inf is a value)."""
    out = {}
    for name, key in keys.items():
        value = row.get(key)
        if value is not None and not math.isnan(value):
            out[name] = float(value)
    return out


def _import(package: str) -> None:
    module = _MODULES[_checks.choose("package", package, PEERS)]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        _checks.fail("package", package, "an installed peer: pip install 'rlvrlab[peers]'")
