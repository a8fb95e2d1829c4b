"""Sampling G completions per prompt with a KV cache, and the per-token log-probabilities of them.

`sample` runs the prompts once, then feeds one token at a time through the model's key/value
cache, drawing from softmax(logits / temperature) with an explicit `torch.Generator`: a run that
restores the generator's state draws the same completions (what exact resumption needs). Prompts
are left-padded; positions are counted from each prompt's first real token. A completion ends
with the EOS token (which belongs to it: the decision to stop is part of the response) or at
`max_new_tokens` (truncated).

`token_logprobs` recomputes, with gradients when asked, log π(o_t | q, o_<t) for every completion
token in one forward pass over prompt + completion, and the entropy of each next-token
distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Rollout", "sample", "token_logprobs"]


@dataclass
class Rollout:
    """N = B·G sampled completions (the G of prompt b are rows b·G ... b·G + G - 1).

    prompt_ids, prompt_mask: (N, P) left-padded; completion_ids, completion_mask: (N, T), the
    mask True on generated tokens up to and including EOS.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def _left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, P - len(p):] = True
    return ids, mask


@torch.no_grad()
def sample(model, prompts: list[list[int]], *, G: int, max_new_tokens: int, eos_id: int, pad_id: int,
           generator: torch.Generator, temperature: float = 1.0) -> Rollout:
    """G completions for each prompt (token id lists), with a KV cache."""
    ids, mask = _left_pad(prompts, pad_id)
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
    N = ids.shape[0]
    attn = mask.long()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True)
    cache, logits = out.past_key_values, out.logits[:, -1]
    next_pos = pos[:, -1] + 1
    done = torch.zeros(N, dtype=torch.bool)
    tokens, alive = [], []
    for t in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        alive.append(~done)
        done = done | (nxt == eos_id)
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        attn = torch.cat([attn, torch.ones(N, 1, dtype=attn.dtype)], 1)
        out = model(input_ids=nxt.unsqueeze(1), attention_mask=attn, position_ids=next_pos.unsqueeze(1),
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
        next_pos = next_pos + 1
    return Rollout(ids, mask, torch.stack(tokens, 1), torch.stack(alive, 1))


def token_logprobs(model, rollout: Rollout, *, entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(o_t | q, o_<t) of every completion token (N, T) (0 where masked), and optionally the
    entropy of each next-token distribution (N, T). Differentiable when grad is enabled."""
    ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], 1)
    attn = torch.cat([rollout.prompt_mask, rollout.completion_mask], 1).long()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    P, T = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, P - 1 : P - 1 + T].float()
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1) * rollout.completion_mask
    ent = None
    if entropy:
        with torch.no_grad():
            ent = -(logp_all.exp() * logp_all).sum(-1) * rollout.completion_mask
    return logp, ent
