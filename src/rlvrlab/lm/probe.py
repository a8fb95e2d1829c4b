"""A learning rate recommended before training: the critical rate read off a few probe steps.

The theory's critical step is the step past which an update lowers the success rate instead of
raising it (App. F; DESIGN.md's ``eta_crit``). The probe measures where that happens for the
run's own first steps, before the run:

1. it takes ``steps`` optimizer steps of the run's own update (its preset, Adam, its first
   batches) at a rate ``lr_probe`` far below any threshold and keeps their displacement per unit
   rate, U = (θ_steps - θ0) / lr_probe. Adam's steps have size ≈ lr per coordinate whatever the
   gradient's scale, and for a run's first steps they hardly depend on lr (the first is exactly
   lr·g/(|g| + ε)), so θ0 + lr·U stands for where the run's first ``steps`` steps at rate lr lead;
2. it scans lr over a geometric grid and estimates the success rate J(θ0 + lr·U) on the
   prompts of those batches from ``fresh`` new completions per prompt (never trained on, so the
   estimate is not optimistic: DESIGN.md), every rate with the same random numbers, so that the
   curve's differences are not buried in sampling noise.

The predicted critical rate is where J(θ0 + lr·U) falls back to J(θ0) after its peak
(interpolated in log lr between grid points): the largest rate whose first steps still raise the
success rate. The recommended rate is half of it: one step's second-order gain
Δμη - ½(var- - var+)η² peaks at half the critical step (Lemma 3 to second order). The monitor's
second-order prediction from the first probe step, lr_probe / crit_ratio on fresh completions
(``gap_fresh/lr_crit``), is reported beside them.

Why sampling and not Lemma 3: Lemma 3 prices any θ from completions drawn at θ0, exactly in
expectation, but its importance weights exp(ΔL) degenerate once the step is large enough to
matter (one completion's weight dominates), and the scan's interesting part is exactly there.

The extrapolation θ0 + lr·U holds while the gradients met along the way resemble those at θ0;
a rate far above the threshold changes them within the first steps. How far it holds is
measured against the critical rates of learning-rate sweeps (experiment ``lr-oracle``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rlvrlab import _checks
from rlvrlab.gap import gap_stats_mc
from rlvrlab.io import atomic_write_json, rows_table, write_table
from rlvrlab.lm.config import TrainConfig
from rlvrlab.lm.diagnostics import critical_ratio
from rlvrlab.lm.logprobs import token_logprobs

__all__ = ["MAX_PROBE_STEPS", "ProbeResult", "check_probe", "crossing", "probe", "probe_curve", "scan", "scan_columns", "scan_rates",
           "schedule_scan", "success_rate"]

MAX_PROBE_STEPS = 10  # issue 14: a probe spends at most 10 optimizer steps


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What the probe measured: its prediction, its recommendation and the curve they come from."""

    critical_rate: float  # where J(θ0 + lr·U) falls back to J(θ0) (inf: not within the grid; 0: below it)
    recommended_rate: float  # half the critical rate
    peak_rate: float  # where J(θ0 + lr·U) is highest
    second_order_rate: float  # lr_probe / crit_ratio of the probe's first step, on completions drawn at θ0
    steps: int
    rates: tuple[float, ...]  # (L,) the rates scanned (the grid up to where the scan stopped)
    J: tuple[float, ...]  # (L,) success rate at θ0 + lr·U
    se_J: tuple[float, ...]  # (L,)
    J0: float  # the success rate at θ0 (the same completions' random numbers)
    displacement: float  # ‖U‖ = ‖θ_steps - θ0‖ / lr_probe: the probe steps' displacement per unit rate
    completions_per_rate: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if not isinstance(v, tuple)}

    def rows(self) -> list[dict[str, float]]:
        return [{"lr": r, "J": j, "se_J": s, "gain": j - self.J0} for r, j, s in zip(self.rates, self.J, self.se_J)]


def scan_columns(result: ProbeResult) -> dict[str, float]:
    """The probe/* columns a training run's metrics row carries for a scan made before its step."""
    return {"probe/critical_rate": result.critical_rate, "probe/recommended_rate": result.recommended_rate,
            "probe/J": result.J0, "probe/seconds": result.seconds}


def schedule_scan(config: TrainConfig) -> dict[str, Any]:
    """The scan a training run makes for its schedule (schedule probe; gap-adaptive with adaptive_start
    probe), as keyword arguments of `scan` and of the TRL integration's probe_trl: probe_steps steps
    at lr_probe = 10·lr_min, then lr_min to lr_max at six rates a decade."""
    decades = math.log10(config.lr_max / config.lr_min)
    return {"steps": config.probe_steps, "fresh": config.probe_fresh, "lr_probe": config.lr_min * 10, "lr_low": config.lr_min,
            "lr_high": config.lr_max, "points": max(3, round(6 * decades) + 1)}


