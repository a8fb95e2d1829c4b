"""The log-probabilities of sampled completions under a model, computed C positions at a time.

At a real vocabulary the next-token distributions are the largest tensors of a GRPO step: the
(N, T, V) float32 logits of N = 64 completions of T = 512 tokens at Qwen2.5's V = 151,936 take
20 GB, and their log-softmax as much again. Nothing here holds them. The model's backbone runs
once over prompt + completion, giving the inputs of its output layer (the hidden states, (N, T, H),
H ≪ V); the output layer (``model.get_output_embeddings()``, the lm_head) then runs on C of the
completion positions at a time, and each chunk's logits z (C, V) are reduced at once to what the
caller needs (TRL's ``selective_log_softmax`` and ``entropy_from_logits`` chunk the same way):

    log π(o_t | q, o_<t) = log_softmax(z)[o_t]        H(π(·| q, o_<t)) = −Σ_v π(v) log π(v)

in float32, as a full log-softmax of ``logits.float()`` computes them. Why the backbone and head
apart rather than the model's own forward with ``logits_to_keep``: every completion position
needs its logits, so ``logits_to_keep`` would keep them all; splitting the model is what keeps
the logits out of memory. Padding after EOS is skipped (the lm_head is the costliest layer of a
small model at a large vocabulary). Models whose logits are not ``lm_head(hidden)`` (a logit
scale or soft-capping in their config, a PEFT wrapper, a model without a separate backbone) fall
back to their own logits, (N, T, V) in the model's dtype, and only the float32 log-softmax is
chunked.

With gradients, each chunk runs under activation checkpointing when there is more than one:
its logits are recomputed in the backward pass instead of being kept, so the gradients are those
of the full log-softmax (the same operations, recomputed) with O(C·V) memory instead of O(N·T·V).
The entropy is for logging and never carries a gradient.

The G completions of a prompt share it: the prompt runs once, its key/value cache is repeated G
times, and the completions run on top of it (fewer tokens through the model than running prompt +
completion for every row, by (G - 1)/G of the prompt tokens).

Completions of one batch differ in length, and a single pass runs every row up to the longest.
`length_buckets` groups the rows by length so that each group runs only up to its own longest
(at most 128 new tokens on the benchmark's task: lengths 4 to about 33, mean 19, so some 40% of
a single pass's completion positions are padding; two or three groups run 30-37% fewer
positions, and the forward + backward took 10-20% less time). A group costs one more pass, so a
group is split off only where it saves 5% of a pass over the batch (BUCKET_MIN_SAVING; at most
16 new tokens, where most completions run to the end, groups neither paid nor cost measurably).
A small batch's passes cost mostly their fixed cost (transformers' masks, rotary embeddings,
cache and module calls: 0.6-1.3 ms a pass of the tiny model), so a group must also save at least
BUCKET_MIN_POSITIONS positions. The numbers are those of one pass up to rounding: the same
operations, on batches of other shapes.

A confident policy samples the same completion again and again (benchmarks/distinct_rows.py, the
tiny model: 47 to 84 distinct (prompt, completion) rows among 128 on arith, 23 to 32 on add, 105 to
122 on countdown). With ``distinct`` `token_logprobs` runs each distinct row once (`distinct_rows`),
its prompt still once per prompt, and copies the values to the repeats; every pass of the trainers
uses it (the forward + backward 1.56x faster on arith, 2.34x on add, 1.15x on countdown).

Attention: where a pass's attention scores are few (`EAGER_ATTENTION_SCORES`), a model that runs
PyTorch's SDPA runs transformers' eager attention for the pass instead (two matrix products and a
softmax): the same function up to rounding (a few 1e-6 in the log-probs), and on the CPU cheaper
at these sizes than SDPA's flash kernel, whose fixed cost per (row, head) block dominates when a
block is a few dozen positions (the benchmark's 16 new tokens: the forward + backward took 46-47
ms against 51-56, the no-grad pass 14.5 against 17-18). For the Llama family (Llama, Mistral,
Qwen2, Qwen3) the eager attention is `grouped_attention`: the g query heads that share a key/value
head (grouped-query attention) are stacked as rows of one product with it, where transformers'
eager copies the keys and values g times (repeat_kv) and sums their gradients back; on the
benchmark's batch the forward + backward took 51.3 ms against 54.7, the no-grad pass 17.0 against
17.7, the sampler 22.7 against 25.1. Eager attention keeps its scores for the backward pass
(rows · heads · queries · keys per layer), which is why it is used only where they are few. The
sampler decodes with eager attention too where it runs on more than one thread (`eager_attention`,
by the prefill's and a decode step's pairs; `rlvrlab.lm.sampling.decode_settings`): with one query
per step its scores are always few, and on the benchmark's 16 prompts × 8 completions it sampled
in 26 ms on two threads against 33 ms for SDPA on one (SDPA's CPU kernel with a padding mask was
slower on two threads than on one; on one thread SDPA was the cheaper).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from rlvrlab.lm.sampling import Rollout

__all__ = ["BUCKET_MIN_POSITIONS", "BUCKET_MIN_SAVING", "CHUNK_ELEMENTS", "EAGER_ATTENTION_SCORES", "GROUPED_ATTENTION", "attention_for",
           "chunk_positions", "distinct_rows", "eager_attention", "grouped_attention", "head_inputs", "length_buckets", "llama_family",
           "log_softmax_chunks", "next_token_logprobs", "positions", "prefill", "token_logprobs", "unique_rows"]

# Logits per chunk (C·V): 64 MB of float32; C = 110 positions at V = 151,936. A chunk's working
# set is a few such tensors (logits, log-softmax, their gradients).
CHUNK_ELEMENTS = 2**24

# `length_buckets`: a further pass of the backbone over a group of completions must save at least
# this share of the padded positions of one pass over the batch (a pass has a fixed cost of its own).
BUCKET_MIN_SAVING = 0.05
# ... and at least this many positions: a pass's own fixed cost (transformers' masks, rotary
# embeddings, cache and module calls) is about that of 200 positions of the tiny model on two
# threads (a no-grad pass over 1 row of 1 token took 0.6-1.3 ms, each further position ~6 µs).
BUCKET_MIN_POSITIONS = 192

# `attention_for`: a pass whose attention scores (rows · heads · queries · keys, each layer) number at
# most this runs eager attention instead of SDPA (32 MB of float32 scores per layer, kept for the backward).
EAGER_ATTENTION_SCORES = 2**23

# Config fields that make a model's logits something other than lm_head(hidden) (TRL's fused LM
# head reads the same ones): such models use their own logits.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows (N, L): counted from each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def prefill(net, ids: torch.Tensor, mask: torch.Tensor, G: int, *, last: Callable = lambda out: out.logits):
    """Run the B distinct prompts (B, P) once and repeat their key/value cache G times: (``last`` of
    the output at the last prompt position, repeated to (B·G, ·), the cache of B·G rows). The
    sampler takes the logits, the log-prob pass the backbone's hidden states."""
    out = net(input_ids=ids, attention_mask=mask.long(), position_ids=positions(mask), use_cache=True)
    cache = out.past_key_values
    if G > 1:
        cache.batch_repeat_interleave(G)
    return last(out)[:, -1].repeat_interleave(G, 0), cache


