"""App. E: a softmax over one correct and one incorrect response; Corollary 3.1's linear rate.

With π = softmax(θ+, θ-), the scores are (1-J, -(1-J)) and (-J, J), so the Gradient Gap is the
constant (1, -1) and the Gap Alignment of the normalized gap direction is the constant sqrt 2,
whatever J is. Corollary 3.1 then promises, for a fixed eta <= min{sqrt2/(2(L_o + 8G_o²)),
1/(2 sqrt L_o)} = sqrt2/33 (G_o = sqrt 2, L_o = 1/2),

    1 - J(K) <= (1 - J0)/J0 · exp(-sqrt2·eta·K / 2).

Here the log-odds θ+ - θ- move by exactly sqrt2·eta per step, so the realized rate is twice the
guaranteed one, and larger steps (outside the corollary's condition) converge just as well: the
condition is sufficient, not necessary, on an instance without a second-order penalty
(Var+ = Var- = 0).

Theorem 6 (App. G) on the same runs, with the exact ‖∇J(θ_k)‖ recorded at every step beside M:
(a) under its step condition (61) (the runs at Corollary 3.1's step satisfy it), reaching J from
J0 needs M(K) >= (2/3)(logit J - logit J0) (theory.theorem6_alignment_floor): M grows without
bound as J -> 1 (here M(K) is exactly the log-odds gain); (b) Σ_k ‖∇J_k‖² stays finite: the
printed bound 2L_o·Σ_k b(M(k)) holds at every horizon, and the tail after K is at most
L_o·(1-J0)/J0·e^{-M(K)/2}/(1 - e^{-sqrt2·eta/2}), from ‖∇J‖² <= L_o·J(1-J) <= L_o·b(M) and
M growing by sqrt2·eta a step. The printed constant 2L_o is not what the printed proof derives
(4G_o²·Σ b², from ‖∇J‖ <= 2G_o(1-J)), but it holds: ‖∇J‖² <= L_o·J(1-J) for every policy
(theory.gradient_norm_sq_bound), with equality here at J = 1/2, which the run at J0 = 1/2 shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlvrlab import plotting, theory
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.gap import alignment_gain
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.simulate import GradientTap, simulate, two_response
from rlvrlab.updates import make_step_size

__all__ = ["EXPERIMENT", "TwoResponseConfig", "plot", "run"]


@dataclass(frozen=True)
class TwoResponseConfig:
    J0s: tuple[float, ...] = setting((0.01, 0.2, 0.5), "initial success rates, one run each per step size")
    step_multiples: tuple[float, ...] = setting((1.0, 10.0), "step sizes as multiples of Corollary 3.1's largest step sqrt2/33")
    steps: int = setting(3_000, "steps")

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_floats("step_multiples", self.step_multiples)
        for J0 in self.J0s:
            if not 0 < J0 < 1:
                raise ValueError(f"J0s: got {J0}; allowed: numbers in (0, 1)")

    @classmethod
    def quick(cls) -> TwoResponseConfig:
        return cls(steps=600)


def _theorem6(traj, tap: GradientTap, L_o: float, G_o: float) -> dict[str, torch.Tensor]:
    """Per-step quantities of Theorem 6 (K + 1 rows: before each step, then the final state), and
    ‖∇J‖ with its partial sums added to the trajectory's metrics at the recorded rows."""
    per = tap.steps()
    gain = alignment_gain(per["delta_mu"], per["eta"])
    zero = torch.zeros_like(gain[:1])
    M = torch.cat([zero, gain.cumsum(0)])  # M(k), k = 0..K (eq. 12)
    g2 = per["grad_norm"] ** 2
    S = torch.cat([zero, g2.cumsum(0)])  # Σ_{i<k} ‖∇J_i‖²
    J0 = traj.metrics["J"][0]
    b = theory.theorem6_error_bound(J0.expand_as(M), M)
    printed = torch.cat([zero, theory.theorem6_gradient_term(J0, M[:-1], L_o).cumsum(0)])
    proof = torch.cat([zero, theory.theorem6_gradient_term_proof(J0, M[:-1], G_o).cumsum(0)])
    log_odds = torch.cat([per["log_J"] - per["log_1mJ"], traj.metrics["log_odds"][-1:]])
    rows = traj.step
    traj.metrics["grad_norm"] = torch.cat([per["grad_norm"][rows[:-1]], torch.full_like(zero, math.nan)])
    traj.metrics["grad_norm_sq_sum"] = S[rows]
    return {"M": M, "S": S, "b": b, "printed": printed, "proof": proof, "log_odds": log_odds, **per}