def crossing(rates: np.ndarray, gain: np.ndarray) -> tuple[float, float]:
    """(critical, peak) of a gain curve on an increasing grid of rates.

    peak: the rate of the largest gain. critical: the first rate above the peak where the gain
    is <= 0, interpolated linearly in log rate between it and the grid point before it; inf
    when the gain stays positive up to the grid's end, 0 when it is <= 0 already at the peak
    (every rate of the grid loses). NaN entries (no estimate) are skipped.
    """
    rates, gain = np.asarray(rates, float), np.asarray(gain, float)
    ok = np.isfinite(gain)
    if not ok.any():
        return math.nan, math.nan
    rates, gain = rates[ok], gain[ok]
    i = int(np.argmax(gain))
    if gain[i] <= 0:
        return 0.0, float(rates[i])
    for j in range(i + 1, len(rates)):
        if gain[j] <= 0:
            x0, x1 = math.log(rates[j - 1]), math.log(rates[j])
            t = gain[j - 1] / (gain[j - 1] - gain[j])
            return float(math.exp(x0 + t * (x1 - x0))), float(rates[i])
    return math.inf, float(rates[i])


@torch.no_grad()
def probe_curve(rate_J: Callable[[float], tuple[float, float]], rates: np.ndarray, J0: float, se0: float) -> tuple[np.ndarray, np.ndarray]:
    """J and its standard error at each rate of an increasing grid, from ``rate_J(lr) -> (J, se)``;
    the scan stops (NaN after) once two rates in a row past the peak are below J0 by more than
    two standard errors: every larger rate is past the threshold, and costs a scan step."""
    J, se = np.full(len(rates), math.nan), np.full(len(rates), math.nan)
    below = 0
    for k, lr in enumerate(rates):
        J[k], se[k] = rate_J(float(lr))
        below = below + 1 if J[k] < J0 - 2 * math.hypot(se[k], se0) and k > int(np.nanargmax(J[: k + 1])) else 0
        if below == 2:
            break
    return J, se


def check_probe(steps: int, fresh: int, lr_probe: float, lr_low: float, lr_high: float, points: int, *, prefix: str = "") -> None:
    """The probe's settings, as a caller names them (``prefix`` + steps, fresh, ...)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_PROBE_STEPS:
        _checks.fail(f"{prefix}steps", steps, f"an integer from 1 to {MAX_PROBE_STEPS} (a probe spends at most {MAX_PROBE_STEPS} steps)")
    if isinstance(fresh, bool) or not isinstance(fresh, int) or fresh < 2:
        _checks.fail(f"{prefix}fresh", fresh, "an integer >= 2 (completions per prompt and rate, never trained on)")
    for name, value in (("lr_probe", lr_probe), ("lr_low", lr_low), ("lr_high", lr_high)):
        _checks.positive(f"{prefix}{name}", value)
    if not lr_high > lr_low:
        _checks.fail(f"{prefix}lr_high", lr_high, f"a rate above lr_low ({lr_low})")
    if isinstance(points, bool) or not isinstance(points, int) or points < 3:
        _checks.fail(f"{prefix}points", points, "an integer >= 3 (rates on the grid)")


def success_rate(success: torch.Tensor) -> tuple[float, float]:
    """(J, se) from (P, n) 0/1 successes, n completions of each of P prompts: the prompts are
    independent, their completions are not (they share the prompt), so the standard error is that
    of the mean over prompts of each prompt's success rate."""
    per_prompt = success.float().mean(-1)  # (P,)
    return float(per_prompt.mean()), float(per_prompt.std() / math.sqrt(len(per_prompt)))


def scan_rates(rate_J: Callable[[float], tuple[float, float]], *, J0: float, se0: float, lr_low: float, lr_high: float,
               points: int, steps: int, displacement: float, second_order: float, completions: int,
               start: float) -> ProbeResult:
    """The scan over rates and its reading, shared by every trainer's probe: J(θ0 + lr·U) from
    ``rate_J(lr) -> (J, se)`` on ``points`` geometric rates from ``lr_low`` to ``lr_high``
    (probe_curve), the critical and peak rates (crossing), and the ProbeResult (``start``: the
    probe's perf_counter at its start)."""
    rates = np.geomspace(lr_low, lr_high, points)
    J, se = probe_curve(rate_J, rates, J0, se0)
    scanned = np.isfinite(J)
    critical, peak = crossing(rates, J - J0)
    return ProbeResult(critical, critical / 2, peak, second_order, steps, tuple(map(float, rates[scanned])),
                       tuple(map(float, J[scanned])), tuple(map(float, se[scanned])), J0, displacement, completions,
                       time.perf_counter() - start)


