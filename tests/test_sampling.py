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
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

from rlvrlab.lm.logprobs import positions, prefill
from rlvrlab.lm import sampling
from rlvrlab.lm.sampling import Rollout, _left_pad, decode, sample

V, EOS, PAD = 29, 1, 0


def _reference_decode(models, prompts, *, G, max_new_tokens, eos_id, pad_id, choose):
    """The reference loop under the threads and attention the sampler runs with (`decode_settings`;
    `test_the_sampler_runs_eager_attention_where_the_scores_are_few` checks the choice)."""
    with sampling.decode_settings(models, prompts, G=G, max_new_tokens=max_new_tokens):
        return _plain_loop(models, prompts, G=G, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, choose=choose)


@torch.no_grad()
def _plain_loop(models, prompts, *, G, max_new_tokens, eos_id, pad_id, choose):
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


def _qwen3(seed=0, eos=3.0):
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, max_position_embeddings=128, pad_token_id=PAD, eos_token_id=EOS,
                      tie_word_embeddings=True)
    return _boost_eos(Qwen3ForCausalLM(cfg), eos)


def _mistral(seed=0, eos=3.0, sliding_window=None):
    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD, eos_token_id=EOS,
                        tie_word_embeddings=True, sliding_window=sliding_window)
    return _boost_eos(MistralForCausalLM(cfg), eos)


def _gpt2(seed=0, eos=3.0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=V, n_positions=128, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD)
    return _boost_eos(GPT2LMHeadModel(cfg), eos)


