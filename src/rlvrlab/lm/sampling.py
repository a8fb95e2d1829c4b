"""Sampling G completions per prompt with a KV cache, and the per-token log-probabilities of them.

`sample` runs the prompts once, then feeds one token at a time through the model's key/value
cache, drawing from softmax(logits / temperature) with an explicit `torch.Generator`: a run that
restores the generator's state draws the same completions (what exact resumption needs). Prompts
are left-padded; positions are counted from each prompt's first real token. A completion ends
with the EOS token (which belongs to it: the decision to stop is part of the response) or at
`max_new_tokens` (truncated).

Each token costs one forward of the running rows. For the Llama family (Llama, Mistral, Qwen2,
Qwen3) the step calls the decoder layers itself and skips what the model's forward does around
them (a tenth of a step on one thread, for the benchmark's 0.3M-parameter model); the logits are
the model's own, bit for bit (checked once per model, with the model's forward as the fallback).
On the CPU, a model whose steps are too small to split over threads decodes on one
(`decode_threads`), and a model that runs PyTorch's SDPA decodes on more than one thread with
eager attention where the attention scores are few (`decode_settings`; for the Llama family its
grouped form, `rlvrlab.lm.logprobs.grouped_attention`; the same function up to rounding: its two
small matrix products split over threads where SDPA's kernel with a padding mask did not). The
completions are those of the plain loop run with the same threads and attention, token for token
(tests/test_sampling.py holds that loop).

`token_logprobs` and `next_token_logprobs` (the log-probabilities of completions under a model)
live in `rlvrlab.lm.logprobs` and are re-exported here.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from rlvrlab.lm.logprobs import (GROUPED_ATTENTION, eager_attention, llama_family, next_token_logprobs, positions, prefill,
                                 token_logprobs)

__all__ = ["SINGLE_THREAD_FLOPS", "Rollout", "completion_texts", "decode", "decode_settings", "decode_threads",
           "next_token_logprobs", "sample", "token_logprobs"]


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

    def rows(self, index) -> "Rollout":
        """The completions at ``index`` (a slice, an (N,) bool mask or row indices), same group size."""
        return Rollout(self.prompt_ids[index], self.prompt_mask[index], self.completion_ids[index], self.completion_mask[index],
                       self.group)

    def groups(self, keep: torch.Tensor) -> "Rollout":
        """The completions of the groups where ``keep`` (B,) bool is True, in order."""
        return self.rows(keep.to(self.completion_ids.device).repeat_interleave(self.group))


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
           generator: torch.Generator, temperature: float = 1.0, threads: int | str | None = "auto") -> Rollout:
    """G completions for each prompt (token id lists), with a KV cache; rows that have ended are
    dropped from the cache, so a step costs in proportion to the completions still running.
    Tensors live on the model's device; ``generator`` must be on it too. ``threads``: see `decode`."""

    def choose(logits: list[torch.Tensor]) -> tuple[torch.Tensor, None]:
        probs = torch.softmax(logits[0].float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1), None

    return decode([model], prompts, G=G, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, choose=choose,
                  threads=threads)[0]


Choose = Callable[[list[torch.Tensor]], tuple[torch.Tensor, "torch.Tensor | None"]]
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, object], torch.Tensor]


def _model_step(model) -> Step:
    """One decode step through the model's own forward: (input ids (n, 1), 2-D attention mask
    (n, L), position ids (n, 1), cache) -> next-token logits (n, V). Any causal LM."""

    def step(ids, attn, pos, cache):
        return model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True).logits[:, -1]

    return step


def _layer_step(model) -> Step | None:
    """The same step for the Llama-family models of transformers 5 (Llama, Mistral without a
    sliding window, Qwen2, Qwen3, full attention only), with their decoder layers called one by
    one: what the model's own forward does around them (its decorators, output bookkeeping and
    create_causal_mask, about a tenth of a step on a small model) is done here in a few tensor
    operations, and the logits are bit for bit the model's own (`_verified` checks that once per
    model). None for any other model, a subclass, another attention implementation, a model in
    training mode, or one with forward hooks on the two modules this step skips (the model and its
    backbone; the layers and everything in them run through their own forward)."""
    families = llama_family()
    base = getattr(model, "model", None)
    config = model.config
    implementation = getattr(config, "_attn_implementation", None)
    if not families or families.get(type(model)) is not type(base) or implementation not in ("sdpa", "eager", GROUPED_ATTENTION):
        return None
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()) or \
            (type(model).__name__ == "MistralForCausalLM" and config.sliding_window is not None):
        return None
    if model.training or not getattr(config, "is_causal", True) or _has_hooks(model, base):
        return None  # training mode: dropout would make the verification below draw random numbers
    layers = base.layers[:config.num_hidden_layers]

    def step(ids, attn, pos, cache):
        h = base.embed_tokens(ids)  # (n, 1, d)
        rotary = base.rotary_emb(h, pos)
        keep = attn.bool()  # (n, L); a query at the end of its row sees every real token before it
        if implementation != "sdpa":  # eager_mask (eager and grouped): 0 where attended, the dtype's minimum elsewhere
            mask = torch.where(keep, torch.zeros((), device=h.device, dtype=h.dtype), torch.finfo(h.dtype).min)[:, None, None, :]
        else:  # sdpa_mask: no mask at all where no row has padding, as create_causal_mask decides
            mask = None if bool(keep.all()) else keep[:, None, None, :]
        for layer in layers:
            h = layer(h, attention_mask=mask, position_embeddings=rotary, position_ids=pos, past_key_values=cache, use_cache=True)
        return model.lm_head(base.norm(h))[:, -1]

    return step


