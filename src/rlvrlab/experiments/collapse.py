"""Theorems 2 and 4: collapse from an overly large step despite a positive Gap Alignment (App. F).

The instances of App. F.1 (trajectory level) and App. F.2 (token level), built exactly as in the
proofs: three responses (tokens) o1, o-1, o-2 with features (G/2)·(0,1), (G/2)·(1,0),
(G/2)·(-1,0); only o1 (the all-o1 sequence of length T_inf at the token level) is correct;

    theta_0 = (eta/3)(-1, 0),   w_k = (1/3)((-1)^k·2, -delta),   fixed step eta,
    delta = eta·G/15 (F.1) or eta·G/10 (F.2).

The first coordinate oscillates, the second drifts so that the correct logit falls: J decreases at
every step, to 0, although the Gap Alignment never drops below eta·G²/30 (F.1) or
T·eta·G²/60 (F.2). The proofs give J(k) in closed form; the simulation must match it.

On the same instances, the Gradient Gap direction with a step inside (13a) (F.1) or (15a) (F.2)
converges, above the logistic lower bound (13b)/(15b).

Remark 1 (App. G) on the collapse runs, with the exact ‖∇J(θ_k)‖ recorded at every step beside M:
M(K) grows without bound (at least K·eta·(the proof's alignment bound)) while J -> 0, and
Σ_k ‖∇J_k‖² stays finite, its tail after K at most 4G_o²·c^{-2T}·r^K/(1 - r) with
c = 2cosh(eta·G/6), r = exp(-2δ·eta·G·T/6), from ‖∇J‖ = J(1-J)‖g+ - g-‖ <= 2G_o·J (eq. 9) and
the proof's closed form J(k) <= (c·e^{δ·eta·G·k/6})^{-T}: gradient norms vanish as they would at
a success. On the converging arm, where every step also satisfies Theorem 6's condition (61),
Theorem 6(a) (M(K) >= (2/3)·log-odds gain) and 6(b)'s printed bound are checked; and
‖∇J‖² <= L_o·J(1-J) (theory.gradient_norm_sq_bound, why 6(b)'s constant 2L_o holds) at every step
of every run.

Lipschitz constants: the paper states L_o = 0 for F.1; the score φ - E_π[φ] depends on theta, and
we use the valid L = G²/4 (see rlvrlab.policies.softmax). The windows of (52)/(16) are evaluated
with it; every eta used is inside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rlvrlab import plotting, theory
from rlvrlab.experiments.base import Check, Experiment, Progress, Result, check_positive_floats, check_positive_int, setting
from rlvrlab.gap import alignment_gain
from rlvrlab.io import columns, read_table, trajectory_table
from rlvrlab.simulate import GradientTap, collapse_direction, collapse_instance, collapse_theta0, simulate
from rlvrlab.updates import make_step_size

__all__ = ["CollapseConfig", "EXPERIMENT", "plot", "run"]


@dataclass(frozen=True)
class CollapseConfig:
    G: float = setting(1.0, "score bound G_o (F.1) and G_p (F.2)")
    eta_fractions: tuple[float, ...] = setting((0.25, 0.5, 1.0), "collapse steps as fractions of the window's upper end 1/(2 sqrt(L + G²)) (F.1)")
    T_infs: tuple[int, ...] = setting((1, 2, 4, 8), "response lengths T_inf of the token-level instance (F.2)")
    steps: int = setting(10_000, "steps of every run")
    record_every: int = setting(20, "keep every n-th step")

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("record_every", self.record_every)
        check_positive_floats("G", (self.G,))
        check_positive_floats("eta_fractions", self.eta_fractions)
        if any(f > 1 for f in self.eta_fractions):
            raise ValueError(f"eta_fractions: got {self.eta_fractions}; allowed: fractions in (0, 1] (the theorem's window)")
        for T in self.T_infs:
            if not (isinstance(T, int) and 1 <= T <= 12):
                raise ValueError(f"T_infs: got {T}; allowed: integers in [1, 12] (3^T responses are enumerated)")

    @classmethod
    def quick(cls) -> CollapseConfig:
        return cls(steps=2_000, T_infs=(1, 2, 4), record_every=10)


def _theorem6(traj, tap: GradientTap) -> dict[str, torch.Tensor]:
    """Per-step quantities (M and the partial sums S = Σ_{i<k} ‖∇J_i‖² have K + 1 rows: before each
    step, then the final state); ‖∇J‖ and S are added to the trajectory's metrics at the recorded rows."""
    per = tap.steps()
    zero = torch.zeros_like(per["eta"][:1])
    M = torch.cat([zero, alignment_gain(per["delta_mu"], per["eta"]).cumsum(0)])  # eq. (12)
    S = torch.cat([zero, (per["grad_norm"] ** 2).cumsum(0)])
    rows = traj.step
    traj.metrics["grad_norm"] = torch.cat([per["grad_norm"][rows[:-1]], torch.full_like(zero, math.nan)])
    traj.metrics["grad_norm_sq_sum"] = S[rows]
    log_odds = torch.cat([per["log_J"] - per["log_1mJ"], traj.metrics["log_odds"][-1:]])
    return {"M": M, "S": S, "log_odds": log_odds, "J": per["log_J"].exp(), "J1mJ": (per["log_J"] + per["log_1mJ"]).exp(), **per}


