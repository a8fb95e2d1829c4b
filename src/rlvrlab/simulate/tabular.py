"""Fused kernel: exact (normalized) policy-gradient steps on the tabular softmax bandit.

For π = softmax(θ) over K arms with 0/1 rewards r shared by all runs, the exact gradient is
g = ∇J = π ⊙ (r - J) (eq. 4 with the exact baseline), and along w = c·g (c = 1 for "gradient",
c = 1/‖g‖ for "normalized-gradient" and "gap") every quantity of the theory has a closed form in
the power sums S±_m = Σ_{a correct / incorrect} π_a^m:

    ‖g‖²      = (1-J)² S+_2 + J² S-_2
    delta_mu  = c [ (1-J)/J · S+_2 + J/(1-J) · S-_2 ]      (= ‖g‖²/(J(1-J)) for c = 1, App. I.1)
    var_plus  = c² [ (1-J)²/J · S+_3 - ((1-J)/J · S+_2)² ]
    var_minus = c² [ J²/(1-J) · S-_3 - (J/(1-J) · S-_2)² ]
    log_odds  = log Σ_+ π - log Σ_- π

and the step θ <- θ + eta·c·g is, on the probabilities, π_a <- π_a·exp(eta·c·g_a) / Σ (softmax is
shift invariant). The kernel keeps π itself as its state: a step is then a few row sums and one
exponential per arm, a single pure function that ``torch.compile`` fuses into one pass over the
(R, K) state for large batches (its first call compiles for a few seconds; the benchmark
``benchmarks/bandit.py`` reports both).

Implementation choices, none visible in the results:
- 1 - J is summed over the incorrect arms directly, never computed as 1 - J (exact as J -> 1);
- the exponential is exp2 of a base-2 exponent: on torch 2.13's CPU kernels exp2 is about 2.5x
  faster than exp, and exp has a 10-30x slow path for arguments below about -88;
- each row's exponents are shifted by an upper bound of their maximum (eta·c·(1-J)·J/Z·log2 e,
  known from the row sums), so no factor exceeds 1 and nothing overflows.
Limit: probabilities below the floating-point range underflow to 0 (float32: about 1e-38), so
delta_mu and var± are exact while 1 - J stays above ~1e-150 (float64) or ~1e-19 (float32); the
returned theta is log π, equal to the generic loop's theta up to a constant per run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import cache

import torch

from rlvrlab.gap import alignment_gain
from rlvrlab.policies import EnumerablePolicy, TabularSoftmax
from rlvrlab.simulate.record import Trajectory

__all__ = ["applies", "run"]

LOG2E = 1.0 / math.log(2.0)
DIRECTIONS = ("gradient", "normalized-gradient", "gap")
FIELDS = ("J", "log_odds", "delta_mu", "w_norm", "var_plus", "var_minus")
CHUNK = 8  # steps per compiled call: amortizes the call overhead (~0.2 ms) over several steps
COMPILE_ABOVE = 2e8  # R·K·steps above which compiling pays for its few seconds


def applies(policy: EnumerablePolicy, reward: torch.Tensor, direction: Callable, step_size: Callable) -> bool:
    """True when the kernel computes exactly what the generic loop would."""
    if not isinstance(policy, TabularSoftmax) or reward.dim() != 2 or reward.shape[0] != 1:
        return False
    n_correct = int(reward.sum())
    return (
        0 < n_correct < policy.n_responses
        and getattr(direction, "__name__", None) in DIRECTIONS
        and getattr(step_size, "__name__", None) == "fixed"
    )


def _sums(p: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, ...]:
    pr = p * r
    pm = p - pr
    return pr, pm, pr.sum(1), pm.sum(1)


def _step(p: torch.Tensor, eta: torch.Tensor, r: torch.Tensor, normalized: bool, second_order: bool):
    """One exact step on the (unnormalized) probabilities p (R, K): the new p and this step's records (R,)."""
    pr, pm, A, B = _sums(p, r)
    Z = A + B
    J, Jm = A / Z, B / Z
    lo = torch.log(A) - torch.log(B)
    Z2 = Z * Z
    S2p, S2m = (pr * p).sum(1) / Z2, (pm * p).sum(1) / Z2
    g2 = Jm * Jm * S2p + J * J * S2m
    dm = Jm / J * S2p + J / Jm * S2m
    if normalized:
        c = torch.where(g2 > 0, torch.rsqrt(g2), torch.zeros_like(g2))
        w_norm = (g2 > 0).to(g2.dtype)
    else:
        c, w_norm = torch.ones_like(g2), torch.sqrt(g2)
    records = [J, lo, dm * c, w_norm]  # FIELDS order
    if second_order:
        Z3 = Z2 * Z
        S3p, S3m = (pr * p * p).sum(1) / Z3, (pm * p * p).sum(1) / Z3
        c2 = c * c
        records.append((c2 * (Jm * Jm / J * S3p - (Jm / J * S2p) ** 2)).clamp(min=0))
        records.append((c2 * (J * J / Jm * S3m - (J / Jm * S2m) ** 2)).clamp(min=0))
    # log2 of the factor exp(eta·c·g_a) with g_a = (p_a/Z)(r_a - J), shifted by its row maximum's
    # upper bound eta·c·A·Jm/Z (attained when one arm is correct), so every factor is <= 1.
    coef = (eta * c * LOG2E / Z).unsqueeze(1)
    shift = (coef.squeeze(1) * A * Jm).unsqueeze(1)
    exponent = coef * p * (r * Jm.unsqueeze(1) - (1 - r) * J.unsqueeze(1)) - shift
    return p * torch.exp2(exponent) * (1 / Z).unsqueeze(1), torch.stack(records)


