"""What RLVR did to a model: comparing a base model with its RLVR descendant (METHODS.md §A, §B).

- ``passk`` — the unbiased pass@k estimator and curves;
- ``support`` — P/E/S/O per problem, SRR / NDR / SDS / NSCR, the ε threshold of a sampling budget;
- ``tokens`` — teacher-forced per-token Δlog p, entropies, KL both ways and JS; token and answer
  entropy; sampling answers; the check that two models share a tokenizer;
- ``decoding`` — selective token replacement by criterion, and selective test-time extrapolation.
"""

from rlvrlab.analysis.decoding import CRITERIA, MODES, calibrate, extrapolated_logits, generate, selected
from rlvrlab.analysis.passk import pass_at_k, pass_at_k_curve
from rlvrlab.analysis.support import answer_support, support_metrics, support_threshold
from rlvrlab.analysis.tokens import (answer_entropy, check_pair, position_stats, sample_answers, token_entropy,
                                     token_stats)

__all__ = ["CRITERIA", "MODES", "answer_entropy", "answer_support", "calibrate", "check_pair", "extrapolated_logits",
           "generate", "pass_at_k", "pass_at_k_curve", "position_stats", "sample_answers", "selected", "support_metrics",
           "support_threshold", "token_entropy", "token_stats"]