def _fisher_ratio(t6: dict[str, torch.Tensor], L_o: float) -> torch.Tensor:
    """‖∇J_k‖² / (L_o·J_k(1 - J_k)) where both are well above the floating-point floor."""
    seen = t6["J1mJ"] > 1e-150
    return (t6["grad_norm"] ** 2 / (L_o * t6["J1mJ"]))[seen]


def run(config: CollapseConfig, progress: Progress, workdir: Path) -> Result:
    G = config.G
    tables, checks, summary = [], [], {"instances": []}
    fisher: list[torch.Tensor] = []
    settings = [None, *config.T_infs]
    advance = progress.task("collapse: App. F instances", 2 * len(settings) * config.steps)
    for T in settings:
        policy, reward = collapse_instance(G, T)
        name = "F.1" if T is None else "F.2"
        c = policy.constants()
        Tn = 1 if T is None else T
        # Window of Thm 2 (52) / Thm 4 (16), with the instance's own L.
        s = c.L_o + c.G_o**2 if T is None else c.L_p * math.sqrt(Tn) + c.G_p**2 * Tn
        eta_max = 1 / (2 * math.sqrt(s))
        eta = torch.tensor([f * eta_max for f in config.eta_fractions], dtype=torch.float64)
        delta = theory.collapse_delta(eta, G, T)
        dm_q = eta * s / (60 if T is None else 120)  # the largest Delta_mu_q whose window contains eta
        window = [(theory.collapse_window_trajectory(float(q), c.L_o, c.G_o) if T is None
                   else theory.collapse_window_token(float(q), c.L_p, c.G_p, Tn)) for q in dm_q]
        in_window = all(w.valid and w.low <= float(e) * (1 + 1e-12) and float(e) <= w.high * (1 + 1e-12) for w, e in zip(window, eta))
        theta0 = collapse_theta0(eta)
        tap = GradientTap(make_step_size("fixed", eta=eta))
        traj = simulate(policy, reward, theta0, steps=config.steps, direction=collapse_direction(delta), step_size=tap,
                        record_every=config.record_every, on_step=advance)
        t6 = _theorem6(traj, tap)
        fisher.append(_fisher_ratio(t6, c.L_o))
        m = traj.metrics
        J = m["J"]
        closed = theory.collapse_J(eta, delta, G, traj.step.to(torch.float64).unsqueeze(1), T)  # (S, R)
        closed_err = ((J - closed).abs() / closed).max().item()
        proof_bound = theory.collapse_alignment_bound(eta, G, T)
        dm = m["delta_mu"][:-1]
        label = name if T is None else f"{name} (T_inf={T})"
        # J decreases at every recorded row, and the closed form (matched above) decreases at every
        # step to the limit 0: its exponent delta·eta·G/6 is positive.
        decreasing = bool((J[1:] < J[:-1]).all())
        checks += [
            Check(f"{label}: eta inside the collapse window ({'52' if T is None else '16'}) with Delta_mu_q = eta(L+G²)/{60 if T is None else 120}",
                  in_window, f"eta = {[round(float(e), 5) for e in eta]}, window upper end {eta_max:.5f}", "every eta in its window"),
            Check(f"{label}: J(k) equals the proof's closed form", closed_err < 1e-10,
                  f"max relative error {closed_err:.1e}", "< 1e-10"),
            Check(f"{label}: J strictly decreasing, towards 0", decreasing and bool((delta * eta > 0).all()),
                  f"J(0) = {J[0, 0].item():.3g}, J(K) = {[f'{x:.2e}' for x in J[-1].tolist()]}",
                  "J(k) < J(k-1) at every recorded step; closed-form limit 0"),
            Check(f"{label}: Gap Alignment stays above the proof's bound {'eta G²/30' if T is None else 'T eta G²/60'} (>= Delta_mu_q)",
                  bool((dm >= proof_bound * (1 - 1e-12)).all() and (proof_bound >= dm_q).all()),
                  f"min Delta_mu / bound = {(dm / proof_bound).min().item():.3f}", ">= 1"),
        ]
        checks += _remark1_checks(label, t6, eta, delta, G, Tn, c.G_o, proof_bound, config.steps)
        tables.append(trajectory_table(traj, {"instance": [name] * len(eta), "T_inf": [Tn] * len(eta), "arm": ["collapse"] * len(eta),
                                              "eta_fraction": list(config.eta_fractions), "delta_mu_bound": proof_bound}))

        # The converging arm: w along the Gradient Gap, eta_k inside (13a) / (15a).
        rule = make_step_size("condition-13a") if T is None else make_step_size("condition-15a", T_psi1="uniform")
        tap = GradientTap(rule)
        conv = simulate(policy, reward, theta0, steps=config.steps, direction="gap", step_size=tap,
                        record_every=config.record_every, on_step=advance)
        t6c = _theorem6(conv, tap)
        fisher.append(_fisher_ratio(t6c, c.L_o))
        inside61 = _premise61(t6c, c.L_o, c.G_o)
        if bool(inside61.any()):
            checks += _theorem6_checks(label, t6c, inside61, c.L_o, c.G_o, conv.metrics["J"][0])
        mc = conv.metrics
        bound = theory.logistic_lower_bound(mc["J"][0], mc["M"])
        above = mc["J"] >= bound * (1 - 1e-12)
        checks.append(Check(f"{label}: gap direction with eta inside {'(13a)' if T is None else '(15a)'} stays above {'(13b)' if T is None else '(15b)'}",
                            bool(above.all()) and bool((mc["J"][-1] > mc["J"][0]).all()),
                            f"J(K) = {[round(x, 4) for x in mc['J'][-1].tolist()]} >= bound {[round(x, 4) for x in bound[-1].tolist()]}",
                            "J(k) >= logistic bound at every step, J increasing"))
        tables.append(trajectory_table(conv, {"instance": [name] * len(eta), "T_inf": [Tn] * len(eta), "arm": ["converge"] * len(eta),
                                              "eta_fraction": [math.nan] * len(eta), "delta_mu_bound": [math.nan] * len(eta)}))
        summary["instances"].append({
            "instance": label, "G": G, "L": c.L_o if T is None else c.L_p, "eta": eta.tolist(),
            "collapse_J_final": J[-1].tolist(), "converge_J_final": mc["J"][-1].tolist(),
            "min_delta_mu_collapse": dm.min(0).values.tolist(),
            "collapse_M_final": t6["M"][-1].tolist(), "collapse_sum_grad_norm_sq": t6["S"][-1].tolist(),
            "collapse_sum_grad_norm_sq_limit_upper": (t6["S"][-1] + _collapse_tail(eta, delta, G, Tn, c.G_o, config.steps)).tolist(),
            "converge_M_final": t6c["M"][-1].tolist(), "converge_sum_grad_norm_sq": t6c["S"][-1].tolist(),
            "converge_inside_61": inside61.tolist(),
        })
    ratio = torch.cat(fisher)
    checks.append(Check("‖∇J‖² <= L_o·J(1-J) at every step of every run (Cauchy-Schwarz, Fisher information <= L_o): "
                        "why Theorem 6(b)'s printed 2L_o holds", bool((ratio <= 1 + 1e-9).all()),
                        f"max ‖∇J‖²/(L_o·J(1-J)) = {ratio.max().item():.4f} over {ratio.numel()} steps", "<= 1"))
    return Result({"metrics": pa.concat_tables(tables, promote_options="permissive")}, summary, checks)


