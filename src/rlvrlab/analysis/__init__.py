"""What RLVR did to a model: comparing a base model with its RLVR descendant (METHODS.md §A, §B).

- ``passk`` — the unbiased pass@k estimator and curves;
- ``support`` — P/E/S/O per problem, SRR / NDR / SDS / NSCR, the ε threshold of a sampling budget;
- ``tokens`` — teacher-forced per-token Δlog p, entropies, KL both ways and JS; token and answer
  entropy; sampling answers; the check that two models share a tokenizer;
- ``decoding`` — selective token replacement by criterion, and selective test-time extrapolation;
- ``pair`` — the base/RLVR pair to compare (given, or the tiny base and its cached GRPO
  descendants) and the problems to compare them on, none of which the descendants trained on;
- ``stats`` — the statistics experiments share (from scipy): Spearman's ρ, AUC, bootstrap
  intervals, log-log slope fits with t-intervals, the critical-rate search, the stagnation
  plateau fit, the standard error of a difference of binomial accuracies.
"""

from rlvrlab.analysis.decoding import CRITERIA, MODES, calibrate, extrapolated_logits, generate, selected
from rlvrlab.analysis.pair import descendant_training_prompts, evaluation_problems, model_pair
from rlvrlab.analysis.passk import pass_at_k, pass_at_k_curve
from rlvrlab.analysis.stats import (CriticalRate, PlateauFit, SlopeFit, auc, bootstrap_ci, critical_rate, critical_rates,
                                    fit_plateau,
                                    loglog_exponents, loglog_slope, proportion_diff_se, spearman, spearman_ci)
from rlvrlab.analysis.support import answer_support, support_metrics, support_threshold
from rlvrlab.analysis.tokens import (answer_entropy, check_pair, position_stats, sample_answers, token_entropy,
                                     token_stats)

__all__ = ["CRITERIA", "MODES", "CriticalRate", "PlateauFit", "SlopeFit", "answer_entropy", "answer_support", "auc",
           "bootstrap_ci", "calibrate", "check_pair", "critical_rate", "critical_rates",
           "descendant_training_prompts",
           "evaluation_problems", "extrapolated_logits", "fit_plateau", "generate", "loglog_exponents", "loglog_slope", "model_pair",
           "pass_at_k", "pass_at_k_curve", "position_stats", "proportion_diff_se", "sample_answers", "selected",
           "spearman", "spearman_ci", "support_metrics", "support_threshold", "token_entropy", "token_stats"]