@functools.cache
def llama_family() -> dict[type, type]:
    """{causal LM class: its backbone class} for the Llama family of transformers 5 (Llama, Mistral,
    Qwen2, Qwen3), whose attention modules call transformers' generic eager_attention_forward;
    empty where transformers lacks one of them. Built once: every log-prob pass and decode asks."""
    try:
        from transformers import (LlamaForCausalLM, LlamaModel, MistralForCausalLM, MistralModel, Qwen2ForCausalLM,
                                  Qwen2Model, Qwen3ForCausalLM, Qwen3Model)
    except ImportError:
        return {}
    return {LlamaForCausalLM: LlamaModel, MistralForCausalLM: MistralModel, Qwen2ForCausalLM: Qwen2Model,
            Qwen3ForCausalLM: Qwen3Model}


GROUPED_ATTENTION = "rlvrlab_grouped_eager"  # the name `grouped_attention` is registered under with transformers


def grouped_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
                      scaling: float, dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, None]:
    """The Llama family's eager attention, softmax(q·kᵀ·scaling + mask)·v per head in float32 softmax,
    without repeat_kv: the g = H / H_kv query heads that share a key/value head are stacked as g·q rows
    of one product with it, instead of copying the keys and values g times (and summing their
    gradients back). The same products, batched otherwise: equal to eager_attention_forward up to
    rounding (tests/test_logprobs.py).

    query (n, H, q, d); key, value (n, H_kv, L, d); attention_mask (n, 1, q, L) additive, or None.
    Returns the output (n, q, H, d) and no attention weights."""
    n, H, q, d = query.shape
    g = H // key.shape[1]
    scores = torch.matmul(query.reshape(n, -1, g * q, d), key.transpose(2, 3)) * scaling  # (n, H_kv, g·q, L)
    if attention_mask is not None:  # rows j·q + t of a group are query t of its j-th head
        scores = scores + (attention_mask if q == 1 else attention_mask.repeat(1, 1, g, 1))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).reshape(n, H, q, d).transpose(1, 2).contiguous(), None


