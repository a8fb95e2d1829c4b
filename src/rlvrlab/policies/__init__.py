"""Differentiable policies whose response space can be enumerated, batched over R runs.

Trajectory level (one softmax over whole responses, logits linear in theta): ``TabularSoftmax``
(bandit), ``LinearContextualSoftmax`` (§6.1), ``FeatureSoftmax`` (explicit features, App. F.1).
Token level: ``TokenSoftmax`` (autoregressive, EOS and a maximum length; App. F.2) and
``CountedTokenSoftmax`` (its shared-softmax case, responses grouped by token counts: long T exactly).
"""

from rlvrlab.policies.base import Constants, EnumerablePolicy
from rlvrlab.policies.counted import CountedTokenSoftmax
from rlvrlab.policies.softmax import FeatureSoftmax, LinearContextualSoftmax, LinearSoftmax, TabularSoftmax
from rlvrlab.policies.token import TokenSoftmax, enumerate_responses

__all__ = [
    "Constants",
    "CountedTokenSoftmax",
    "EnumerablePolicy",
    "FeatureSoftmax",
    "LinearContextualSoftmax",
    "LinearSoftmax",
    "TabularSoftmax",
    "TokenSoftmax",
    "enumerate_responses",
]