def _collapse_tail(eta: torch.Tensor, delta: torch.Tensor, G: float, T: int, G_o: float, K: int | torch.Tensor) -> torch.Tensor:
    """Bound on Σ_{k>=K} ‖∇J_k‖² on App. F's collapse run: ‖∇J_k‖² <= 4G_o²·J_k² (eq. 9, ‖g±‖ <= G_o)
    and J_k <= (c·e^{δ·eta·G·k/6})^{-T} with c = 2cosh(eta·G/6) (theory.collapse_J), a geometric series."""
    a = eta * G / 6
    c = 2 * torch.cosh(a)
    r = torch.exp(-2 * delta * a * T)
    return 4 * G_o**2 * c ** (-2 * T) * r**K / (1 - r)


def _remark1_checks(label: str, t6: dict[str, torch.Tensor], eta: torch.Tensor, delta: torch.Tensor, G: float, T: int,
                    G_o: float, proof_bound: torch.Tensor, steps: int) -> list[Check]:
    """Remark 1 (App. G) on a collapse run: M -> inf while J -> 0, and Σ‖∇J‖² finite."""
    K = torch.arange(steps + 1, dtype=eta.dtype).unsqueeze(1)
    M, S = t6["M"], t6["S"]
    M_ok = bool((M >= K * eta * proof_bound * (1 - 1e-12)).all())
    grad_ok = bool((t6["grad_norm"] <= 2 * G_o * t6["J"] * (1 + 1e-9)).all())
    quarters = [steps // 4, steps // 2, 3 * steps // 4]
    tail_ok = all(bool((S[-1] - S[q] <= _collapse_tail(eta, delta, G, T, G_o, q) * (1 + 1e-9)).all()) for q in quarters)
    limit = S[-1] + _collapse_tail(eta, delta, G, T, G_o, steps)
    return [
        Check(f"{label}: Remark 1 (App. G): M(K) -> inf, at least K·eta·(the proof's alignment bound), while J -> 0",
              M_ok and bool((t6["J"][-1] < t6["J"][0]).all()),
              f"M(K) = {[round(x, 3) for x in M[-1].tolist()]} at K = {steps}, J(K) = {[f'{x:.2e}' for x in t6['J'][-1].tolist()]}",
              "M(k) >= k·eta·bound at every step"),
        Check(f"{label}: Remark 1 (App. G): Σ‖∇J‖² converges while J -> 0: its tail after K is below 4G_o²c^(-2T)r^K/(1-r)",
              grad_ok and tail_ok,
              f"Σ‖∇J‖² in {[f'[{a:.4g}, {b:.4g}]' for a, b in zip(S[-1].tolist(), limit.tolist())]}",
              "‖∇J_k‖ <= 2G_o·J_k at every step; Σ_{K<=k<end} ‖∇J_k‖² <= bound(K) at K = end/4, end/2, 3end/4"),
    ]


def _premise61(t6: dict[str, torch.Tensor], L_o: float, G_o: float) -> torch.Tensor:
    """(R,) whether every step satisfied Theorem 6's condition (61):
    eta_k <= [Delta_mu(k)]_+ / (2(L_o + 8G_o²)) and eta_k <= 1/(2 sqrt L_o)."""
    eta, dm = t6["eta"], t6["delta_mu"]
    ok = (eta <= theory.step_condition_trajectory(dm, L_o, G_o) * (1 + 1e-12)) & (eta <= theory.smoothness_step_cap(L_o) * (1 + 1e-12))
    return ok.all(0)


def _theorem6_checks(label: str, t6: dict[str, torch.Tensor], inside: torch.Tensor, L_o: float, G_o: float,
                     J0: torch.Tensor) -> list[Check]:
    """Theorem 6(a) and 6(b) as printed on the converging runs whose every step satisfied (61)."""
    lo_gain = (t6["log_odds"] - t6["log_odds"][0])[:, inside]
    M = t6["M"][:, inside]
    floor_ok = bool((M >= 2 * lo_gain / 3 - 1e-9).all())
    J0 = J0[inside]
    S = t6["S"][1:, inside]
    printed = theory.theorem6_gradient_term(J0, M[:-1], L_o).cumsum(0)
    proof = theory.theorem6_gradient_term_proof(J0, M[:-1], G_o).cumsum(0)
    premise = f"{int(inside.sum())} of {inside.numel()} runs inside (61)"
    return [
        Check(f"{label}: Theorem 6(a) (App. G), gap direction inside (61): M(K) >= (2/3)(log-odds(K) - log-odds(0))", floor_ok,
              f"{premise}; M(K) = {[round(x, 3) for x in M[-1].tolist()]}, (2/3)·gain = {[round(2 * x / 3, 3) for x in lo_gain[-1].tolist()]}",
              "at every K"),
        Check(f"{label}: Theorem 6(b) as printed (App. G), gap direction inside (61): Σ‖∇J‖² < 2L_o·Σ_k b(M(k))",
              bool((S < printed).all()),
              f"{premise}; at K: Σ‖∇J‖² = {[f'{x:.4g}' for x in S[-1].tolist()]} vs printed {[f'{x:.4g}' for x in printed[-1].tolist()]}"
              f" (the proof's 4G_o²·Σb² = {[f'{x:.4g}' for x in proof[-1].tolist()]})", "< at every horizon K"),
    ]


def plot(out: Path) -> list[str]:
    t = read_table(out / "metrics.parquet")
    cols = columns(t, ("run", "step", "T_inf", "J", "delta_mu", "delta_mu_bound", "M", "eta_fraction", "grad_norm_sq_sum"))
    inst = np.asarray(t.column("instance").to_pylist())
    arm = np.asarray(t.column("arm").to_pylist())
    fig, (a1, a2, a3, a4) = plotting.panels(4)
    groups = sorted({(i, int(T)) for i, T in zip(inst, cols["T_inf"])})
    cmap = plotting.plt.get_cmap("viridis")
    for gi, (name, T) in enumerate(groups):
        color = cmap(gi / max(len(groups) - 1, 1))
        label = "F.1" if name == "F.1" else f"F.2, T∞={T}"
        base = (inst == name) & (cols["T_inf"] == T)
        col_sel = base & (arm == "collapse")
        top = np.nanmax(cols["eta_fraction"][col_sel])
        sel = col_sel & (cols["eta_fraction"] == top)
        a1.semilogy(cols["step"][sel], cols["J"][sel], color=color, label=label)
        a4.plot(cols["step"][sel], cols["M"][sel], color=color, label=label)
        a4.plot(cols["step"][sel], cols["grad_norm_sq_sum"][sel], color=color, ls="--")
        ok = sel & np.isfinite(cols["delta_mu"])
        a2.plot(cols["step"][ok], cols["delta_mu"][ok] / cols["delta_mu_bound"][ok], color=color, label=label)
        conv = base & (arm == "converge") & (cols["run"] == cols["run"][sel][0])
        a3.plot(cols["M"][conv], cols["J"][conv], color=color, label=label)
        J0 = cols["J"][conv][0]
        Ms = cols["M"][conv]
        a3.plot(Ms, theory.logistic_lower_bound(J0, Ms).numpy(), color=color, ls="--", lw=0.8)
    a1.set_xlabel("step k")
    a1.set_ylabel("J(k), collapse step at the window's top")
    a2.set_xlabel("step k")
    a2.set_ylabel("Δμ(k) / proof's lower bound")
    a2.axhline(1, color="k", lw=0.8)
    a3.set_xlabel("cumulative alignment M(k)")
    a3.set_ylabel("J(k), gap direction inside (13a)/(15a)")
    a4.set_xlabel("step k")
    a4.set_ylabel("collapse: M(k) solid, Σ_{i<k} ‖∇J_i‖² dashed")
    for ax in (a1, a2, a3, a4):
        ax.legend(fontsize=7)
    fig.suptitle("Theorems 2 and 4: positive alignment, collapse from a large step; convergence inside the condition (dashed: bound)")
    return [plotting.save(fig, out / "collapse.png")]


EXPERIMENT = Experiment(
    name="collapse",
    title="Theorems 2 and 4: collapse with positive Gap Alignment (App. F)",
    description=__doc__.split("\n\n")[1],
    config=CollapseConfig,
    run=run,
    plot=plot,
)