def run(config: TwoResponseConfig, progress: Progress, workdir: Path) -> Result:
    grid = [(J0, mult) for mult in config.step_multiples for J0 in config.J0s]
    J0 = torch.tensor([g[0] for g in grid], dtype=torch.float64)
    policy, reward, theta0 = two_response(J0)
    c = policy.constants()
    eta_star = theory.linear_rate_step(math.sqrt(2), c.L_o, c.G_o)
    eta = torch.tensor([g[1] * eta_star for g in grid], dtype=torch.float64)
    logit = theory.log_odds(J0)
    tap = GradientTap(make_step_size("fixed", eta=eta))
    traj = simulate(policy, reward, theta0, steps=config.steps, direction="gap", step_size=tap,
                    on_step=progress.task("two-response", config.steps), fast=False)
    t6 = _theorem6(traj, tap, c.L_o, c.G_o)
    m = traj.metrics
    k = traj.step.to(torch.float64).unsqueeze(1)
    dm = m["delta_mu"][:-1]
    gap_err = (dm - math.sqrt(2)).abs().max().item()
    lo_err = (m["log_odds"] - (logit + math.sqrt(2) * eta * k)).abs().max().item()
    inside = eta <= eta_star * (1 + 1e-12)
    bound = theory.linear_rate_error_bound(J0, math.sqrt(2), eta, k)
    err = 1 - m["J"]
    rate_ok = (err <= bound * (1 + 1e-9) + 1e-300)[:, inside]
    realized_rate = (m["log_odds"][-1] - m["log_odds"][0]) / (eta * config.steps)
    target = 0.99
    predicted = [math.ceil(theory.linear_rate_steps(j, math.sqrt(2), e, target)) for j, e in zip(J0.tolist(), eta.tolist())]
    reached = [int(traj.step[(m["J"][:, i] >= target).nonzero()[0]]) if bool((m["J"][:, i] >= target).any()) else -1
               for i in range(len(grid))]
    checks = [
        Check("Gap Alignment of the normalized gap direction is sqrt 2 (App. E)", gap_err < 1e-8,
              f"max |Delta_mu - sqrt2| = {gap_err:.1e}", "< 1e-8 (rounding of a gradient of size J(1-J))"),
        Check("Corollary 3.1: 1-J(K) <= (1-J0)/J0·exp(-Delta_mu·eta·K/2) for eta <= sqrt2/33", bool(rate_ok.all()),
              f"{int(rate_ok.sum())} of {rate_ok.numel()} (run, step) pairs inside the bound", "all"),
        Check("Log-odds move by exactly sqrt2·eta per step (twice the guaranteed rate)", lo_err < 1e-9,
              f"max |log-odds(K) - log-odds(0) - sqrt2·eta·K| = {lo_err:.1e}", "< 1e-9"),
        Check("Steps 10x beyond Corollary 3.1's condition still converge (condition sufficient, not necessary)",
              bool((m["J"][-1][~inside] > m["J"][0][~inside]).all()) if bool((~inside).any()) else True,
              f"J(K) = {[round(x, 6) for x in m['J'][-1][~inside].tolist()]}", "J(K) > J(0)", kind="claim"),
    ]
    checks += _theorem6_checks(t6, J0, eta, c.L_o, c.G_o)
    S_end, S_tail = t6["S"][-1], _tail_bound(t6, J0, eta, c.L_o)[-1]
    summary = {
        "theorem6": [{"J0": j, "eta": e, "premise_61": bool(p), "M_final": mf, "log_odds_gain": lg,
                      "sum_grad_norm_sq": s_, "sum_grad_norm_sq_limit_upper": (s_ + t_) if p else None}
                     for j, e, p, mf, lg, s_, t_ in zip(J0.tolist(), eta.tolist(), _premise61(t6, c.L_o, c.G_o).tolist(),
                                                        t6["M"][-1].tolist(), (t6["log_odds"][-1] - t6["log_odds"][0]).tolist(),
                                                        S_end.tolist(), S_tail.tolist())],
        "eta_corollary_3_1": eta_star,
        "G_o": c.G_o,
        "L_o": c.L_o,
        "runs": [{"J0": j, "eta": e, "steps_to_J_0.99": s, "corollary_bound_steps": p, "realized_rate_over_eta": rr}
                 for j, e, s, p, rr in zip(J0.tolist(), eta.tolist(), reached, predicted, realized_rate.tolist())],
    }
    table = trajectory_table(traj, {"J0": J0, "eta": eta, "eta_multiple": [g[1] for g in grid]})
    return Result({"metrics": table}, summary, checks)