def _chunk(p: torch.Tensor, eta: torch.Tensor, r: torch.Tensor, n: int, normalized: bool, second_order: bool):
    """n consecutive steps; records stacked to (n, F, R), F the fields of FIELDS (or its first 4)."""
    rows = []
    for _ in range(n):
        p, rec = _step(p, eta, r, normalized, second_order)
        rows.append(rec)
    return p, torch.stack(rows)


@cache
def _compiled_chunk() -> Callable:
    return torch.compile(_chunk, fullgraph=True, dynamic=False)


def run(
    policy: TabularSoftmax,
    reward: torch.Tensor,
    theta0: torch.Tensor,
    *,
    steps: int,
    direction: Callable,
    step_size: Callable,
    record_every: int = 1,
    on_step: Callable[[int], None] | None = None,
    second_order: bool = True,
    compile: bool | None = None,
) -> Trajectory:
    """Same records as ``simulate`` (batch level, C = 1); ``second_order=False`` skips var±.

    compile: fuse CHUNK steps per call with torch.compile; None compiles when R·K·steps is large.
    The returned theta equals the generic loop's up to a constant per run (softmax shift).
    """
    R, K = theta0.shape
    dtype = theta0.dtype
    r = reward[0].to(dtype)
    p = torch.softmax(theta0, dim=1)
    eta = torch.as_tensor(step_size.options["eta"], dtype=dtype).expand(R).clone()
    normalized = direction.__name__ != "gradient"
    if compile is None:
        compile = R * K * steps >= COMPILE_ABOVE
    chunk_fn: Callable = _chunk
    if compile:
        chunk_fn = _compiled_chunk()

    rows = list(range(0, steps, record_every))  # recorded steps before the final one
    due = set(rows)
    need_lo = due | {k + 1 for k in rows}  # realized change at k needs the log-odds at k + 1
    parts: list[torch.Tensor] = []  # (rows, F, R) blocks of the recorded steps
    M_parts: list[torch.Tensor] = []
    lo_at: dict[int, torch.Tensor] = {}
    M = torch.zeros(R, dtype=dtype)
    k = 0
    while k < steps:
        n = min(CHUNK, steps - k)
        try:
            p_next, block = (chunk_fn if n == CHUNK else _chunk)(p, eta, r, n, normalized, second_order)
        except Exception as err:  # no C++ toolchain for inductor: the same math, eagerly
            if chunk_fn is _chunk:
                raise
            warnings.warn(f"torch.compile unavailable ({type(err).__name__}); running the bandit kernel eagerly", stacklevel=2)
            chunk_fn = _chunk
            continue
        p = p_next
        gain = alignment_gain(block[:, 2], eta)
        M_before = M + gain.cumsum(0) - gain
        M = M + gain.sum(0)
        sel = [i for i in range(n) if k + i in due]
        if sel:
            index = torch.tensor(sel)
            parts.append(block.index_select(0, index))
            M_parts.append(M_before.index_select(0, index))
        for i in range(n):
            if k + i in need_lo:
                lo_at[k + i] = block[i, 1]
        k += n
        if on_step is not None:
            on_step(n)

    _, _, A, B = _sums(p, r)
    lo_at[steps] = torch.log(A) - torch.log(B)
    final = {"J": A / (A + B), "log_odds": lo_at[steps], "M": M}
    recorded = torch.cat(parts)
    metrics = {name: recorded[:, i] for i, name in enumerate(FIELDS[: recorded.shape[1]])}
    metrics["M"] = torch.cat(M_parts)
    for name, v in metrics.items():
        last = final.get(name, torch.full((R,), float("nan"), dtype=dtype))
        metrics[name] = torch.cat([v, last.unsqueeze(0)])
    metrics["eta"] = torch.cat([eta.expand(len(rows), R), torch.full((1, R), float("nan"), dtype=dtype)])
    change = torch.stack([lo_at[k + 1] - lo_at[k] for k in rows])
    metrics["log_odds_change"] = torch.cat([change, torch.full((1, R), float("nan"), dtype=dtype)])
    theta = torch.log(p / p.sum(1, keepdim=True))
    kernel = "tabular-compiled" if chunk_fn is not _chunk else "tabular"
    return Trajectory(torch.tensor([*rows, steps]), metrics, {}, theta, policy.constants(), {"kernel": kernel})
