"""rlvrlab.lm.logprobs: completion log-probabilities and entropies computed a chunk of positions at a
time, against the plain full log-softmax of one forward pass over prompt + completion."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from rlvrlab.analysis.tokens import position_stats, token_entropy, token_stats
from rlvrlab.lm import logprobs
from rlvrlab.lm.logprobs import chunk_positions, length_buckets, log_softmax_chunks, next_token_logprobs, token_logprobs
from rlvrlab.lm.sampling import Rollout

V = 97


def _qwen(seed=0, vocab=V, tie=True):
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # logits of a few nats, not the near-uniform ones of a fresh init
        model.model.embed_tokens.weight.mul_(20)
    return model


def _gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=1, eos_token_id=1)
    return GPT2LMHeadModel(cfg).eval()


class Wrapped(torch.nn.Module):
    """A model that is not a transformers PreTrainedModel (as a PEFT wrapper is not): logprobs falls
    back to its logits."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, **kw):
        return self.inner(**kw)


def _rollout(B, G, P, T, seed, vocab=V) -> Rollout:
    """Random left-padded prompts (1..P tokens) and completions (1..T tokens, the rest masked)."""
    gen = torch.Generator().manual_seed(seed)
    N = B * G
    plen = torch.randint(1, P + 1, (B,), generator=gen).repeat_interleave(G)
    prompt_mask = torch.arange(P) >= (P - plen)[:, None]
    prompt_ids = torch.randint(3, vocab, (B, P), generator=gen).repeat_interleave(G, 0) * prompt_mask
    clen = torch.randint(1, T + 1, (N,), generator=gen)
    clen[0] = T  # the longest completion sets T
    completion_mask = torch.arange(T) < clen[:, None]
    completion_ids = torch.randint(3, vocab, (N, T), generator=gen) * completion_mask
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, group=G)


def _full_log_softmax(model, roll: Rollout) -> torch.Tensor:
    """log π(· | q, o_<t) (N, T, V): one forward over prompt + completion, the log-softmax of all of it."""
    P = roll.prompt_ids.shape[1]
    ids = torch.cat([roll.prompt_ids, roll.completion_ids], 1)
    mask = torch.cat([roll.prompt_mask, roll.completion_mask], 1)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask.long(), position_ids=pos).logits[:, P - 1 : -1]
    return torch.log_softmax(logits.float(), -1)