def _has_hooks(*modules) -> bool:
    """Forward hooks of torch (global or on these modules), or accelerate's (device_map dispatch and
    offloading wrap a module's forward and mark it with _hf_hook)."""
    from torch.nn.modules import module as nn_module

    if any(getattr(nn_module, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook") for m in modules)


_VERIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def _verified(model, step: Step) -> bool:
    """Whether ``step`` gives the model's own logits bit for bit (and the same cache) on two short
    padded rows over three decode steps; once per model and attention implementation."""
    key = getattr(model.config, "_attn_implementation", None)
    if _VERIFIED.get(model, {}).get(key) is None:
        device = next(model.parameters()).device
        V = model.get_input_embeddings().num_embeddings  # token ids the model can read
        ids = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]], device=device) % V
        mask = torch.tensor([[False, False, True, True], [True, True, True, True]], device=device)
        ok = True
        for rows in ([0, 1], [1]):  # padded and unpadded: the two masks of create_causal_mask
            caches = [prefill(model, ids[rows], mask[rows], 1)[1] for _ in range(2)]
            attn, pos = mask[rows].long(), positions(mask[rows])[:, -1:] + 1
            for t in range(3):
                attn = torch.cat([attn, attn.new_ones(len(rows), 1)], 1)
                nxt = (pos + t) % V
                want, got = _model_step(model)(nxt, attn, pos, caches[0]), step(nxt, attn, pos, caches[1])
                ok &= torch.equal(want, got)
                pos = pos + 1
        _VERIFIED.setdefault(model, {})[key] = ok
    return _VERIFIED[model][key]


def _decode_step(model) -> Step:
    """The cheapest step that gives the model's own logits: `_layer_step` where it applies and is
    verified, the model's forward otherwise."""
    step = _layer_step(model)
    return step if step is not None and _verified(model, step) else _model_step(model)


# A decode step whose matrix work (about 2 · parameters · running rows FLOPs) is below this is run
# on one thread: its operations are then too small to split, and each split costs a fork and join
# of the thread pool. Measured on the 2-core benchmark VM with the benchmark's model (0.3M
# parameters, arith prompts, 16 new tokens), one thread (with SDPA) against two (with eager
# attention; `decode_settings`), interleaved: 8 rows (0.005 GFLOP) 10.1 against 11.8 ms, 16 rows
# 12.3 against 13.1, 32 rows 14.1 against 14.2, 64 rows 20.4 against 18.2, 128 rows 33.4 against
# 26.7. (It was 1e8 while the sampler ran SDPA on two threads as well, which was slower at 128
# rows too: 33 against 42 ms.)
SINGLE_THREAD_FLOPS = 2e7


def decode_threads(models: list, rows: int) -> int | None:
    """The intra-op threads for a decode loop over ``rows`` rows on the CPU: 1 where a step is too
    small to split (SINGLE_THREAD_FLOPS), None (torch's setting) otherwise and on accelerators."""
    if next(models[0].parameters()).device.type != "cpu" or torch.get_num_threads() == 1:
        return None
    flops = sum(2 * sum(p.numel() for p in m.parameters()) * rows for m in models)
    return 1 if flops < SINGLE_THREAD_FLOPS else None


