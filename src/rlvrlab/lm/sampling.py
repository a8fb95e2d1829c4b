"""Sampling G completions per prompt with a KV cache, and the per-token log-probabilities of them.

`sample` runs the prompts once, then feeds one token at a time through the model's key/value
cache, drawing from softmax(logits / temperature) with an explicit `torch.Generator`: a run that
restores the generator's state draws the same completions (what exact resumption needs). Prompts
are left-padded; positions are counted from each prompt's first real token. A completion ends
with the EOS token (which belongs to it: the decision to stop is part of the response) or at
`max_new_tokens` (truncated).

`token_logprobs` and `next_token_logprobs` (the log-probabilities of completions under a model)
live in `rlvrlab.lm.logprobs` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlvrlab.lm.logprobs import next_token_logprobs, positions, prefill, token_logprobs

__all__ = ["Rollout", "completion_texts", "decode", "next_token_logprobs", "sample", "token_logprobs"]


@dataclass
class Rollout:
    """N = B·G sampled completions (the G of prompt b are rows b·G ... b·G + G - 1).

    prompt_ids, prompt_mask: (N, P) left-padded; completion_ids, completion_mask: (N, T), the
    mask True on generated tokens up to and including EOS; group: G.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    group: int = 1

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
    """G completions for each prompt (token id lists), with a KV cache; rows that have ended are
    dropped from the cache, so a step costs in proportion to the completions still running.
    Tensors live on the model's device; ``generator`` must be on it too."""

    def choose(logits: list[torch.Tensor]) -> tuple[torch.Tensor, None]:
        probs = torch.softmax(logits[0].float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1), None

    return decode([model], prompts, G=G, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, choose=choose)[0]


Choose = Callable[[list[torch.Tensor]], tuple[torch.Tensor, "torch.Tensor | None"]]


@torch.no_grad()
def decode(models: list, prompts: list[list[int]], *, G: int, max_new_tokens: int, eos_id: int, pad_id: int,
           choose: Choose) -> tuple[Rollout, torch.Tensor]:
    """Decode with several models in lockstep (each with its own KV cache over the same tokens):
    at each step ``choose`` gets every model's next-token logits (n, V) for the n running rows and
    returns the tokens (n,) and, optionally, a per-row flag (n,) bool (e.g. "this position was
    replaced"). Returns the Rollout and the flags (N, T) (False where none were returned)."""
    device = next(models[0].parameters()).device
    ids, mask = (x.to(device) for x in _left_pad(prompts, pad_id))
    firsts = [prefill(m, ids, mask, G) for m in models]
    logits, caches = [f[0] for f in firsts], [f[1] for f in firsts]
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
    N = ids.shape[0]
    tokens = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
    alive = torch.zeros((N, max_new_tokens), dtype=torch.bool, device=device)
    flags = torch.zeros((N, max_new_tokens), dtype=torch.bool, device=device)
    rows = torch.arange(N, device=device)  # the rows of the batch still running, in cache order
    attn = mask.long()
    next_pos = positions(mask)[:, -1] + 1
    T = 0
    for t in range(max_new_tokens):
        nxt, flag = choose(logits)
        tokens[rows, t] = nxt
        alive[rows, t] = True
        if flag is not None:
            flags[rows, t] = flag
        T = t + 1
        running = nxt != eos_id
        if t == max_new_tokens - 1 or not bool(running.any()):
            break
        if not bool(running.all()):
            keep = running.nonzero().squeeze(1)
            for cache in caches:
                cache.batch_select_indices(keep)
            rows, nxt, attn, next_pos = rows[keep], nxt[keep], attn[keep], next_pos[keep]
        attn = torch.cat([attn, attn.new_ones(len(rows), 1)], 1)
        outs = [m(input_ids=nxt.unsqueeze(1), attention_mask=attn, position_ids=next_pos.unsqueeze(1), past_key_values=c,
                  use_cache=True) for m, c in zip(models, caches)]
        caches, logits = [o.past_key_values for o in outs], [o.logits[:, -1] for o in outs]
        next_pos = next_pos + 1
    return Rollout(ids, mask, tokens[:, :T], alive[:, :T], group=G), flags[:, :T]


def completion_texts(tokenizer, rollout: Rollout) -> list[str]:
    """The completions as text, without their EOS token (what a verifier reads)."""
    eos = tokenizer.eos_token
    ids, mask = rollout.completion_ids.cpu(), rollout.completion_mask.cpu()
    return [tokenizer.decode(row[m]).removesuffix(eos) for row, m in zip(ids, mask)]
