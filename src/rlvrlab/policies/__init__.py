"""Differentiable policies whose response space can be enumerated, batched over R runs.

Trajectory level (one softmax over whole responses, logits linear in theta): ``TabularSoftmax``
(bandit), ``LinearContextualSoftmax`` (§6.1), ``FeatureSoftmax`` (explicit features, App. F.1).
Token level: ``TokenSoftmax`` (autoregressive, EOS and a maximum length; App. F.2).
"""

from rlvrlab.policies.base import Constants, EnumerablePolicy
from rlvrlab.policies.softmax import FeatureSoftmax, LinearContextualSoftmax, LinearSoftmax, TabularSoftmax
from rlvrlab.policies.token import TokenSoftmax, enumerate_responses

__all__ = [
    "Constants",
    "EnumerablePolicy",
    "FeatureSoftmax",
    "LinearContextualSoftmax",
    "LinearSoftmax",
    "TabularSoftmax",
    "TokenSoftmax",
    "enumerate_responses",
]
