"""The per-token log-probabilities of sampled completions under a model.

`token_logprobs` recomputes, with gradients when asked, log π(o_t | q, o_<t) for every completion
token in one forward pass over prompt + completion, and the entropy of each next-token
distribution. `next_token_logprobs` gives the whole next-token distribution at every completion
position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from rlvrlab.lm.sampling import Rollout

__all__ = ["next_token_logprobs", "token_logprobs"]


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _prefill(model, ids: torch.Tensor, mask: torch.Tensor, G: int):
    """Run the B distinct prompts once and repeat their key/value cache G times: (logits at the
    last prompt position (B·G, V), the cache of B·G rows)."""
    out = model(input_ids=ids, attention_mask=mask.long(), position_ids=_positions(mask), use_cache=True)
    cache = out.past_key_values
    if G > 1:
        cache.batch_repeat_interleave(G)
    return out.logits[:, -1].repeat_interleave(G, 0), cache


def next_token_logprobs(model, rollout: Rollout) -> torch.Tensor:
    """log π(· | q, o_<t) over the whole vocabulary at every completion position (N, T, V), float32,
    differentiable when grad is enabled.

    The G completions of a prompt share it: the prompt runs once, its key/value cache is repeated
    G times, and the completions run on top of it (fewer tokens through the model than running
    prompt + completion for every row, by (G - 1)/G of the prompt tokens)."""
    G, P = rollout.group, rollout.prompt_ids.shape[1]
    mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], 1)
    first, cache = _prefill(model, rollout.prompt_ids[::G], rollout.prompt_mask[::G], G)
    pos = _positions(mask)[:, P:]
    rest = model(input_ids=rollout.completion_ids, attention_mask=mask.long(), position_ids=pos, past_key_values=cache,
                 use_cache=True).logits[:, :-1]
    return torch.log_softmax(torch.cat([first.unsqueeze(1), rest], 1).float(), -1)


def token_logprobs(model, rollout: Rollout, *, entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(o_t | q, o_<t) of every completion token (N, T) (0 where masked), and optionally the
    entropy of each next-token distribution (N, T). Differentiable when grad is enabled."""
    logp_all = next_token_logprobs(model, rollout)
    logp = logp_all.gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1) * rollout.completion_mask
    ent = None
    if entropy:
        with torch.no_grad():
            ent = -(logp_all.exp() * logp_all).sum(-1) * rollout.completion_mask
    return logp, ent
