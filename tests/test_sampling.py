"""rlvrlab.lm.sampling: the KV-cache sampler against the plain loop it replaced, token for token.

`_reference_decode` is the sampler as it was before its decode loop was made cheaper (issue 12):
one model call per token on a cache that drops the rows that have ended. The sampler must draw
the very same tokens from the same generator state, and leave the generator in the same state,
on every model family it runs (Qwen2, Llama, GPT-2), with and without padding, for one and
several completions per prompt, for completions that end early and ones cut at max_new_tokens.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rlvrlab.lm.logprobs import positions, prefill
from rlvrlab.lm.sampling import Rollout, _left_pad, decode, sample

V, EOS, PAD = 29, 1, 0


@torch.no_grad()
def _reference_decode(models, prompts, *, G, max_new_tokens, eos_id, pad_id, choose):
    """The decode loop of rlvrlab before issue 12, verbatim: the reference the fast loop must match."""
    device = next(models[0].parameters()).device
    ids, mask = (x.to(device) for x in _left_pad(prompts, pad_id))
    firsts = [prefill(m, ids, mask, G) for m in models]
    logits, caches = [f[0] for f in firsts], [f[1] for f in firsts]
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
    N = ids.shape[0]
    tokens = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
    alive = torch.zeros((N, max_new_tokens), dtype=torch.bool, device=device)
    flags = torch.zeros((N, max_new_tokens), dtype=torch.bool, device=device)
    rows = torch.arange(N, device=device)
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


def _boost_eos(model, factor):
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied: one scaling does both
    with torch.no_grad():  # a larger EOS embedding makes completions end at different lengths
        model.get_input_embeddings().weight[EOS] *= factor
    return model.eval()


def _qwen2(seed=0, eos=3.0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD, eos_token_id=EOS,
                      tie_word_embeddings=True)
    return _boost_eos(Qwen2ForCausalLM(cfg), eos)


def _llama(seed=0, eos=3.0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=128, pad_token_id=PAD, eos_token_id=EOS,
                      tie_word_embeddings=True)
    return _boost_eos(LlamaForCausalLM(cfg), eos)


def _gpt2(seed=0, eos=3.0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=V, n_positions=128, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD)
    return _boost_eos(GPT2LMHeadModel(cfg), eos)


MODELS = {"qwen2": _qwen2, "llama": _llama, "gpt2": _gpt2}

PROMPTS = {
    "padded": [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]],
    "unpadded": [[5, 6, 7, 8], [9, 10, 11, 12]],
    "one": [[3, 4, 5, 6, 7]],
}


def _same(a: tuple[Rollout, torch.Tensor], b: tuple[Rollout, torch.Tensor]) -> None:
    (ra, fa), (rb, fb) = a, b
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"):
        assert torch.equal(getattr(ra, name), getattr(rb, name)), name
    assert ra.group == rb.group and torch.equal(fa, fb)


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("prompts", sorted(PROMPTS))
@pytest.mark.parametrize("G,max_new_tokens,temperature,eos", [(3, 12, 1.0, 3.0), (1, 5, 0.7, 3.0), (4, 1, 1.0, 3.0),
                                                              (5, 40, 1.0, 6.0), (2, 9, 1.5, 0.0)])
def test_sample_draws_the_reference_loops_tokens(family, prompts, G, max_new_tokens, temperature, eos):
    # eos = 0 zeroes the EOS embedding (its logit is 0 everywhere); 3 and 6 make it likelier
    model = MODELS[family](eos=eos)
    gen, ref_gen = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)

    def reference_choose(logits):
        probs = torch.softmax(logits[0].float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=ref_gen).squeeze(1), None

    kw = dict(G=G, max_new_tokens=max_new_tokens, eos_id=EOS, pad_id=PAD)
    want = _reference_decode([model], PROMPTS[prompts], choose=reference_choose, **kw)
    got = sample(model, PROMPTS[prompts], generator=gen, temperature=temperature, **kw)
    _same((got, torch.zeros_like(got.completion_mask)), want)
    assert torch.equal(gen.get_state(), ref_gen.get_state())  # the same draws, no more, no fewer


def _choose(gen, eos_rate=0.0):
    """Draw from the mean of the models' logits; then, with probability eos_rate, end the row; flag
    the positions where the models' argmaxes agree."""

    def choose(logits):
        mixed = torch.softmax(torch.stack(logits).mean(0).float(), -1)
        y = torch.multinomial(mixed, 1, generator=gen).squeeze(1)
        y = torch.where(torch.rand(y.shape, generator=gen) < eos_rate, EOS, y)
        return y, logits[0].argmax(-1) == logits[-1].argmax(-1)

    return choose


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("n_models", [1, 2])
def test_decode_matches_the_reference_loop_when_every_row_ends_early(family, n_models):
    # every row ends at its own step, all of them before max_new_tokens: the loop stops early
    models = [MODELS[family](seed=s) for s in range(n_models)]
    kw = dict(G=6, max_new_tokens=60, eos_id=EOS, pad_id=PAD)
    want = _reference_decode(models, PROMPTS["padded"], choose=_choose(torch.Generator().manual_seed(2), 0.2), **kw)
    got = decode(models, PROMPTS["padded"], choose=_choose(torch.Generator().manual_seed(2), 0.2), **kw)
    _same(got, want)
    lengths = want[0].lengths
    assert lengths.max() < 60 and len(set(lengths.tolist())) > 5
    if n_models == 2:
        assert want[1].any() and not want[1].all()
