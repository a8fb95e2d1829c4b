"""The claims ledger: every claim of the three papers that rlvrlab tests, and those it does not.

The static part is data (CLAIMS below): the claim in one sentence, where the paper makes it, and
which checks of which experiment carry it, named by their names in ``summary.json`` with ``{}``
where a name takes a value from the settings (a task, a step count, the largest k). The verdict
and the measured figure are derived from a run's summaries at report time (``ledger``), so the
ledger never goes stale:

    every check passed                 -> reproduced   (or the claim's own ``on_pass``)
    a theorem check failed             -> contradicted (its premises were verified: a counterexample or a bug)
    some claim checks passed, some not -> differs
    every claim check failed           -> not seen     (or the claim's own ``on_fail``: differs, for a number)
    every claim check lacked data      -> not enough data (``enough`` false in summary.json: the run could
                                          not decide it, e.g. an interval too wide or no RLVR gain to analyse)
    no check, or experiment not run    -> not tested   (with the reason)

Checks that lacked data are set aside when others decided: the verdict is the deciding checks',
and ``why`` counts the ones set aside. A failed theorem check decides whatever its ``enough``.

A check the ledger names that a run's summary lacks makes the row "not tested" with the missing
name, so a renamed check shows instead of passing silently (tests/test_report.py checks the names
against the experiments).

The papers (../shared/papers): "On the Optimization Dynamics of RLVR: Gradient Gap and Step Size
Thresholds" (Suk & Duan, arXiv 2510.08539, full text); "The Invisible Leash" (arXiv 2507.14843)
and "On the Direction of RLVR Updates" (arXiv 2603.22117), of which the folder holds abstracts, a
review and METHODS.md's method facts: their locations are cited from those.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CLAIMS", "HOLE", "PAPERS", "VERDICTS", "Claim", "LedgerRow", "Ref", "ledger", "ledger_markdown", "name_regex", "row",
           "short_measured"]

Word = Literal["reproduced", "differs", "not seen", "contradicted", "not enough data", "not tested"]
VERDICTS: tuple[str, ...] = ("reproduced", "differs", "not seen", "contradicted", "not enough data", "not tested")
HOLE = "{}"  # in a check name: a value taken from the settings

PAPERS = {
    "gap": "Gradient Gap (arXiv 2510.08539)",
    "leash": "Invisible Leash (arXiv 2507.14843)",
    "direction": "Direction of RLVR updates (arXiv 2603.22117)",
}


@dataclass(frozen=True)
class Ref:
    """A check of one experiment, by its name in summary.json; ``{}`` matches a value from the settings."""

    experiment: str
    check: str


@dataclass(frozen=True)
class Claim:
    id: str  # stable anchor: the ledger row is report.html#claim-<id>
    paper: str  # a key of PAPERS
    where: str  # section / equation / theorem / figure
    claim: str  # one sentence
    refs: tuple[Ref, ...] = ()  # empty: not tested, and ``untested`` says why
    untested: str = ""
    on_pass: Word = "reproduced"
    on_fail: Word = "not seen"
    why_pass: str = ""  # what a pass means, where on_pass is not "reproduced"


def _refs(experiment: str, *checks: str) -> tuple[Ref, ...]:
    return tuple(Ref(experiment, c) for c in checks)


# Check names shared by several claims, or too long for a line.
LEMMA1 = "Lemma 1 (27) / Lemma 6 (63): |Δ log-odds - Delta_mu·eta| <= (L_o + 8G_o²)·eta²"
LOGISTIC = "Theorems 1(b)/3: J(K) above the logistic bound (13b)/(15b) with steps inside (13a)/(15a)"
COROLLARY = "Corollary 3.1: 1-J(K) <= (1-J0)/J0·exp(-Delta_mu·eta·K/2) for eta <= sqrt2/33"
SECOND_ORDER = "App. F's second-order term: ½(Var+ - Var- + curvature)·eta² (derived) beats (Var+ - Var-)·eta² (printed)"
COLLAPSE_F1 = ("F.1: eta inside the collapse window (52) with Delta_mu_q = eta(L+G²)/60", "F.1: J(k) equals the proof's closed form",
               "F.1: J strictly decreasing, towards 0", "F.1: Gap Alignment stays above the proof's bound eta G²/30 (>= Delta_mu_q)")
COLLAPSE_F2 = ("F.2 (T_inf={}): eta inside the collapse window (16) with Delta_mu_q = eta(L+G²)/120",
               "F.2 (T_inf={}): J(k) equals the proof's closed form", "F.2 (T_inf={}): J strictly decreasing, towards 0",
               "F.2 (T_inf={}): Gap Alignment stays above the proof's bound T eta G²/60 (>= Delta_mu_q)")
UNIT_TESTED = "an exact identity: checked by the unit tests (tests/test_gap.py), not by an experiment run"

CLAIMS: tuple[Claim, ...] = (
    # --- the main paper: trajectory level (§3, App. E-G) --------------------------------------
    Claim("identities", "gap", "eq. (9), App. B.2; Lemma 3 (34); Lemma 8",
          "The policy gradient is J(1−J) times the Gradient Gap, and the log-odds change is a difference of two log-MGFs.",
          untested=UNIT_TESTED),
    Claim("lemma1", "gap", "§3.2 eq. (14); Lemma 1 (27); Lemma 6 (63)",
          "With η ≤ 1/(2√L_o), one step moves the log-odds by Δμ·η within (L_o + 8G_o²)·η².",
          _refs("bounds", LEMMA1) + _refs("mab", "Lemma 1 band (27) where eta_eff <= 1/(2 sqrt L_o)")
          + _refs("contextual", "Lemma 1 band (27) per evaluation context")),
    Claim("thm1a", "gap", "Theorem 1(a)",
          "With bounded cumulative alignment M and Σ η² bounded, J stays below a ceiling strictly under 1 (stagnation).",
          _refs("bounds", "Theorem 1(a): J(K) below the stagnation ceiling")),
    Claim("thm1b", "gap", "Theorem 1(b), eq. (13a)–(13b)",
          "With steps inside (13a), J(K) stays above the logistic bound J0 / (J0 + (1−J0)·exp(−M/2)).",
          _refs("bounds", LOGISTIC) + _refs("mab", "Logistic lower bound (13b) while (13a) has held")
          + _refs("collapse", "F.1: gap direction with eta inside (13a) stays above (13b)")),
    Claim("cor31", "gap", "Corollary 3.1",
          "With a uniform gap and a fixed step inside the condition, 1 − J converges to 0 at a linear rate.",
          _refs("two-response", COROLLARY)),
    Claim("appE", "gap", "App. E",
          "For a softmax over one correct and one incorrect response the Gradient Gap is (1, −1): Gap Alignment √2.",
          _refs("two-response", "Gap Alignment of the normalized gap direction is sqrt 2 (App. E)",
                "Log-odds move by exactly sqrt2·eta per step (twice the guaranteed rate)")),
    Claim("thm2", "gap", "Theorem 2, App. F.1 (52)",
          "A uniformly positive gap with a constant step inside the collapse window still drives J strictly down to 0.",
          _refs("collapse", *COLLAPSE_F1)),
    Claim("appF-second-order", "gap", "App. F (second-order expansion)",
          "One step changes the log-odds by Δμ·η + (Var⁺ − Var⁻)·η² + O(η³).",
          _refs("bounds", SECOND_ORDER), on_pass="differs", on_fail="reproduced",
          why_pass="the measured change fits ½(Var⁺ − Var⁻ + curvature)·η² better than the printed "
                   "(Var⁺ − Var⁻)·η²"),
    Claim("appF-crit", "gap", "App. F (rlvrlab's reading: η_crit ≈ 2Δμ/(Var⁻ − Var⁺))",
          "The second-order terms set the step size past which the log-odds gain turns negative.",
          _refs("controller", "the second-order analysis at the start predicts GRPO's critical rate within a factor 10"),
          on_fail="differs"),
    Claim("crit-prediction", "gap", "App. F, §7 (rlvrlab's reading: thresholds from the run's own statistics)",
          "The critical learning rate of fixed-rate training is the smallest step, along a short safe run, at which some "
          "prompt's exact log-odds gain turns negative: within 1.5x in at least 90% of cells.",
          _refs("phase", "predicted from a short safe run (pred_min): the critical rate within 1.5x of the measured in >= 90% of cells",
                "predicted from a short safe run (pred_tolerant): the critical rate within 1.5x of the measured in >= 90% of cells"),
          on_fail="differs"),
    Claim("cross-prompt-step", "gap", "§7 (rlvrlab's reading: the batch-level step)",
          "Scaling the whole step so that no prompt in the batch is pushed past its own threshold matches the best fixed rate "
          "per cell: the same final J, and steps to the target within 1.5x of the oracle's.",
          _refs("controller", "cross-prompt (no prompt pushed past its threshold) matches the best fixed rate per cell: the same "
                "final J and steps to J = {} within 1.5x of the oracle's"),
          on_fail="differs"),
    Claim("appF-warning", "gap", "App. F (rlvrlab's reading, language models)",
          "Steps past the second-order critical size derail learning: an early ratio η/η_crit > 1 marks the runs that lose "
          "accuracy.",
          _refs("lm-grpo", "the critical-step ratio over the first steps warns of the runs that lose accuracy"), on_fail="differs"),
    Claim("warning-bench", "gap", "App. F (rlvrlab's reading, practice): the early warning against peer monitors",
          "On a labelled corpus of GRPO runs, the theory's warning (critical-step ratio, realized log-odds change) is ahead of "
          "the monitors practitioners install (rlwatch, rldoctor, rlprobe) on F1 and on median lead time before the collapse.",
          _refs("warning-bench", "rlvrlab's best rule is ahead of every peer monitor on F1",
                "rlvrlab's best rule is ahead of every peer monitor on F1 as a warning (alarms at or before the onset)",
                "rlvrlab's best rule warns earlier than every peer monitor (median lead time)"), on_fail="differs"),
    Claim("lr-probe", "gap", "§4, App. F (rlvrlab's reading, practice): a learning rate before training",
          "The critical learning rate of a language-model run can be read off its first steps before training: within 2x "
          "of a fixed-rate sweep's in at least 90% of cells, and training at half of it matches the sweep's best rate.",
          _refs("lr-oracle", "the probe's predicted critical rate is within 2x of the measured one in at least 90% of (cell, seed) pairs",
                "training at the probe's recommended rate ends within 0.02 (or one SE) of the best fixed rate, every cell"),
          on_fail="differs"),
    Claim("lr-adaptive", "gap", "§7 (rlvrlab's reading, practice): a rate that needs no tuning",
          "A rate rule driven by the theory's critical rate, from any start, ends where the best fixed rate does, never "
          "collapses, and is not slower.",
          _refs("lr-oracle", "schedule probe, from the grid's lowest and highest rate, ends within 0.02 (or one SE) of the best "
                "fixed rate in every cell, never collapses, and reaches 90% of the best run's accuracy in at most 1.5x its steps"),
          on_fail="differs"),
    Claim("length-lm", "gap", "§4 eq. (17)–(18), 'Sequence length', on a language model trained with Adam",
          "The critical learning rate of GRPO is flat in the response length; without length normalization it falls like 1/T.",
          _refs("lr-oracle", "{}: the critical rate against response length has the theory's slope ({})"), on_fail="differs"),
    Claim("thm6a", "gap", "App. G, Theorem 6(a)",
          "Convergence of J to 1 implies that the cumulative alignment M diverges.",
          _refs("two-response", "Theorem 6(a) (App. G): under (61), M(K) >= (2/3)(log-odds(K) - log-odds(0)), so M -> inf as J -> 1")
          + _refs("collapse", "F.1: Theorem 6(a) (App. G), gap direction inside (61): M(K) >= (2/3)(log-odds(K) - log-odds(0))")),
    Claim("thm6b", "gap", "App. G, Theorem 6(b), Remark 1",
          "Σ‖∇J‖² stays finite both when J converges and when it collapses, so gradient norms miss what M shows.",
          _refs("two-response",
                "Theorem 6(b) as printed (App. G): Σ_k ‖∇J_k‖² < 2L_o·Σ_k (1-J0)/(1-J0+J0·e^{M(k)/2}) under (61)",
                "Theorem 6(b): Σ‖∇J‖² converges: its tail after K is below L_o(1-J0)/J0·e^{-M(K)/2}/(1-e^{-sqrt2·eta/2})")
          + _refs("collapse", "F.1: Theorem 6(b) as printed (App. G), gap direction inside (61): Σ‖∇J‖² < 2L_o·Σ_k b(M(k))",
                  "{}: Remark 1 (App. G): M(K) -> inf, at least K·eta·(the proof's alignment bound), while J -> 0",
                  "{}: Remark 1 (App. G): Σ‖∇J‖² converges while J -> 0: its tail after K is below 4G_o²c^(-2T)r^K/(1-r)")),
    # --- token level (§4) --------------------------------------------------------------------
    Claim("lemma2", "gap", "§4 eq. (19); Lemma 2 (30b)",
          "At the token level the log-odds gain is at least Δμ·η − (L_p T_∞ + G_p² T_ψ1/(1−J))·η².",
          _refs("bounds", "Lemma 2 (30b): token-level lower bound on Δ log-odds")),
    Claim("lemma2-length", "gap", "§4 Assumption 3, Lemma 2 (30b), App. D.2.3 (46b)",
          "Length enters the token-level penalty through T_ψ1 (the sub-exponential norm of |o|), not T_∞.",
          _refs("length-penalty", "Lemma 2 (30b) with the current T_psi1: every instance, reward, direction and step within (30a)",
                "(46b): log E exp(eta w·∇log π) <= G_p² T_psi1 eta² within (30a)",
                "(46b)'s variance term tracks T_psi1, not T_inf: max_w ½Var(w·∇log π) ∝ T_psi1^b T_inf^a",
                "Lemma 2's penalty tracks T_psi1, not T_inf: worst realized penalty ∝ T_psi1^b T_inf^a"),
          on_fail="differs"),
    Claim("thm3", "gap", "Theorem 3, eq. (15a)–(15b)",
          "With token-level steps inside (15a), J(K) stays above the logistic bound (15b).",
          _refs("bounds", LOGISTIC) + _refs("collapse", "F.2 (T_inf={}): gap direction with eta inside (15a) stays above (15b)")),
    Claim("thm4", "gap", "Theorem 4, eq. (16), App. F.2",
          "At the token level a positive gap with a constant step inside window (16), which shrinks with T_∞, drives J to 0.",
          _refs("collapse", *COLLAPSE_F2)),
    Claim("length-grpo", "gap", "§4 eq. (17)–(18), 'Sequence length'",
          "GRPO's 1/|o| normalization matches the 1/T_ψ1 of (18): its critical learning rate is flat in the response length T.",
          _refs("phase", "grpo, J0={}: critical rate ∝ T^0 (eq. 17 vs 18)"), on_fail="differs"),
    Claim("length-drgrpo", "gap", "§4 eq. (17)–(18), 'Sequence length'",
          "Without length normalization (Dr. GRPO, REINFORCE) the critical learning rate falls like 1/T.",
          _refs("phase", "dr-grpo, J0={}: critical rate ∝ T^-1 (eq. 17 vs 18)",
                "reinforce, J0={}: critical rate ∝ T^-1 (eq. 17 vs 18)",
                # Dr. GRPO's expected update is REINFORCE's / N: the same slope, not a second test; grpo-sum (GRPO's
                # mean-std advantage without 1/|o|) weights prompts differently and is one
                "grpo-sum, J0={}: critical rate ∝ T^-1 (eq. 17 vs 18)"),
          on_fail="differs"),
    Claim("length-contrast", "gap", "§4 eq. (17)–(18), 'Sequence length'",
          "Dividing by |o| is what separates GRPO from REINFORCE in T: the slope of log critical rate on log T differs by 1.",
          _refs("phase", "grpo - reinforce, J0={}: slope difference 1 (eq. 17 vs 18: GRPO's 1/|o|)"), on_fail="differs"),
    Claim("success-rate-scaling", "gap", "abstract; §4 eq. (17)–(18), 'Correction rate'",
          "The critical step size scales with the success rate: (18) allows η ≲ Δμ(1−J)/T_ψ1, GRPO takes "
          "Δμ·√(J(1−J))/T_ψ1.",
          _refs("success-scaling", "one step, {} states, {}: eta_crit/Delta_mu ∝ (1-J)^1 (cap 18)",
                "one step, {} states, {}: critical learning rate scales with 1-J as (17) meets (18)",
                "trajectory, {}: critical learning rate scales with 1-J0 as (17) meets (18)")
          + _refs("lm-grpo", "prompt by prompt: eta_crit/Delta_mu ∝ (1-J)^1 (eq. 18)")),
    Claim("stagnation", "gap", "abstract; §4 'Correction rate'",
          "With a fixed learning rate GRPO overshoots as J → 1, so its success rate stagnates strictly below 100%.",
          _refs("stagnation", "GRPO at a fixed rate plateaus below 100% through overshoot (eq. 17-18)")),
    Claim("plateau-law", "gap", "§4 eq. (17) vs (18) (rlvrlab's reading)",
          "Where GRPO's effective step meets the cap of (18), the plateau follows J* = 1/(1 + (α/c)²).",
          _refs("stagnation", "Overshoot plateaus follow J* = 1/(1 + (α/c)²)"), on_fail="differs"),
    Claim("drgrpo-no-stall", "gap", "§4 eq. (17), 'Correction rate' (implied)",
          "Dr. GRPO's effective step shrinks with J(1−J), so it does not stall where GRPO does.",
          _refs("stagnation", "Dr. GRPO does not stall where GRPO does (sampled, paired runs)")),
    Claim("adaptive-step", "gap", "§1 contributions; §3.2 (13a) 'properly chosen step size'; §7",
          "A step size scaled to the Gap Alignment converges without tuning and without collapsing prompts.",
          _refs("controller", "gap-adaptive (one setting) matches the best fixed rate chosen per cell",
                "gap-adaptive never collapses a prompt") + _refs("stagnation", "The gap-adaptive step size does not stall")),
    # --- multi-prompt (§5) -------------------------------------------------------------------
    Claim("thm5", "gap", "§5 Theorem 5, eq. (21); Lemma 7 (65)",
          "With batch-level steps inside (15a), the population success rate J(K) stays above the logistic bound (21).",
          _refs("multi-prompt", "Theorem 5 (21): J(K) above the logistic bound with steps inside (15a) from the batch Delta_mu(k), J(k)",
                "Lemma 7 (65) with {}: every step within (64)")),
    Claim("grpo-batch-direction", "gap", "§5 'Implications for GRPO and Dr. GRPO'",
          "GRPO's per-prompt σ_q normalization makes its update not parallel to the batch Gradient Gap g⁺ − g⁻.",
          _refs("multi-prompt", "GRPO's exact expected update is not parallel to the batch Gradient Gap (§5): median angle >= {}°",
                "REINFORCE's and Dr. GRPO's exact expected updates are parallel to the batch Gradient Gap (Lemma 8)")),
    Claim("dynamic-sampling", "gap", "§5 'Implications for GRPO and Dr. GRPO'",
          "Under dynamic sampling (J_q/J bounded) the mean per-prompt alignment E_q[Δμ_q] is of the order of the batch Δμ.",
          _refs("multi-prompt", "Dynamic sampling (J_q in [{}, {}]): E_q[Delta_mu_q]/Delta_mu within [1/B, B], B = 1/(4eps(1-eps)) = {}",
                "Without dynamic sampling E_q[Delta_mu_q]/Delta_mu leaves [1/B, B]",
                "Where no prompt's Delta_mu_q < 0: 1/max c_q <= E_q[Delta_mu_q]/Delta_mu <= 1/min c_q, c_q = J_q(1-J_q)/(J(1-J))")),
    # --- experiments (§6, App. I) ------------------------------------------------------------
    Claim("fig1a", "gap", "§6.1 Figure 1a",
          "On the contextual bandit, a context's success rate J_x rises logistically with its cumulative alignment M_x.",
          _refs("contextual", "Figure 1a: J_x increases with the cumulative alignment M_x",
                "Figure 1a: J_x = σ(a + b·M_x) fits as well as any monotone curve of M_x, with b in [1/2, 3/2]")),
    Claim("fig1b", "gap", "§6.1 Figure 1b; App. I.2",
          "Contexts fall into two regimes: fast convergence, or no improvement after overshooting.",
          _refs("contextual", "Figure 1b: two regimes, fast convergence or no improvement")),
    Claim("fig1c", "gap", "§6.1 Figure 1c",
          "Contexts whose alignment stays close to the training contexts' (relative M near 0) converge faster.",
          _refs("contextual", "Figure 1c: relative alignment near 0 converges faster")),
    Claim("fig4-closed-form", "gap", "App. I.1, Figure 4",
          "On the 100-arm bandit with exact REINFORCE, Δμ(k) ≈ J(1−J): a concave quadratic along the run.",
          _refs("mab", "App. I.1 closed form, symmetric arms: Delta_mu = J(1-J)·K/(K-1)",
                "App. I.1 closed form at the final policy vs the exact engine")),
    Claim("fig4-logistic", "gap", "App. I.1, Figure 4 (with Corollary 3.1)",
          "On the bandit, J rises with the cumulative alignment M as the logistic curve of (13b).",
          _refs("mab", "J(k) = σ(logit J(0) + M(k)) (log-odds linear on the symmetric subspace)")),
    Claim("fig2", "gap", "§6.2 Figure 2",
          "In GRPO on language models, held-out accuracy improves as the cumulative alignment M grows.",
          _refs("lm-grpo", "{} at lr {}: held-out accuracy improves",
                "{} at lr {}: accuracy rises with cumulative gap alignment M (Figure 2)",
                "{} at lr {}: accuracy rises with cumulative gap alignment unbiased M (Figure 2)",
                "Figure 2 interval by interval (unbiased M): the evaluations' intervals that align more gain more accuracy")
          + _refs("warning-bench", "Figure 2 interval by interval: at the same step, the runs whose steps aligned more gained "
                  "more accuracy (§6.2)")),
    Claim("grpo-proxy", "gap", "§6.2 (g_GRPO ∝ √(J(1−J))·(g⁺ − g⁻))",
          "‖g_GRPO‖ is a usable proxy for the batch Gap Alignment.",
          _refs("warning-bench", "the ‖g_GRPO‖ proxy orders steps like the unbiased Gap Alignment it stands for (§6.2)")
          + _refs("success-scaling", "§6.2's proxy identity: T·‖u_GRPO‖ = E_q[σ_q·Delta_mu_q] along GRPO's own direction (eq. 5 with eq. 9)",
                  "§6.2's proxy T·‖g_GRPO‖/E_q[σ_q] is within a factor 2 of E_q[Delta_mu_q]")),
    Claim("vanishing-gap", "gap", "§3.2.1",
          "When the Gradient Gap vanishes (groups whose completions all pass or all fail), learning stalls.",
          _refs("warning-bench", "a vanishing gap stalls learning: more groups without reward variance, less held-out progress "
                "(§3.2.1)")),
    # --- the Invisible Leash ----------------------------------------------------------------
    Claim("leash-support", "leash", "abstract; METHODS.md §A (support)",
          "RLVR cannot sample solutions to which the base model gives zero probability.",
          untested="softmax models give every answer positive probability; the run measures empirical support instead"),
    Claim("leash-pass1", "leash", "abstract",
          "RLVR consistently improves pass@1.",
          _refs("leash", "RLVR raises pass@1")),
    Claim("leash-shrink", "leash", "abstract; METHODS.md §A (P/E/S/O, NSCR)",
          "At large sampling budgets empirical support shrinks more than it expands (S > E, NSCR < 0).",
          _refs("leash", "at k = {} the RLVR models' support shrinks")),
    Claim("leash-passk", "leash", "abstract",
          "At large k the base model recovers correct answers the RLVR model no longer finds (pass@k catches up).",
          _refs("leash", "pass@{}: the base catches up")),
    Claim("leash-answer-entropy", "leash", "abstract; METHODS.md §A (entropy)",
          "RLVR lowers answer-level entropy.",
          _refs("leash", "RLVR lowers answer entropy")),
    Claim("leash-token-entropy", "leash", "abstract; METHODS.md §A (entropy)",
          "Token-level entropy can rise while answer-level entropy falls.",
          untested="token entropy is reported (in the answer-entropy check's measurement) but not checked: the paper says "
                   "'sometimes'"),
    Claim("leash-tradeoff", "leash", "abstract (entropy–reward trade-off)",
          "RLVR progressively narrows exploration as it raises precision.",
          untested="no check follows entropy over training"),
    # --- the direction of RLVR updates -------------------------------------------------------
    Claim("dir-separation", "direction", "abstract; METHODS.md §B (Δlog p histograms)",
          "The signed Δlog p separates the RLVR model's tokens from the base's, where entropy and KL overlap.",
          _refs("direction", "Δlog p separates the RLVR model's tokens from the base's better than entropy or KL")),
    Claim("dir-replacement", "direction", "abstract; METHODS.md §B (selective token replacement)",
          "Replacing the ~10% of positions selected by Δlog p recovers the RLVR model's accuracy; entropy needs far more.",
          _refs("direction", "replacing the Δlog p-selected {} of positions recovers most of RLVR's gain, more than entropy")),
    Claim("dir-extrapolation", "direction", "abstract; METHODS.md §B (test-time extrapolation)",
          "Extrapolating along Δlog p at the selected positions beats the RLVR model it starts from.",
          _refs("direction", "some selective extrapolation beats the RLVR model")),
    Claim("dir-reweighting", "direction", "abstract; METHODS.md §B (training-time reweighting)",
          "Up-weighting low-probability tokens' advantages, [1 + α(1 − π_old)]·Â, beats DAPO.",
          _refs("direction", "low-probability reweighting beats DAPO")),
    Claim("dir-lemma31", "direction", "Lemma 3.1 (per the review)",
          "Policy gradients concentrate on low-probability tokens through the (1 − π) factor.",
          untested="no run measures how the gradient's mass splits over token probabilities"),
    Claim("dir-thm41", "direction", "Theorem 4.1 (per the review)",
          "On a tabular softmax bandit under natural policy gradient, extrapolating along Δlog p improves reward.",
          untested="no run implements the NPG bandit of the theorem"),
)


def name_regex(name: str) -> re.Pattern[str]:
    """The regex of a check name with holes: each ``{}`` is a group matching any text."""
    return re.compile("(.*?)".join(re.escape(p) for p in name.split(HOLE)) + r"\Z", re.S)


@dataclass(frozen=True)
class LedgerRow:
    claim: Claim
    verdict: str  # one of VERDICTS
    why: str
    measured: tuple[str, ...]  # one per matched check, failing ones first: "label: measured"
    experiments: tuple[str, ...]  # the run's experiments that carry the claim (anchors in the report)


def _label(ref: Ref, name: str, several: bool) -> str:
    """Which check a measured figure comes from: the experiment, if the claim has several, and
    the part before ': ' of the name where that part holds a setting ('F.2 (T_inf=3)')."""
    parts = [ref.experiment] if several else []
    head, _, _ = ref.check.partition(": ")
    if HOLE in head and ": " in ref.check:
        parts.append(name.partition(": ")[0])
    return ", ".join(parts)


def row(claim: Claim, summaries: Mapping[str, Mapping[str, Any]]) -> LedgerRow:
    """The ledger row of ``claim`` from a run's summaries (experiment name -> summary.json)."""
    if not claim.refs:
        return LedgerRow(claim, "not tested", claim.untested, (), ())
    found: list[tuple[str, Mapping[str, Any]]] = []
    not_run, missing = [], []
    several = len({r.experiment for r in claim.refs}) > 1
    for ref in claim.refs:
        if ref.experiment not in summaries:
            not_run.append(ref.experiment)
            continue
        rx = name_regex(ref.check)
        matched = [c for c in summaries[ref.experiment]["checks"] if rx.match(c["name"])]
        if not matched:
            missing.append(f"{ref.experiment}: '{ref.check}'")
        found += [(_label(ref, c["name"], several), c) for c in matched]
    if missing:
        return LedgerRow(claim, "not tested", "check missing from the run (the ledger is out of date): " + "; ".join(missing), (), ())
    if not found:
        return LedgerRow(claim, "not tested", "experiment not run: " + ", ".join(dict.fromkeys(not_run)), (), ())

    def decides(c: Mapping[str, Any]) -> bool:  # a failed theorem check decides whatever its data
        return c.get("enough", True) or (c["kind"] == "theorem" and not c["passed"])

    deciding = [c for _, c in found if decides(c)]
    aside = len(found) - len(deciding)
    failed = [c for c in deciding if not c["passed"]]
    n, k = len(deciding), len(deciding) - len(failed)
    if not deciding:
        word, why = "not enough data", ("the check" if aside == 1 else f"all {aside} checks") + " lacked the data to decide"
    elif not failed:
        word, why = claim.on_pass, claim.why_pass or {1: "the check passed", 2: "both checks passed"}.get(n, f"all {n} checks passed")
    elif any(c["kind"] == "theorem" for c in failed):
        word, why = "contradicted", f"a theorem check failed ({k} of {n} passed): a counterexample or a bug"
    elif k:
        word, why = "differs", f"{k} of {n} checks passed"
    else:
        word, why = claim.on_fail, "the check failed" if n == 1 else f"none of {n} checks passed"
    if deciding and aside:
        why += f"; {aside} more lacked the data to decide"
    ordered = sorted(found, key=lambda lc: (not decides(lc[1]), lc[1]["passed"]))  # deciding and failing first
    measured = tuple(f"{label}: {c['measured']}" if label else c["measured"] for label, c in ordered)
    experiments = tuple(dict.fromkeys(r.experiment for r in claim.refs if r.experiment in summaries))
    return LedgerRow(claim, word, why, measured, experiments)


def ledger(summaries: Mapping[str, Mapping[str, Any]]) -> list[LedgerRow]:
    """Every claim's row, in CLAIMS' order."""
    return [row(c, summaries) for c in CLAIMS]


def short_measured(r: LedgerRow, most: int = 3, width: int = 110) -> str:
    """The measured figures in one line: the first ``most`` checks, each cut at ``width`` characters."""
    parts = [m if len(m) <= width else m[: width - 1] + "…" for m in r.measured[:most]]
    more = len(r.measured) - most
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def ledger_markdown(rows: list[LedgerRow], report: str = "report.html") -> str:
    """The ledger as Markdown, one table per paper; its links point into ``report`` (beside it)."""
    out = []
    for paper, title in PAPERS.items():
        out += [f"### {title}", "", "| claim | where | verdict | why | measured | run |", "|---|---|---|---|---|---|"]
        for r in (r for r in rows if r.claim.paper == paper):
            runs = ", ".join(f"[{e}]({report}#{e})" for e in r.experiments)
            cells = [_md(r.claim.claim), _md(r.claim.where), f"**{r.verdict}**", _md(r.why), _md(short_measured(r)), runs]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