def _premise61(t6: dict[str, torch.Tensor], L_o: float, G_o: float) -> torch.Tensor:
    """(R,) whether every step satisfied Theorem 6's condition (61):
    eta_k <= [Delta_mu(k)]_+ / (2(L_o + 8G_o²)) and eta_k <= 1/(2 sqrt L_o)."""
    eta, dm = t6["eta"], t6["delta_mu"]
    ok = (eta <= theory.step_condition_trajectory(dm, L_o, G_o) * (1 + 1e-12)) & (eta <= theory.smoothness_step_cap(L_o) * (1 + 1e-12))
    return ok.all(0)


def _tail_bound(t6: dict[str, torch.Tensor], J0: torch.Tensor, eta: torch.Tensor, L_o: float) -> torch.Tensor:
    """(K + 1, R) bound on Σ_{k>=K} ‖∇J_k‖² under (61) with the uniform gap sqrt 2 and a fixed eta:
    ‖∇J_k‖² <= L_o(1 - J_k) <= L_o(1 - J0)/J0·e^{-M(k)/2} and M(k) = M(K) + (k - K)·sqrt2·eta."""
    ratio = torch.exp(-math.sqrt(2) * eta / 2)
    return L_o * (1 - J0) / J0 * torch.exp(-t6["M"] / 2) / (1 - ratio)


