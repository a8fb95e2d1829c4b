"""The Gradient-Gap monitor: what a user acts on, from each step's post-step log-ratios.

Every trainer (rlvrlab's own GRPOTrainer, the TRL subclass, any later one) is a thin adapter
that measures, per optimizer step, each sampled completion's log-ratio ΔL = log π_new − log π_old,
its 0/1 success, the step's norm η and the learning rate used, and hands them to one GapMonitor.
The monitor owns everything derived from them (DESIGN.md, "Measuring the gap inside real
training"):

- the step's diagnostics (rlvrlab.lm.diagnostics.step_diagnostics), under a prefix: ``gap/`` for
  the completions the step trained on (free, optimistic), ``gap_fresh/`` for completions drawn
  from π_old and never trained on (unbiased);
- the cumulative alignment M = Σ [Δμ]₊·η (eq. 12; rlvrlab.gap.alignment_gain, the simulators'
  definition), one per prefix;
- the critical learning rate lr/ratio (``gap/lr_crit``);
- the warnings, each kind once per run: the step overshot (crit_ratio > 1 or a negative realized
  log-odds change) for ``patience`` consecutive steps; most groups had no reward variance;
- the gap-adaptive rate (GapAdaptiveRate), when asked for;
- the per-step history and its checkpointed state (``state_dict`` / ``load_state_dict``, plain
  JSON-able values, so that a resumed run neither loses nor repeats a row);
- with ``per_prompt``, a row per (step, prefix, prompt) as well (``prompt_table``: the group's
  J_q, Δμ_q·η, log-odds change, var± and critical-step ratio, rlvrlab.lm.diagnostics.
  prompt_diagnostics), for questions asked prompt by prompt (§4's success-rate scaling).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pyarrow as pa
import torch

from rlvrlab import _checks
from rlvrlab.gap import alignment_gain
from rlvrlab.io import rows_table
from rlvrlab.lm.diagnostics import PROMPT_COLUMNS, GapAdaptiveRate, critical_rate, diagnostics

__all__ = ["GapMonitor", "GapWarning", "gap_warnings"]


class GapWarning(UserWarning):
    """The diagnostics say the run is in trouble (once per kind and run; a GapMonitor built with
    ``on_warning`` hands the message there instead)."""


def _past_critical(row: dict[str, float]) -> bool:
    """The step overshot: past the second-order critical step, or it lowered the log-odds of success."""
    return row.get("gap/crit_ratio", math.nan) > 1 or row.get("gap/log_odds_change", math.nan) < 0


def gap_warnings(rows: list[dict[str, float]], patience: int = 3) -> dict[str, str]:
    """Warnings the rows so far call for, each once: the steps overshoot (gap/crit_ratio > 1, or a
    negative realized log-odds change) or most groups have no reward variance, for ``patience``
    consecutive measured steps."""
    out: dict[str, str] = {}
    steps = [r for r in rows if "gap/crit_ratio" in r]
    for i in range(len(steps) - patience + 1):
        window = steps[i : i + patience]
        if "crit" not in out and all(_past_critical(r) for r in window):
            last = window[-1]
            out["crit"] = (f"the step overshot for {patience} consecutive steps (steps {window[0]['step']}-{last['step']}; "
                           f"gap/crit_ratio {last['gap/crit_ratio']:.2f}, gap/log_odds_change "
                           f"{last.get('gap/log_odds_change', math.nan):.3g}): learning rate {last['learning_rate']:.3g} is past the "
                           f"estimated critical step, which puts the critical rate near {last['gap/lr_crit']:.3g} (gap/lr_crit)")
        if "variance" not in out and all(r["gap/zero_variance_groups"] > 0.5 for r in window):
            out["variance"] = (f"more than half of the groups had no reward variance for {patience} consecutive steps (steps "
                               f"{window[0]['step']}-{window[-1]['step']}): they give GRPO no signal; a larger group, or "
                               "prompts of intermediate difficulty, would")
    return out


class GapMonitor:
    """One run's Gradient-Gap monitor (see the module docstring).

    Per optimizer step an adapter calls ``measure`` once per set of completions (prefix ``gap/``,
    optionally ``gap_fresh/``), adds whatever else it logs to the row, and hands the row to
    ``record``, which keeps it, raises the warnings it calls for and returns the next learning
    rate (the gap-adaptive rule's, or the same rate).

    patience:   consecutive overshooting steps before the warning
    adaptive:   the gap-adaptive rule, or None for a rate the monitor does not set
    on_warning: receives each warning's message once (default: a GapWarning)
    per_prompt: keep a row per prompt and step too (``prompt_table``)
    """

    def __init__(self, *, patience: int = 3, adaptive: GapAdaptiveRate | None = None,
                 on_warning: Callable[[str], None] | None = None, per_prompt: bool = False):
        _checks.integer("patience", patience)  # >= 1
        self.patience, self.adaptive, self.per_prompt = patience, adaptive, per_prompt
        self.prompt_history: list[dict[str, float]] = []  # per_prompt: one row per (step, prefix, prompt)
        self._pending: list[dict[str, float]] = []  # this step's prompt rows, until ``record`` gives them the step
        self.on_warning = on_warning or (lambda message: warnings.warn(message, GapWarning, stacklevel=4))
        self.M: dict[str, float] = {}  # prefix -> cumulative positive alignment
        self.history: list[dict[str, float]] = []
        self.warned: set[str] = set()

    def measure(self, delta_logp: torch.Tensor, success: torch.Tensor, *, eta: float, lr: float, grad_norm: float = math.nan,
                mean_length: float = math.nan, prefix: str = "gap/", prompt_ids: list[int] | None = None,
                lengths: torch.Tensor | None = None, measured: torch.Tensor | None = None,
                always: torch.Tensor | None = None) -> dict[str, float]:
        """The step's diagnostics for one set of completions, under ``prefix``, with M and lr_crit.

        delta_logp: (B, G) log π_new(o) − log π_old(o) of each completion (groups of G, one per prompt)
        success:    (B, G) 0/1
        eta:        ‖θ_new − θ_old‖ over the trainable parameters (NaN: not measured)
        lr:         the learning rate the step used
        prompt_ids, lengths: with per_prompt, each group's prompt (default: its index in the batch)
                    and the (B, G) completion lengths, kept in its prompt row
        measured:   (B,) bool, the groups whose delta_logp was measured (rlvrlab.lm.diagnostics.measured_groups;
                    None: every group); the others' rows are never read
        always:     (B,) bool, the unmixed groups measured_groups measured for certain (its ``always``)
        """
        diag, per = diagnostics(delta_logp, success, eta=eta, grad_norm=grad_norm, mean_length=mean_length, measured=measured,
                                always=always)
        if self.per_prompt:
            B, G = success.shape
            ids = list(range(B)) if prompt_ids is None else list(prompt_ids)
            length = lengths.float().mean(-1).tolist() if lengths is not None else [math.nan] * B
            values = {k: per[k].tolist() for k in PROMPT_COLUMNS}
            self._pending += [{"prefix": prefix, "prompt": int(ids[b]), "G": G, "lr": lr, "eta": eta, "mean_length": length[b],
                               **{k: float(values[k][b]) for k in PROMPT_COLUMNS}} for b in range(B)]
        M = self.M.get(prefix, 0.0) + alignment_gain(diag["gap/delta_mu_eta"])
        self.M[prefix] = M
        diag["gap/M"] = M
        diag["gap/lr_crit"] = critical_rate(lr, diag["gap/crit_ratio"])
        return {prefix + k.removeprefix("gap/"): v for k, v in diag.items()}

    def record(self, row: dict[str, float], *, rate: float | None = None) -> float:
        """Keep the step's row (``step``, ``learning_rate`` and the measured ``gap/...``), warn as the
        history calls for, and return the next rate: the adaptive rule's move from ``rate``
        (default: ``learning_rate``, the rate the step used; a trainer whose schedule scales a peak rate
        passes the peak) after a measured step at a positive rate, else ``rate`` unchanged (a step at
        rate 0, a warm-up's first, carries no information)."""
        self.history.append(row)
        self.prompt_history += [{"step": row.get("step", math.nan), **r} for r in self._pending]
        self._pending = []
        recent = []  # the last `patience` measured rows (rows without gap/ values do not break a streak)
        for r in reversed(self.history):
            if len(recent) == self.patience:
                break
            if "gap/crit_ratio" in r:
                recent.insert(0, r)
        for kind, message in gap_warnings(recent, self.patience).items():
            if kind not in self.warned:
                self.warned.add(kind)
                self.on_warning(message)
        lr = row.get("learning_rate", math.nan)
        rate = lr if rate is None else rate
        if self.adaptive is None or "gap/crit_ratio" not in row or not lr > 0:
            return rate
        return self.adaptive(row["gap/crit_ratio"], rate)

    def table(self) -> pa.Table:
        """The history as a table, a column per key any row has (NaN where a row lacks it)."""
        return rows_table(self.history)

    def prompt_table(self) -> pa.Table:
        """The per-prompt rows (``per_prompt``): step, prefix, prompt, G, lr, eta, mean_length and
        rlvrlab.lm.diagnostics.PROMPT_COLUMNS, one row per (step, prefix, prompt)."""
        types = {"prefix": pa.string(), "prompt": pa.int64(), "G": pa.int64()}
        names = ("step", "prefix", "prompt", "G", "lr", "eta", "mean_length", *PROMPT_COLUMNS)
        return pa.table({k: pa.array([r[k] for r in self.prompt_history], types.get(k, pa.float64())) for k in names})

    def start(self, prefixes: tuple[str, ...] = ("gap/",)) -> dict[str, float]:
        """M = 0 for each prefix, for a run's step-0 row."""
        for p in prefixes:
            self.M.setdefault(p, 0.0)
        return {p + "M": self.M[p] for p in prefixes}

    # --- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything a resumed run needs (JSON-able: non-finite floats are kept as such by json)."""
        rule = self.adaptive
        log_crit = rule.log_lr_crit if rule is not None else math.nan
        log_min = rule.log_lr_crit_min if rule is not None else math.nan
        return {"M": dict(self.M), "warned": sorted(self.warned), "history": list(self.history),
                "prompt_history": list(self.prompt_history), "log_lr_crit": None if math.isnan(log_crit) else log_crit,
                "log_lr_crit_min": None if math.isnan(log_min) else log_min, "estimates": rule.estimates if rule is not None else 0}

    def load_state_dict(self, state: dict) -> None:
        self.M = dict(state["M"])
        self.warned = set(state["warned"])
        self.history = list(state["history"])
        self.prompt_history = list(state.get("prompt_history", []))  # checkpoints from before per_prompt have none
        if self.adaptive is not None:
            self.adaptive.log_lr_crit = math.nan if state["log_lr_crit"] is None else state["log_lr_crit"]
            log_min = state.get("log_lr_crit_min")  # checkpoints from before the ratchet have neither
            self.adaptive.log_lr_crit_min = math.nan if log_min is None else log_min
            self.adaptive.estimates = state.get("estimates", 0)