@contextmanager
def decode_settings(models: list, prompts: list[list[int]], *, G: int, max_new_tokens: int,
                    threads: int | str | None = "auto"):
    """The threads and the attention a decode over these prompts runs with, both restored on leaving.

    ``threads``: torch's intra-op threads; "auto" picks them by `decode_threads`, None leaves torch's
    setting alone. Attention: on more than one thread, `eager_attention` for each model, by the
    larger of the prefill's (query, key) pairs (B prompts of P tokens: B·P²) and a decode step's (B·G
    rows, one query, at most P + max_new_tokens keys); on one thread the models' own. Measured on the
    2-core VM, the benchmark's 16 prompts × 8 completions: on one thread SDPA was the cheaper (33.8 ms
    against 35.7 for eager; 60.0 against 64.8 at 16 completions a prompt), on two eager attention
    (26 ms, against 33 for SDPA on one thread: SDPA's CPU kernel with a padding mask took 2.5x as
    long on two threads as on one)."""
    if threads == "auto":
        threads = decode_threads(models, len(prompts) * G)
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    P = max((len(p) for p in prompts), default=0)
    pairs = max(len(prompts) * P * P, len(prompts) * G * (P + max_new_tokens))
    try:
        with ExitStack() as stack:
            if torch.get_num_threads() > 1:
                for m in models:
                    stack.enter_context(eager_attention(m, pairs))
            yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@torch.no_grad()
def decode(models: list, prompts: list[list[int]], *, G: int, max_new_tokens: int, eos_id: int, pad_id: int,
           choose: Choose, threads: int | str | None = "auto") -> tuple[Rollout, torch.Tensor]:
    """Decode with several models in lockstep (each with its own KV cache over the same tokens):
    at each step ``choose`` gets every model's next-token logits (n, V) for the n running rows and
    returns the tokens (n,) and, optionally, a per-row flag (n,) bool (e.g. "this position was
    replaced"). Returns the Rollout and the flags (N, T) (False where none were returned).

    ``threads``: torch's intra-op threads while decoding (restored after); "auto" picks them by
    `decode_threads`, None leaves torch's setting alone; the attention follows them (`decode_settings`)."""
    # inference mode: cheaper than no_grad for a loop of small operations (33.3 against 35.0 ms a batch)
    with decode_settings(models, prompts, G=G, max_new_tokens=max_new_tokens, threads=threads), torch.inference_mode():
        rollout, flags = _decode(models, prompts, G=G, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                                 choose=choose)
    # copies made outside inference mode: ordinary tensors, which a training forward may take as inputs
    return Rollout(rollout.prompt_ids.clone(), rollout.prompt_mask.clone(), rollout.completion_ids.clone(),
                   rollout.completion_mask.clone(), group=rollout.group), flags.clone()


def _decode(models: list, prompts: list[list[int]], *, G: int, max_new_tokens: int, eos_id: int, pad_id: int,
            choose: Choose) -> tuple[Rollout, torch.Tensor]:
    device = next(models[0].parameters()).device
    steps = [_decode_step(m) for m in models]
    ids, mask = (x.to(device) for x in _left_pad(prompts, pad_id))
    P = ids.shape[1]
    firsts = [prefill(m, ids, mask, G) for m in models]
    logits, caches = [f[0] for f in firsts], [f[1] for f in firsts]
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
    N = ids.shape[0]
    tokens = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
    alive = torch.zeros((N, max_new_tokens), dtype=torch.bool, device=device)
    flags = torch.zeros((N, max_new_tokens), dtype=torch.bool, device=device)
    rows = torch.arange(N, device=device)  # the rows of the batch still running, in cache order
    # every step's 2-D attention mask at once: the prompt's, then ones; step t reads its first P + t + 1 columns
    attn = torch.cat([mask.long(), mask.new_ones((N, max_new_tokens), dtype=torch.long)], 1)
    next_pos = positions(mask)[:, -1:] + 1  # (n, 1)
    T = 0
    for t in range(max_new_tokens):
        nxt, flag = choose(logits)
        tokens[rows, t] = nxt
        alive[rows, t] = True
        if flag is not None:
            flags[rows, t] = flag
        T = t + 1
        running = nxt != eos_id
        n = int(running.sum())
        if t == max_new_tokens - 1 or n == 0:
            break
        if n < len(rows):  # rows that ended leave the batch (and every cache)
            keep = running.nonzero().squeeze(1)
            for cache in caches:
                cache.batch_select_indices(keep)
            rows, nxt, attn, next_pos = rows[keep], nxt[keep], attn[keep], next_pos[keep]
        logits = [step(nxt.unsqueeze(1), attn[:, :P + t + 1], next_pos, c) for step, c in zip(steps, caches)]
        next_pos = next_pos + 1
    return Rollout(ids, mask, tokens[:, :T], alive[:, :T], group=G), flags[:, :T]


def completion_texts(tokenizer, rollout: Rollout) -> list[str]:
    """The completions as text, without their EOS token (what a verifier reads)."""
    eos = tokenizer.eos_token
    rows = [[t for t, keep in zip(ids, mask) if keep]
            for ids, mask in zip(rollout.completion_ids.tolist(), rollout.completion_mask.tolist())]
    # one batch_decode call: 0.4 ms for the benchmark's 128 completions against 1.0 ms row by row
    return [text.removesuffix(eos) for text in tokenizer.batch_decode(rows)]