def _theorem6_checks(t6: dict[str, torch.Tensor], J0: torch.Tensor, eta: torch.Tensor, L_o: float, G_o: float) -> list[Check]:
    """Theorem 6 (a), (b) and its constant, Remark 1's premise side, on the runs inside (61)."""
    log_J, log_1mJ = t6["log_J"], t6["log_1mJ"]
    var = torch.exp(log_J + log_1mJ)  # J(1-J), exact where 1 - J is tiny
    seen = var > 1e-150  # below, ‖∇J‖² (the norm's squares) is subnormal and loses its digits
    rel9 = ((t6["grad_norm"] - var * t6["delta_mu"]).abs() / (var * t6["delta_mu"]))[seen].max().item()
    fisher = (t6["grad_norm"] ** 2 / (L_o * var))[seen]
    inside = _premise61(t6, L_o, G_o)
    n_in = int(inside.sum())
    lo_gain = (t6["log_odds"] - t6["log_odds"][0])[:, inside]
    M = t6["M"][:, inside]
    floor_ok = bool((M >= 2 * lo_gain / 3 - 1e-9).all())
    S, printed, proof = t6["S"][1:, inside], t6["printed"][1:, inside], t6["proof"][1:, inside]
    printed_ok = bool((S < printed).all())
    tail = _tail_bound(t6, J0, eta, L_o)[:, inside]
    K = S.shape[0]
    quarters = [K // 4, K // 2, 3 * K // 4]
    tail_ok = all(bool((t6["S"][-1, inside] - t6["S"][q, inside] <= tail[q] * (1 + 1e-9) + 1e-300).all()) for q in quarters)
    premise = f"{n_in} of {inside.numel()} runs inside (61)"
    return [
        Check("eq. (9) along the gap direction: ‖∇J‖ = J(1-J)·Delta_mu (= sqrt2·J(1-J)) at every step", rel9 < 1e-9,
              f"max relative error {rel9:.1e}", "< 1e-9"),
        Check("‖∇J‖² <= L_o·J(1-J) at every step (Cauchy-Schwarz, Fisher information <= L_o): why Theorem 6(b)'s printed 2L_o holds",
              bool((fisher <= 1 + 1e-9).all()),
              f"max ‖∇J‖²/(L_o·J(1-J)) = {fisher.max().item():.6f} (1 exactly at J = 1/2)", "<= 1"),
        Check("Theorem 6(a) (App. G): under (61), M(K) >= (2/3)(log-odds(K) - log-odds(0)), so M -> inf as J -> 1",
              n_in > 0 and floor_ok,
              f"{premise}; M(K) = {[round(x, 2) for x in M[-1].tolist()]}, log-odds gain {[round(x, 2) for x in lo_gain[-1].tolist()]}",
              "M(K) >= (2/3)·gain at every K, on at least one run"),
        Check("Theorem 6(b) as printed (App. G): Σ_k ‖∇J_k‖² < 2L_o·Σ_k (1-J0)/(1-J0+J0·e^{M(k)/2}) under (61)",
              n_in > 0 and printed_ok,
              f"{premise}; at K: Σ‖∇J‖² = {[f'{x:.4g}' for x in S[-1].tolist()]} vs printed {[f'{x:.4g}' for x in printed[-1].tolist()]}"
              f" (the proof's 4G_o²·Σb² = {[f'{x:.4g}' for x in proof[-1].tolist()]})",
              "< at every horizon K, on at least one run"),
        Check("Theorem 6(b): Σ‖∇J‖² converges: its tail after K is below L_o(1-J0)/J0·e^{-M(K)/2}/(1-e^{-sqrt2·eta/2})",
              n_in > 0 and tail_ok,
              f"{premise}; Σ‖∇J‖² in [{', '.join(f'[{a:.6g}, {a + t:.6g}]' for a, t in zip(t6['S'][-1, inside].tolist(), tail[-1].tolist()))}]",
              "Σ_{K<=k<end} ‖∇J_k‖² <= bound(K) at K = end/4, end/2, 3end/4"),
    ]


def plot(out: Path) -> list[str]:
    cols = columns(read_table(out / "metrics.parquet"), ("run", "step", "J0", "eta", "eta_multiple", "J", "log_odds", "M",
                                                          "grad_norm_sq_sum"))
    fig, (a1, a2, a3) = plotting.panels(3, width=5)
    for r in np.unique(cols["run"]):
        sel = cols["run"] == r
        k, J, J0, eta, mult = cols["step"][sel], cols["J"][sel], cols["J0"][sel][0], cols["eta"][sel][0], cols["eta_multiple"][sel][0]
        line = a1.semilogy(k, np.maximum(1 - J, 1e-300), label=f"J₀={J0:g}, η={mult:g}·η*")[0]
        if mult <= 1:
            bound = theory.linear_rate_error_bound(J0, math.sqrt(2), eta, k).numpy()
            a1.semilogy(k, bound, ls="--", color=line.get_color(), lw=0.8)
        a2.plot(k, cols["log_odds"][sel] - cols["log_odds"][sel][0], color=line.get_color())
        after = k >= 1  # both sums are 0 at K = 0
        a3.loglog(k[after], cols["M"][sel][after], color=line.get_color())
        a3.loglog(k[after], cols["grad_norm_sq_sum"][sel][after], color=line.get_color(), ls="--")
    a1.set_ylim(bottom=1e-12)
    a1.set_xlabel("step K")
    a1.set_ylabel("1 - J(K)  (dashed: Corollary 3.1 bound)")
    a1.legend(fontsize=7)
    a2.set_xlabel("step K")
    a2.set_ylabel("log-odds(K) - log-odds(0)  (slope √2·η)")
    a3.set_xlabel("step K")
    a3.set_ylabel("M(K) (solid) and Σ_{k<K} ‖∇J_k‖² (dashed)")
    fig.suptitle("Two responses (App. E): constant Gap Alignment √2 and Corollary 3.1's linear rate")
    return [plotting.save(fig, out / "two_response.png")]


EXPERIMENT = Experiment(
    name="two-response",
    title="App. E: constant Gap Alignment and Corollary 3.1's linear rate",
    description=__doc__.split("\n\n")[1],
    config=TwoResponseConfig,
    run=run,
    plot=plot,
)