def _reference(model, roll: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """The unchunked formula: log π(o_t) and the entropy (N, T), 0 where masked."""
    la = _full_log_softmax(model, roll)
    logp = la.gather(-1, roll.completion_ids.unsqueeze(-1)).squeeze(-1) * roll.completion_mask
    with torch.no_grad():
        ent = -(la.exp() * la).sum(-1) * roll.completion_mask
    return logp, ent


SHAPES = [(1, 1, 3, 1), (2, 3, 4, 7), (3, 2, 5, 12), (4, 1, 2, 9)]  # (B, G, P, T)
CHUNKS = [1, 2, 5, 7, 1000, None]  # mostly not dividing the number of completion positions


def test_chunk_positions_cover_every_position_once():
    for n in (0, 1, 7, 30):
        for size in (1, 3, 7, 40):
            chunks = chunk_positions(n, V, size)
            assert [i for c in chunks for i in range(n)[c]] == list(range(n))
            assert all(c.stop - c.start <= size for c in chunks)
    # the default: CHUNK_ELEMENTS // V positions (110 at Qwen2.5's 151,936 tokens), at least one
    assert [c.stop - c.start for c in chunk_positions(300, 151_936)] == [110, 110, 80]
    assert len(chunk_positions(10, 2**25)) == 10
    with pytest.raises(ValueError, match="positive"):
        chunk_positions(5, V, 0)


@pytest.mark.parametrize("make", [_qwen, _gpt2, lambda: Wrapped(_qwen())], ids=["qwen2", "gpt2", "not-split"])
def test_chunked_log_probs_and_entropy_equal_the_full_log_softmax(make):
    model = make()
    for k, (B, G, P, T) in enumerate(SHAPES):
        roll = _rollout(B, G, P, T, seed=k)
        with torch.no_grad():
            ref_logp, ref_ent = _reference(model, roll)
            whole, whole_ent = token_logprobs(model, roll, entropy=True, chunk_size=10**6)
        torch.testing.assert_close(whole, ref_logp, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(whole_ent, ref_ent, atol=1e-5, rtol=1e-5)
        for size in CHUNKS:
            with torch.no_grad():
                logp, ent = token_logprobs(model, roll, entropy=True, chunk_size=size)
            # chunking changes the numbers by rounding only; masked positions are exactly 0
            torch.testing.assert_close(logp, whole, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(ent, whole_ent, atol=1e-6, rtol=1e-6)
            assert (logp[~roll.completion_mask] == 0).all() and (ent[~roll.completion_mask] == 0).all()
            assert token_logprobs(model, roll, chunk_size=size)[1] is None


@pytest.mark.parametrize("make", [_qwen, lambda: _qwen(tie=False), _gpt2, lambda: Wrapped(_qwen())],
                         ids=["qwen2", "qwen2-untied", "gpt2", "not-split"])
def test_gradients_through_chunked_log_probs_equal_the_unchunked_ones(make):
    model = make()
    params = [p for p in model.parameters() if p.requires_grad]
    for k, (B, G, P, T) in enumerate(SHAPES[1:]):
        roll = _rollout(B, G, P, T, seed=10 + k)
        weight = torch.randn(roll.completion_ids.shape, generator=torch.Generator().manual_seed(k))  # a loss's per-token weights
        ref = torch.autograd.grad((_reference(model, roll)[0] * weight).sum(), params)
        one = torch.autograd.grad((token_logprobs(model, roll, chunk_size=10**6)[0] * weight).sum(), params)
        for size in (1, 3, 7):
            logp, ent = token_logprobs(model, roll, entropy=True, chunk_size=size)
            assert logp.requires_grad and not ent.requires_grad  # the entropy is logged, never differentiated
            grads = torch.autograd.grad((logp * weight).sum(), params)
            for g, g1, r in zip(grads, one, ref):
                scale = float(r.abs().max()) + 1e-12
                assert float((g - g1).abs().max()) <= 1e-6 * scale + 1e-9
                assert float((g - r).abs().max()) <= 1e-5 * scale + 1e-9


def test_with_gradients_no_tensor_of_positions_times_vocabulary_is_kept():
    """What autograd saves for the backward outside the checkpointed chunks: the backbone's
    activations and hidden states, never a (positions, V) tensor (the chunks recompute their logits)."""
    vocab, size = 4000, 8
    model = _qwen(vocab=vocab)
    roll = _rollout(2, 4, 4, 16, seed=3, vocab=vocab)
    saved: list[int] = []

    def keep(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        logp, _ = token_logprobs(model, roll, entropy=True, chunk_size=size)
    M = int(roll.completion_mask.sum())
    assert saved and max(saved) < M * vocab // 4  # the embedding and lm_head weight (V·H) aside, all small
    assert max(n for n in saved if n != vocab * 32) < size * vocab
    logp.sum().backward()  # and the backward runs


def test_log_softmax_chunks_are_the_full_distributions_at_completion_positions():
    model = _qwen()
    roll = _rollout(3, 2, 5, 12, seed=4)
    with torch.no_grad():
        full = _full_log_softmax(model, roll).flatten(0, 1)
        for size in (1, 5, None):
            parts = list(log_softmax_chunks(model, roll, chunk_size=size))
            where = torch.cat([w for w, _ in parts])
            assert torch.equal(where, roll.completion_mask.flatten().nonzero().squeeze(1))
            torch.testing.assert_close(torch.cat([lp for _, lp in parts]), full[where], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(next_token_logprobs(model, roll).flatten(0, 1)[where], full[where], atol=1e-5, rtol=1e-5)


def test_token_stats_and_entropy_equal_the_unchunked_formula():
    base, rl = _qwen(seed=0), _qwen(seed=1)
    roll = _rollout(3, 2, 5, 12, seed=5)
    mask = roll.completion_mask
    with torch.no_grad():
        ref = {k: v * mask for k, v in position_stats(_full_log_softmax(base, roll), _full_log_softmax(rl, roll),
                                                      roll.completion_ids).items()}
        for size, prompts in ((1, 1), (5, 2), (7, 8), (None, 8)):
            stats = token_stats(base, rl, roll, prompts_per_chunk=prompts, chunk_size=size)
            assert list(stats) == list(ref)
            for k, v in ref.items():
                torch.testing.assert_close(stats[k], v, atol=1e-5, rtol=1e-5)
            assert float(stats["kl"].max()) > 0.01  # two different models
            per = (ref["entropy_rl"].sum(-1) / mask.sum(-1)).mean()
            assert token_entropy(rl, roll, prompts_per_chunk=prompts, chunk_size=size) == pytest.approx(float(per), rel=1e-5)


# --- completions grouped by length -------------------------------------------------------------


def _groupings(order: list[int], lengths: list[int]):
    """Every split of the rows sorted by length into runs that end where the length changes."""
    cuts = [i for i in range(1, len(order)) if lengths[order[i]] != lengths[order[i - 1]]]
    for mask in range(2 ** len(cuts)):
        ends = [c for k, c in enumerate(cuts) if mask >> k & 1] + [len(order)]
        yield [order[a:b] for a, b in zip([0] + ends[:-1], ends)]


@pytest.mark.parametrize("seed", range(40))
def test_length_buckets_are_the_cheapest_grouping(seed):
    gen = torch.Generator().manual_seed(seed)
    N = int(torch.randint(1, 12, (1,), generator=gen))
    lengths = torch.randint(1, 9, (N,), generator=gen).tolist()
    saving = [0.0, 0.02, 0.05, 0.2, 1.0][seed % 5]
    least = [0, 0, 10, 0, 3][seed // 5 % 5]  # a price in positions too
    groups = length_buckets(lengths, min_saving=saving, min_positions=least)
    assert sorted(i for g in groups for i in g) == list(range(N)) and all(g == sorted(g) for g in groups)
    longest = [max(lengths[i] for i in g) for g in groups]
    assert longest == sorted(longest) and all(min(lengths[i] for i in g) > prev for g, prev in zip(groups[1:], longest))

    def cost(gs):
        return sum(len(g) * max(lengths[i] for i in g) for g in gs) + (len(gs) - 1) * max(saving * N * max(lengths), least)

    order = sorted(range(N), key=lambda i: lengths[i])
    assert cost(groups) == pytest.approx(min(cost(gs) for gs in _groupings(order, lengths)))
    if saving == 0.0 and least == 0:  # free passes: a group per distinct length
        assert len(groups) == len(set(lengths))
    assert length_buckets([], min_saving=saving, min_positions=least) == []


@pytest.mark.parametrize("make", [_qwen, lambda: _qwen(tie=False), _gpt2, lambda: Wrapped(_qwen())],
                         ids=["qwen2", "qwen2-untied", "gpt2", "not-split"])
def test_grouped_passes_give_the_log_probs_entropy_and_gradients_of_one_pass(make, monkeypatch):
    model = make()
    params = [p for p in model.parameters() if p.requires_grad]
    monkeypatch.setattr(logprobs, "BUCKET_MIN_POSITIONS", 0)  # rollouts this small are not grouped by default
    for k, (B, G, P, T) in enumerate([(2, 3, 4, 9), (3, 4, 5, 16), (1, 6, 3, 12)]):
        roll = _rollout(B, G, P, T, seed=20 + k)
        assert len(length_buckets(roll.lengths.tolist(), min_positions=0)) >= 2  # these rollouts are grouped
        weight = torch.randn(roll.completion_ids.shape, generator=torch.Generator().manual_seed(k))
        logp, ent = token_logprobs(model, roll, entropy=True, chunk_size=5)
        grads = torch.autograd.grad((logp * weight).sum(), params)
        with monkeypatch.context() as m:
            m.setattr(logprobs, "BUCKET_MIN_SAVING", math.inf)  # one pass over the batch, as before grouping
            one, one_ent = token_logprobs(model, roll, entropy=True, chunk_size=5)
            one_grads = torch.autograd.grad((one * weight).sum(), params)
            with torch.no_grad():
                ref, ref_ent = _reference(model, roll)
        # the same numbers up to rounding (other batch shapes, other summation orders); masked positions exactly 0
        torch.testing.assert_close(logp, one, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ent, one_ent, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logp, ref, atol=1e-5, rtol=1e-5)
        assert (logp[~roll.completion_mask] == 0).all() and (ent[~roll.completion_mask] == 0).all()
        for g, g1 in zip(grads, one_grads):
            assert float((g - g1).abs().max()) <= 1e-5 * (float(g1.abs().max()) + 1e-12) + 1e-9
        where = torch.cat([w for w, _ in log_softmax_chunks(model, roll, chunk_size=4)])
        assert torch.equal(where, roll.completion_mask.flatten().nonzero().squeeze(1))  # row-major, as documented


def test_small_passes_run_eager_attention_with_the_sdpa_values_and_restore_the_setting(monkeypatch):
    """`attention_for`: a pass with few attention scores runs transformers' eager attention (the
    same function as SDPA up to rounding: log-probs and gradients within 1e-5 of the SDPA pass);
    above the limit, and after the pass, the model's own SDPA setting is in place, an error inside
    included. Which implementation ran is read off the attention functions called."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = _qwen()
    assert model.config._attn_implementation == "sdpa"
    roll = _rollout(3, 2, 5, 12, seed=3)
    N, T = roll.completion_ids.shape
    scores = N * model.config.num_attention_heads * T * (roll.prompt_ids.shape[1] + T)  # per layer
    ran = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", lambda *a, **k: (ran.append("sdpa"), sdpa(*a, **k))[1])
    params = list(model.parameters())
    weight = torch.randn(N, T, generator=torch.Generator().manual_seed(0))
    results = {}
    for limit in (scores, scores - 1):  # eager at the limit, SDPA one score above it
        monkeypatch.setattr(logprobs, "EAGER_ATTENTION_SCORES", limit)
        ran.clear()
        logp, _ = token_logprobs(model, roll)
        results[limit] = (logp, torch.autograd.grad((logp * weight).sum(), params))
        assert bool(ran) == (limit < scores)  # the SDPA function ran only above the limit
        assert model.config._attn_implementation == "sdpa"
    (eager, g_eager), (plain, g_plain) = results[scores], results[scores - 1]
    torch.testing.assert_close(eager, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_eager, g_plain):
        assert float((a - b).abs().max()) <= 1e-5 * (float(b.abs().max()) + 1e-12)
    monkeypatch.setattr(logprobs, "EAGER_ATTENTION_SCORES", scores)
    with pytest.raises(RuntimeError, match="inside"):
        with logprobs.attention_for(model, roll):
            assert model.config._attn_implementation == logprobs.GROUPED_ATTENTION  # the Llama family's eager without copies
            raise RuntimeError("inside")
    assert model.config._attn_implementation == "sdpa"
    gpt2 = _gpt2()
    with logprobs.attention_for(gpt2, roll):  # another family: transformers' own eager attention
        assert gpt2.config._attn_implementation == "eager"
    assert gpt2.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("H,H_kv,q,L", [(4, 2, 1, 7), (4, 2, 5, 9), (6, 3, 4, 4), (4, 4, 3, 6), (8, 1, 1, 5)])
def test_grouped_attention_is_the_llama_familys_eager_attention(H, H_kv, q, L):
    """`grouped_attention` against transformers' eager_attention_forward (repeat_kv, then per-head
    products), with a padding mask and, for several queries, a causal one: outputs and the gradients
    of query, key and value equal to float32 rounding; eager's attention weights are not returned."""
    from transformers.models.llama.modeling_llama import eager_attention_forward

    g = torch.Generator().manual_seed(H * 100 + q * 10 + L)
    n, d = 3, 8
    qs, ks, vs = (torch.randn(n, h, t, d, generator=g, dtype=torch.float64).float().requires_grad_()
                  for h, t in ((H, q), (H_kv, L), (H_kv, L)))
    keep = torch.ones(n, q, L, dtype=torch.bool)
    keep[1, :, :2] = False  # row 1: two padding keys
    keep &= torch.ones(q, L, dtype=torch.bool).tril(L - q)  # query t sees keys up to L - q + t
    mask = torch.where(keep, 0.0, torch.finfo(torch.float32).min)[:, None]  # (n, 1, q, L), eager_mask's form
    module = torch.nn.Module().eval()
    module.num_key_value_groups = H // H_kv
    weight = torch.randn(n, q, H, d, generator=g)
    outs = []
    for fn in (logprobs.grouped_attention, eager_attention_forward):
        out, attn = fn(module, qs, ks, vs, mask, scaling=d ** -0.5)
        outs.append((out, torch.autograd.grad((out * weight).sum(), (qs, ks, vs))))
        assert out.shape == (n, q, H, d) and (attn is None) == (fn is logprobs.grouped_attention)
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)