MODELS = {"qwen2": _qwen2, "qwen3": _qwen3, "llama": _llama, "mistral": _mistral, "gpt2": _gpt2}
FAST = {"qwen2", "qwen3", "llama", "mistral"}  # the families whose decoder layers the sampler calls itself

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
    # the loop runs in inference mode; what it returns are ordinary tensors, which a training forward can take
    assert not any(getattr(got, n).is_inference() for n in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"))


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


# --- the decode step -----------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(MODELS))
def test_the_layer_step_serves_the_llama_family_and_the_models_own_forward_the_rest(family):
    model = MODELS[family]()
    step = sampling._layer_step(model)
    assert (step is not None) == (family in FAST)
    if step is not None:
        assert sampling._verified(model, step)


@pytest.mark.parametrize("family", sorted(FAST))
def test_the_layer_step_gives_the_models_own_logits_bit_for_bit(family):
    # eager and sdpa attention; rows with and without padding; rows leaving the batch between steps
    for implementation in ("sdpa", "eager"):
        model = MODELS[family]()
        model.set_attn_implementation(implementation)
        step = sampling._layer_step(model)
        ids, mask = _left_pad(PROMPTS["padded"], PAD)
        ref, fast = (prefill(model, ids, mask, 2)[1] for _ in range(2))
        attn, pos, nxt = mask.repeat_interleave(2, 0).long(), positions(mask.repeat_interleave(2, 0))[:, -1:] + 1, None
        for t in range(6):
            if t == 3:  # rows 1 and 4 end
                keep = torch.tensor([0, 2, 3, 5])
                ref.batch_select_indices(keep), fast.batch_select_indices(keep)
                attn, pos = attn[keep], pos[keep]
            attn = torch.cat([attn, attn.new_ones(len(attn), 1)], 1)
            nxt = (pos * 7 + t) % V
            want = sampling._model_step(model)(nxt, attn, pos, ref)
            assert torch.equal(step(nxt, attn, pos, fast), want), (implementation, t)
            pos = pos + 1
        for a, b in zip(ref.layers, fast.layers):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_models_the_layer_step_would_get_wrong_get_their_own_forward():
    assert sampling._layer_step(_mistral(sliding_window=4)) is None  # a sliding-window mask
    model = _qwen2()
    handle = model.model.register_forward_hook(lambda module, args, out: None)  # a hook on a module the step skips
    assert sampling._layer_step(model) is None
    handle.remove()
    assert sampling._layer_step(model) is not None
    model._hf_hook = object()  # what accelerate's dispatch (device_map, offloading) leaves on a module whose forward it wraps
    assert sampling._layer_step(model) is None
    del model._hf_hook
    model.train()  # dropout would draw random numbers in the check
    assert sampling._layer_step(model) is None

    class Scaled(Qwen2ForCausalLM):  # a subclass may change forward
        pass

    assert sampling._layer_step(Scaled(model.config)) is None


def test_a_step_that_fails_verification_is_not_used(monkeypatch):
    model = _qwen2()

    def wrong(model):
        def step(ids, attn, pos, cache):
            return sampling._model_step(model)(ids, attn, pos, cache) + 1e-6
        return step

    monkeypatch.setattr(sampling, "_layer_step", wrong)
    assert sampling._decode_step(model).__qualname__.startswith("_model_step")
    gen, ref_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = sample(model, PROMPTS["padded"], G=2, max_new_tokens=8, eos_id=EOS, pad_id=PAD, generator=gen)

    def reference_choose(logits):
        return torch.multinomial(torch.softmax(logits[0].float(), -1), 1, generator=ref_gen).squeeze(1), None

    want = _reference_decode([model], PROMPTS["padded"], G=2, max_new_tokens=8, eos_id=EOS, pad_id=PAD, choose=reference_choose)
    _same((got, torch.zeros_like(got.completion_mask)), want)


# --- threads while decoding ------------------------------------------------------------------------


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_small_decode_steps_run_on_one_thread_and_the_setting_comes_back(two_threads):
    model = _qwen2()  # 2 · ~30k parameters · 15 rows: far below SINGLE_THREAD_FLOPS
    assert sampling.decode_threads([model], 15) == 1
    big = int(sampling.SINGLE_THREAD_FLOPS / (2 * sum(p.numel() for p in model.parameters()))) + 1
    assert sampling.decode_threads([model], big) is None and sampling.decode_threads([model, model], big // 2 + 1) is None
    seen = []

    def choose(gen):
        inner = _choose(gen)

        def spy(logits):
            seen.append(torch.get_num_threads())
            return inner(logits)
        return spy

    kw = dict(G=5, max_new_tokens=10, eos_id=EOS, pad_id=PAD)
    auto = decode([model], PROMPTS["padded"], choose=choose(torch.Generator().manual_seed(4)), **kw)
    assert set(seen) == {1} and torch.get_num_threads() == 2
    seen.clear()
    kept = decode([model], PROMPTS["padded"], choose=choose(torch.Generator().manual_seed(4)), threads=None, **kw)
    assert set(seen) == {2} and torch.get_num_threads() == 2
    _same(auto, kept)  # the same tokens either way (the same kernels, split over fewer threads)

    def failing(logits):
        raise RuntimeError("a choose that fails")

    with pytest.raises(RuntimeError, match="fails"):
        decode([model], PROMPTS["padded"], choose=failing, threads=1, **kw)
    assert torch.get_num_threads() == 2


# --- attention while decoding -----------------------------------------------------------------------


def test_the_sampler_runs_eager_attention_where_the_scores_are_few(monkeypatch, two_threads):
    """`decode_settings`: on the CPU, on more than one thread, a model that runs SDPA decodes with
    transformers' eager attention where heads · (query, key) pairs (the larger of the prefill's B·P²
    and a step's B·G·(P + max_new_tokens)) is at most EAGER_ATTENTION_SCORES, and with SDPA one score
    above, and on one thread with SDPA; the logits are SDPA's up to rounding (1e-5), and the model's
    setting comes back after the decode, after an error too. Which implementation ran is read off
    the attention functions called."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from rlvrlab.lm import logprobs

    model = _qwen2()
    assert model.config._attn_implementation == "sdpa"
    prompts, G, T = PROMPTS["padded"], 3, 6
    P = max(len(p) for p in prompts)
    scores = model.config.num_attention_heads * max(len(prompts) * P * P, len(prompts) * G * (P + T))
    ran = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", lambda *a, **k: (ran.append("sdpa"), sdpa(*a, **k))[1])
    kw = dict(G=G, max_new_tokens=T, eos_id=EOS, pad_id=PAD)
    logits = {}
    for limit in (scores, scores - 1):  # eager at the limit, SDPA one score above it
        monkeypatch.setattr(logprobs, "EAGER_ATTENTION_SCORES", limit)
        ran.clear()
        seen = logits.setdefault(limit, [])

        def greedy(step_logits, seen=seen):  # the same tokens both ways unless two logits tie to 1e-5
            seen.append(step_logits[0])
            return step_logits[0].argmax(-1), None

        decode([model], prompts, choose=greedy, threads=None, **kw)  # on the fixture's two threads
        assert bool(ran) == (limit < scores)  # the SDPA function ran only above the limit
        assert model.config._attn_implementation == "sdpa"
    eager, plain = logits[scores], logits[scores - 1]
    assert len(eager) == len(plain) == T
    for a, b in zip(eager, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    def failing(step_logits):
        assert model.config._attn_implementation == logprobs.GROUPED_ATTENTION  # Qwen2: the Llama family's eager, grouped
        raise RuntimeError("a choose that fails")

    monkeypatch.setattr(logprobs, "EAGER_ATTENTION_SCORES", scores)
    with pytest.raises(RuntimeError, match="fails"):
        decode([model], prompts, choose=failing, threads=None, **kw)
    assert model.config._attn_implementation == "sdpa"
    ran.clear()
    decode([model], prompts, choose=greedy, threads=1, **kw)  # one thread: SDPA, under the limit too
    assert ran and model.config._attn_implementation == "sdpa" and torch.get_num_threads() == 2


def test_completion_texts_decode_each_rows_tokens_without_the_eos():
    """One batch_decode over the masked tokens, against decoding row by row (the code it replaced):
    rows of every length, ended by EOS or cut, an empty one, and a mask that is not a prefix."""
    from rlvrlab.lm.sampling import completion_texts
    from rlvrlab.lm.tokenizer import char_tokenizer

    tok = char_tokenizer("0123456789+-*= ")
    eos, g = tok.eos_token_id, torch.Generator().manual_seed(3)
    ids = torch.randint(3, len(tok), (9, 7), generator=g)
    lengths = torch.tensor([0, 1, 3, 7, 7, 5, 2, 6, 4])
    mask = torch.arange(7) < lengths[:, None]
    ids[[2, 4, 5], lengths[[2, 4, 5]] - 1] = eos  # three rows end with EOS, the others are cut
    mask[8] = torch.tensor([True, False, True, True, False, True, False])
    roll = Rollout(torch.zeros(9, 1, dtype=torch.long), torch.ones(9, 1, dtype=torch.bool), ids, mask)
    want = [tok.decode(row[m]).removesuffix(tok.eos_token) for row, m in zip(ids, mask)]
    assert completion_texts(tok, roll) == want
    assert want[0] == "" and all(tok.eos_token not in w for w in want) and len(want[3]) == 7