def _register_grouped_attention() -> bool:
    """Register `grouped_attention` with transformers (whether it could: the interfaces are transformers 5's)."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask
    except ImportError:
        return False
    AttentionInterface.register(GROUPED_ATTENTION, grouped_attention)
    AttentionMaskInterface.register(GROUPED_ATTENTION, eager_mask)  # its mask is eager attention's
    return True


_GROUPED_REGISTERED = _register_grouped_attention()


@contextmanager
def eager_attention(model, pairs: int, *, limit: int | None = None):
    """Run the passes inside with eager attention where the model uses SDPA on the CPU and a pass's
    attention scores, heads · ``pairs`` per layer (``pairs``: the (query, key) pairs of all rows),
    number at most ``limit`` (default: EAGER_ATTENTION_SCORES; module docstring); the model's own
    setting is restored on leaving. The Llama family runs `grouped_attention` (eager attention
    without repeat_kv's copies; the benchmark's step 5-6 ms faster than with transformers' eager),
    other models transformers' eager. Any other model is left alone, and so is every model on an
    accelerator (measured on the CPU only)."""
    limit = EAGER_ATTENTION_SCORES if limit is None else limit
    config = getattr(model, "config", None)
    heads = getattr(config.get_text_config(), "num_attention_heads", None) if config is not None else None
    parameter = next(model.parameters(), None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not heads or parameter is None or \
            parameter.device.type != "cpu" or heads * pairs > limit:
        yield
        return
    config._attn_implementation = GROUPED_ATTENTION if _GROUPED_REGISTERED and type(model) in llama_family() else "eager"
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


def attention_for(model, rollout: Rollout, *, limit: int | None = None):
    """`eager_attention` for a log-prob pass over the rollout: N · T · (P + T) (query, key) pairs
    (the completions' T queries each see the prompt's P keys and the completion's)."""
    N, T = rollout.completion_ids.shape
    return eager_attention(model, N * T * (rollout.prompt_ids.shape[1] + T), limit=limit)


def _backbone_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(backbone, lm_head) when the model's logits are lm_head(backbone(...).last_hidden_state)."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):  # e.g. a PEFT wrapper, whose base_model is not a backbone
        return None
    head, backbone = model.get_output_embeddings(), model.base_model
    config = model.config.get_text_config()
    if head is None or backbone is model or any(getattr(config, k, None) is not None for k in _LOGIT_TRANSFORMS):
        return None
    return backbone, head


def head_inputs(model, rollout: Rollout) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The inputs of the model's output layer at every completion position and that layer: x (N, T, H)
    and head, with head(x[i, t]) the logits of o_t given q, o_<t (V,). For a model that cannot be split
    (see the module docstring) x are the logits themselves (N, T, V) and head the identity.
    Differentiable when grad is enabled."""
    G, P = rollout.group, rollout.prompt_ids.shape[1]
    split = _backbone_and_head(model)
    net, head = split if split is not None else (model, lambda z: z)

    def last(out) -> torch.Tensor:
        return out.last_hidden_state if split is not None else out.logits

    first, cache = prefill(net, rollout.prompt_ids[::G], rollout.prompt_mask[::G], G, last=last)  # predicts o_1: (N, H)
    mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], 1)
    rest = net(input_ids=rollout.completion_ids, attention_mask=mask.long(), position_ids=positions(mask)[:, P:],
               past_key_values=cache, use_cache=True)
    return torch.cat([first.unsqueeze(1), last(rest)[:, :-1]], 1), head  # (N, T, H)


def chunk_positions(n: int, vocab: int, chunk_size: int | None = None) -> list[slice]:
    """Slices of ``chunk_size`` positions (default: CHUNK_ELEMENTS // vocab, at least 1) covering n."""
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ELEMENTS // vocab)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of positions, got {chunk_size}")
    return [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]


def _vocab(model, x: torch.Tensor) -> int:
    """V: the output layer's width, or the logits' where x are the logits."""
    split = _backbone_and_head(model)
    if split is None:
        return x.shape[-1]
    head = split[1]
    return getattr(head, "out_features", None) or model.config.get_text_config().vocab_size


def length_buckets(lengths: list[int], *, min_saving: float = BUCKET_MIN_SAVING,
                   min_positions: float = BUCKET_MIN_POSITIONS) -> list[list[int]]:
    """Rows grouped by completion length for the backbone's pass: each group runs up to its own
    longest completion instead of the batch's, skipping the padding in between. Groups are runs of
    the rows sorted by length (rows ascending within a group); their boundaries minimize

        Σ_groups rows · longest  +  (groups − 1) · max(min_saving · N · T, min_positions)

    (padded positions through the backbone, plus a price per extra pass: each pass has a fixed cost
    of its own, so a cut is made only where it saves at least ``min_saving`` of the N · T positions
    of one pass over the batch, and at least ``min_positions``: a small batch's passes cost mostly
    their fixed cost). Exact, by dynamic programming over the distinct lengths."""
    N = len(lengths)
    if N == 0:
        return []
    order = sorted(range(N), key=lambda i: lengths[i])
    ls = [lengths[i] for i in order]
    price = max(min_saving * N * ls[-1], min_positions)
    cuts = [i for i in range(1, N) if ls[i] != ls[i - 1]] + [N]  # a group ends where the length changes, or at the end
    best = {0: (0.0, 0)}  # end of the groups so far -> (cost, start of the last group)
    for j in cuts:
        best[j] = min((cost + (j - i) * ls[j - 1] + (price if i else 0.0), i) for i, (cost, _) in best.items())
    groups, j = [], N
    while j:
        i = best[j][1]
        groups.append(sorted(order[i:j]))
        j = i
    return groups[::-1]


def _rows(cache, rows: torch.Tensor):
    """A copy of a transformers cache holding the given batch rows (the prompts' cache for one
    group of completions), or None for a cache that cannot be copied that way."""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not hasattr(cache, "batch_select_indices"):
        return None
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in layers]  # the copies' tensors are replaced, the cache's are not
    sub.batch_select_indices(rows)
    return sub


def _selected(model, rollout: Rollout, owners: tuple[torch.Tensor, torch.Tensor] | None = None):
    """The completion positions (M,) as flat indices into (N·T) in row-major order, their head
    inputs (M, H), tokens (M,) and the head. With completions of different lengths, the backbone
    runs on groups of them (`length_buckets`); the prompts still run once. ``owners``: for rows
    that are not in groups of ``rollout.group`` (`distinct_rows`), the rows whose prompts run (B,)
    and each row's index into them (N,)."""
    N, T = rollout.completion_ids.shape
    where = rollout.completion_mask.flatten().nonzero().squeeze(1)  # (M,)
    groups = length_buckets(rollout.lengths.tolist(), min_saving=BUCKET_MIN_SAVING, min_positions=BUCKET_MIN_POSITIONS)
    if len(groups) < 2 and owners is None:
        x, head = head_inputs(model, rollout)
        return where, x.flatten(0, 1).index_select(0, where), rollout.completion_ids.flatten()[where], head
    G, P = rollout.group, rollout.prompt_ids.shape[1]
    heads, owner = owners if owners is not None else (torch.arange(0, N, G, device=where.device),
                                                      torch.arange(N, device=where.device) // G)  # row b·G + g: prompt b
    split = _backbone_and_head(model)
    net, head = split if split is not None else (model, lambda z: z)

    def last(out) -> torch.Tensor:
        return out.last_hidden_state if split is not None else out.logits

    first, cache = prefill(net, rollout.prompt_ids[heads], rollout.prompt_mask[heads], 1, last=last)  # (B, H): predicts o_1
    parts, places = [], []
    for group in groups:
        rows = torch.tensor(group, device=where.device)
        sub = _rows(cache, owner[rows])
        if sub is None:  # a cache of another kind: one pass over the batch, every row with its own prompt
            alone = rollout if owners is None else dataclasses.replace(rollout, group=1)
            x, head = head_inputs(model, alone)
            return where, x.flatten(0, 1).index_select(0, where), rollout.completion_ids.flatten()[where], head
        Tg = int(rollout.lengths[rows].max())
        cmask = rollout.completion_mask[rows, :Tg]
        mask = torch.cat([rollout.prompt_mask[rows], cmask], 1)
        rest = net(input_ids=rollout.completion_ids[rows, :Tg], attention_mask=mask.long(),
                   position_ids=positions(mask)[:, P:], past_key_values=sub, use_cache=True)
        x = torch.cat([first[owner[rows]].unsqueeze(1), last(rest)[:, :-1]], 1)  # (n, Tg, H)
        at = cmask.flatten().nonzero().squeeze(1)
        parts.append(x.flatten(0, 1).index_select(0, at))
        places.append((rows[:, None] * T + torch.arange(Tg, device=rows.device)).flatten()[at])
    order = torch.argsort(torch.cat(places))  # back to row-major order: the positions of `where`, in its order
    return where, torch.cat(parts).index_select(0, order), rollout.completion_ids.flatten()[where], head


def log_softmax_chunks(model, rollout: Rollout, *, chunk_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """log π(· | q, o_<t) over the whole vocabulary at the completion positions (the mask's True
    entries, in row-major order), C at a time: (flat indices into (N·T) (C,), log-probs (C, V)
    float32). Two models of one vocabulary given the same rollout and chunk_size yield the same
    positions chunk by chunk (zip them to compare the two distributions)."""
    with attention_for(model, rollout):
        where, x, _, head = _selected(model, rollout)
    for c in chunk_positions(len(where), _vocab(model, x), chunk_size):
        yield where[c], torch.log_softmax(head(x[c]).float(), -1)


def _chunk_logprobs(x: torch.Tensor, tokens: torch.Tensor, head, entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(o) (C,) of the tokens (C,) from head inputs (C, H), and the entropy (C,) without grad."""
    logp_all = torch.log_softmax(head(x).float(), -1)  # (C, V)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if not entropy:
        return logp, None
    with torch.no_grad():
        return logp, -(logp_all.exp() * logp_all).sum(-1)


def unique_rows(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of ``key`` (N, L), in order of first appearance: (each one's first row
    (U,), each row's index into them (N,))."""
    N = key.shape[0]
    _, inverse = torch.unique(key, dim=0, return_inverse=True)  # into the distinct rows in sorted order
    first = torch.full((int(inverse.max()) + 1,), N, device=key.device).scatter_reduce(
        0, inverse, torch.arange(N, device=key.device), "amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=key.device))
    return first[order], rank[inverse]


def distinct_rows(rollout: Rollout) -> tuple[Rollout, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The rollout's distinct (prompt, completion) rows, in order of first appearance: (that
    rollout (U rows), each row's index into it (N,), and for `_selected` the distinct rows whose
    prompts run and each distinct row's index into them)."""
    prompt = rollout.prompt_ids.masked_fill(~rollout.prompt_mask, -1)
    rows, inverse = unique_rows(torch.cat([prompt, rollout.completion_ids.masked_fill(~rollout.completion_mask, -1)], 1))
    return rollout.rows(rows), inverse, unique_rows(prompt[rows])


def token_logprobs(model, rollout: Rollout, *, entropy: bool = False, chunk_size: int | None = None,
                   distinct: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(o_t | q, o_<t) of every completion token (N, T) (0 where masked), and optionally the
    entropy of each next-token distribution (N, T) (0 where masked, never with a gradient), from the
    log-softmax in float32, chunk_size positions at a time (default: CHUNK_ELEMENTS // V).
    Differentiable when grad is enabled, with the gradients of the unchunked computation.

    ``distinct``: run each distinct (prompt, completion) row once (`distinct_rows`; a confident
    policy samples the same completion again and again) and copy its values to its repeats. The
    values are a pass's up to rounding (a batch of another shape); with grad, a repeated row's
    gradients add up on the one that ran."""
    if distinct:
        unique, inverse, owners = distinct_rows(rollout)
        logp, ent = _token_logprobs(model, unique, entropy, chunk_size, owners)
        return logp[inverse], (ent[inverse] if ent is not None else None)
    return _token_logprobs(model, rollout, entropy, chunk_size, None)


def _token_logprobs(model, rollout: Rollout, entropy: bool, chunk_size: int | None,
                    owners: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    with attention_for(model, rollout):
        where, x, tokens, head = _selected(model, rollout, owners)
    chunks = chunk_positions(len(where), _vocab(model, x), chunk_size)
    recompute = torch.is_grad_enabled() and x.requires_grad and len(chunks) > 1
    parts = [checkpoint(_chunk_logprobs, x[c], tokens[c], head, entropy, use_reentrant=False) if recompute
             else _chunk_logprobs(x[c], tokens[c], head, entropy) for c in chunks]
    N, T = rollout.completion_ids.shape

    def scatter(values: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.zeros(N * T, dtype=torch.float32, device=where.device)
        return (flat.index_copy(0, where, torch.cat(values)) if values else flat).view(N, T)

    logp = scatter([p[0] for p in parts])
    return logp, (scatter([p[1] for p in parts]) if entropy else None)


def next_token_logprobs(model, rollout: Rollout) -> torch.Tensor:
    """log π(· | q, o_<t) over the whole vocabulary at every completion position (N, T, V), float32,
    differentiable when grad is enabled. This holds all N·T·V of them: at a large vocabulary use
    `log_softmax_chunks` (the analyses) or `token_logprobs` (the trainer) instead."""
    with attention_for(model, rollout):
        x, head = head_inputs(model, rollout)
    return torch.log_softmax(head(x).float(), -1)