def scan(trainer: Any, *, steps: int = 4, fresh: int = 4, lr_probe: float = 1e-5, lr_low: float = 1e-5, lr_high: float = 1e-1,
         points: int = 25) -> ProbeResult:
    """The probe from a trainer's current state (rlvrlab.lm.trainer.GRPOTrainer, at its current step):
    its next ``steps`` batches, its own optimizer state (a run's first steps start from none), and
    everything put back afterwards (parameters, optimizer, schedule, random streams, step), so that
    the run goes on as if the probe had not been there."""
    from rlvrlab.lm.trainer import DivergedError

    check_probe(steps, fresh, lr_probe, lr_low, lr_high, points)
    start = time.perf_counter()
    params, config, step0 = trainer.params, trainer.config, trainer.step
    theta0 = torch.nn.utils.parameters_to_vector(params).detach().clone()
    saved = (copy.deepcopy(trainer.opt.state_dict()), copy.deepcopy(trainer.sched.state_dict()), trainer.gen.get_state(),
             trainer.fresh_gen.get_state())
    seed = config.seed * 1_000_003 + step0 + 2_000_003  # the scan's random numbers: one stream, restarted at every rate
    def rate_J(lr: float) -> tuple[float, float]:
        torch.nn.utils.vector_to_parameters(theta0 + lr * U, params)
        try:
            r = trainer._rollout(problems, fresh, torch.Generator(trainer.device).manual_seed(seed))[1]
        except DivergedError:  # a forward that overflows solves nothing
            return 0.0, 0.0
        return success_rate(r)

    try:
        # the probe's steps at lr_probe: no diagnostics, and no scheduler step (schedule "probe" sets its rate itself),
        # which would put the run's own rate back
        trainer.config = dataclasses.replace(config, diagnostics=False, fresh_samples=0, kl_reference=False, schedule="probe")
        problems = []
        for b in range(steps):  # the prompts of the run's next `steps` batches
            trainer.step = step0 + b
            problems += trainer._batch()
        # the scan at rate 0: J0, and the completions at θ0 (never trained on) whose log-ratios give the first probe
        # step's second-order ratio
        torch.nn.utils.vector_to_parameters(theta0.clone(), params)  # a copy: the steps below write into the parameters
        measured = trainer._rollout(problems, fresh, torch.Generator(trainer.device).manual_seed(seed))
        J0, se0 = success_rate(measured[1])
        with torch.inference_mode():
            old = token_logprobs(trainer.model, measured[0], distinct=True)[0]  # a repeated completion runs once
        trainer._set_lr(lr_probe)
        second_order = math.nan
        for b in range(steps):
            trainer.step = step0 + b
            trainer.train_step()
            if b == 0:
                with torch.inference_mode():
                    delta = (token_logprobs(trainer.model, measured[0], distinct=True)[0] - old).sum(-1)[None]
                stats = gap_stats_mc(measured[1].reshape(1, -1), proj=delta)
                ratio = float(critical_ratio(stats.delta_mu, stats.var_plus, stats.var_minus)[0])
                second_order = math.nan if math.isnan(ratio) else math.inf if ratio == 0 else lr_probe / ratio
        U = (torch.nn.utils.parameters_to_vector(params).detach() - theta0) / lr_probe
        return scan_rates(rate_J, J0=J0, se0=se0, lr_low=lr_low, lr_high=lr_high, points=points, steps=steps,
                          displacement=float(U.norm()), second_order=second_order, completions=len(problems) * fresh,
                          start=start)
    finally:
        torch.nn.utils.vector_to_parameters(theta0.clone(), params)
        trainer.opt.load_state_dict(saved[0])
        trainer.sched.load_state_dict(saved[1])
        trainer.gen.set_state(saved[2])
        trainer.fresh_gen.set_state(saved[3])
        trainer.config, trainer.step = config, step0


def probe(config: TrainConfig, out: str | Path, *, steps: int = 4, fresh: int = 4, lr_probe: float = 1e-5,
          lr_low: float = 1e-5, lr_high: float = 1e-1, points: int = 25,
          reward_fn: Callable[[str, Any], float] | None = None) -> ProbeResult:
    """Probe ``config``'s run (its model, task, preset, batches and seed) before training it.

    Spends ``steps`` optimizer steps (at most MAX_PROBE_STEPS) at ``lr_probe`` (far below the
    threshold: the tiny models' thresholds are 2e-4 to 1e-3; a real model's are lower, so set it
    to a tenth of the smallest rate you would consider), then scans ``points`` rates from
    ``lr_low`` to ``lr_high`` (geometric) with ``fresh`` completions per prompt of those steps'
    batches at each. Writes ``out/probe.json`` (the settings and the ProbeResult without the curve)
    and ``out/probe.parquet`` (the curve: lr, J, se_J, gain = J - J0). The model on disk is untouched.
    ``reward_fn(completion, problem) -> 0 or 1`` replaces the task's verifier, as in the trainer.
    """
    from rlvrlab.lm.trainer import GRPOTrainer

    check_probe(steps, fresh, lr_probe, lr_low, lr_high, points)
    cfg = dataclasses.replace(config, schedule="constant", diagnostics=False, fresh_samples=0, kl_reference=False, tensorboard=False)
    trainer = GRPOTrainer(cfg, out, reward_fn=reward_fn, on_warning=lambda message: None)
    result = scan(trainer, steps=steps, fresh=fresh, lr_probe=lr_probe, lr_low=lr_low, lr_high=lr_high, points=points)
    out = Path(out)
    write_table(out / "probe.parquet", rows_table(result.rows()))
    atomic_write_json(out / "probe.json", {"settings": dataclasses.asdict(config), "probe": {
        "steps": steps, "fresh": fresh, "lr_probe": lr_probe, "lr_low": lr_low, "lr_high": lr_high, "points": points},
        **result.summary()})
    return result
