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
exponential per arm, a single pure function (``_step``), with M (eq. 12) accumulated in it.

A step of 1024 runs × 100 arms is ~35 µs of arithmetic, so calling a compiled step from Python
(~0.1-0.2 ms a call) would cost more than the step. For large batches the steps therefore run as
one loop inside compiled code: torch's ``scan`` over the steps, its body the step, compiled by
``torch.compile`` once for any number of steps, with a C++ wrapper (``cpp_wrapper``) so that the
loop itself is not Python. Each call runs as many steps as keep its records (steps × F × R) under
BLOCK_ELEMENTS. ``scan`` is a prototype in torch 2.13: tests hold the compiled loop against the
eager steps, block boundaries included. The first call compiles for a few seconds (later
processes reuse inductor's on-disk cache); ``benchmarks/bandit.py`` reports both. Where
compiling fails (no C++ toolchain), the same steps run eagerly.

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
FIELDS = ("J", "log_odds", "M", "delta_mu", "w_norm", "var_plus", "var_minus")
ORDER = ("J", "log_odds", "delta_mu", "w_norm", "var_plus", "var_minus", "M", "eta", "log_odds_change")  # the Trajectory's metrics
BLOCK_ELEMENTS = 2**22  # records (steps · F · R) one call returns at most: bounds its memory
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


def _step(p: torch.Tensor, M: torch.Tensor, eta: torch.Tensor, r: torch.Tensor, normalized: bool, second_order: bool):
    """One exact step on the (unnormalized) probabilities p (R, K) with M (R,) accumulated so far:
    the new p and M, and this step's records (F, R) in FIELDS order (var± only with second_order)."""
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
    records = [J, lo, M, dm * c, w_norm]  # FIELDS order
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
    p_next = p * torch.exp2(exponent) * (1 / Z).unsqueeze(1)
    return p_next, M + alignment_gain(dm * c, eta), torch.stack(records)


def _steps_eager(p: torch.Tensor, M: torch.Tensor, eta: torch.Tensor, r: torch.Tensor, n: int, normalized: bool,
                 second_order: bool):
    """n consecutive steps, one call per step: the new p and M, and the records stacked to (n, F, R)."""
    rows = []
    for _ in range(n):
        p, M, rec = _step(p, M, eta, r, normalized, second_order)
        rows.append(rec)
    return p, M, torch.stack(rows)


def _steps_scan(p: torch.Tensor, M: torch.Tensor, eta: torch.Tensor, r: torch.Tensor, clock: torch.Tensor,
                normalized: bool, second_order: bool):
    """len(clock) consecutive steps as one loop (torch's scan; clock (n, 0) holds only the number of steps).
    Compiled, the loop runs inside the compiled code and its body, one step, is compiled once."""
    from torch._higher_order_ops.scan import scan

    def body(state: tuple[torch.Tensor, torch.Tensor], _: torch.Tensor):
        p, M, rec = _step(*state, eta, r, normalized, second_order)
        return (p, M), rec

    (p, M), records = scan(body, (p, M), clock)
    return p, M, records


@cache
def _compiled_scan() -> Callable:
    # cpp_wrapper: the loop itself in C++, not a Python loop calling the step's kernel (~20 µs a step)
    return torch.compile(_steps_scan, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})


def _steps_compiled(p: torch.Tensor, M: torch.Tensor, eta: torch.Tensor, r: torch.Tensor, n: int, normalized: bool,
                    second_order: bool):
    """As _steps_eager, in one compiled call."""
    if n < 2:  # a loop of length 1 would be specialized: a second compilation for a single step
        return _steps_eager(p, M, eta, r, n, normalized, second_order)
    clock = torch.empty(n, 0)
    torch._dynamo.mark_dynamic(clock, 0)  # one compiled loop for every number of steps
    return _compiled_scan()(p, M, eta, r, clock, normalized, second_order)


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

    compile: run the steps as one compiled loop (torch.compile); None compiles when R·K·steps is large.
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
    steps_fn: Callable = _steps_compiled if compile else _steps_eager
    F = len(FIELDS) if second_order else 5
    block = max(1, min(steps, BLOCK_ELEMENTS // (F * R)))  # steps per call: their records fit in memory

    # Recorded steps k (and k + 1, whose log-odds give the realized change at k), kept block by block.
    recorded: list[torch.Tensor] = []  # (rows, F, R)
    lo_next: list[torch.Tensor] = []  # (rows, R) log-odds at k + 1
    M = torch.zeros(R, dtype=dtype)
    k = 0
    while k < steps:
        n = min(block, steps - k)
        try:
            p_next, M_next, out = steps_fn(p, M, eta, r, n, normalized, second_order)  # out (n, F, R)
        except Exception as err:  # no C++ toolchain for inductor: the same math, eagerly
            if steps_fn is _steps_eager:
                raise
            warnings.warn(f"torch.compile unavailable ({type(err).__name__}); running the bandit kernel eagerly", stacklevel=2)
            steps_fn = _steps_eager
            continue
        p, M = p_next, M_next
        index = torch.arange(k, k + n)
        due = (index % record_every == 0).nonzero().squeeze(1)  # block rows of the recorded steps
        after = ((index - 1) % record_every == 0) & (index > 0)  # rows of the steps just after one
        recorded.append(out.index_select(0, due))
        lo_next.append(out[:, 1].index_select(0, after.nonzero().squeeze(1)))
        k += n
        if on_step is not None:
            on_step(n)

    _, _, A, B = _sums(p, r)
    lo_final = torch.log(A) - torch.log(B)
    if (steps - 1) % record_every == 0:  # the last step was recorded: its change ends at the final state
        lo_next.append(lo_final.unsqueeze(0))
    final = {"J": A / (A + B), "log_odds": lo_final, "M": M}  # the state after the last step
    rows = list(range(0, steps, record_every))
    values = dict(zip(FIELDS, torch.cat(recorded).unbind(1)))
    values["eta"] = eta.expand(len(rows), R)
    values["log_odds_change"] = torch.cat(lo_next) - values["log_odds"]
    nan_row = torch.full((1, R), float("nan"), dtype=dtype)
    metrics = {name: torch.cat([values[name], final[name].unsqueeze(0) if name in final else nan_row])
               for name in ORDER if name in values}
    theta = torch.log(p / p.sum(1, keepdim=True))
    kernel = "tabular-compiled" if steps_fn is _steps_compiled else "tabular"
    return Trajectory(torch.tensor([*rows, steps]), metrics, {}, theta, policy.constants(), {"kernel": kernel})
