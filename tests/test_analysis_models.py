"""rlvrlab.analysis on real (tiny) models: token statistics, entropies, and the two decoders."""

from __future__ import annotations

import math

import pytest
import torch

from rlvrlab.analysis.decoding import CRITERIA, calibrate, extrapolated_logits, generate
from rlvrlab.analysis.tokens import answer_entropy, check_pair, position_stats, sample_answers, token_entropy, token_stats
from rlvrlab.lm.sampling import Rollout, sample
from rlvrlab.lm.tasks import make_task
from rlvrlab.lm.trainer import load_model


@pytest.fixture(scope="module")
def pair(tiny_base_model):
    """The tiny base model and a perturbed copy standing in for its RLVR descendant."""
    base, tok = load_model(str(tiny_base_model))
    rl, _ = load_model(str(tiny_base_model))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in rl.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return base.eval(), rl.eval(), tok


def _prompts(tok, n=3):
    return [tok(p.prompt)["input_ids"] for p in make_task("add").sample(n, seed=1)]


def _decode(pair, mode, seed=5, G=4, **kw):
    base, rl, tok = pair
    return generate(base, rl, _prompts(tok), mode=mode, G=G, max_new_tokens=12, eos_id=tok.eos_token_id,
                    pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(seed), **kw)


def test_a_model_against_itself_changed_nothing(pair):
    base, _, tok = pair
    roll = sample(base, _prompts(tok), G=4, max_new_tokens=12, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                  generator=torch.Generator().manual_seed(0))
    stats = token_stats(base, base, roll)
    assert torch.equal(stats["delta_logp"], torch.zeros_like(stats["delta_logp"]))
    assert torch.equal(stats["kl"], torch.zeros_like(stats["kl"])) and torch.equal(stats["reverse_kl"], stats["kl"])
    assert float(stats["js"].abs().max()) < 1e-6
    assert torch.equal(stats["entropy_base"], stats["entropy_rl"])


def test_token_stats_against_one_sequence_at_a_time(pair):
    """Each completion alone, unpadded, through a plain forward: the same numbers."""
    base, rl, tok = pair
    roll, _ = _decode(pair, "rl")
    stats = token_stats(base, rl, roll, prompts_per_chunk=2)
    for i in range(roll.completion_ids.shape[0]):
        prompt = roll.prompt_ids[i][roll.prompt_mask[i]]
        comp = roll.completion_ids[i][roll.completion_mask[i]]
        ids = torch.cat([prompt, comp]).unsqueeze(0)
        with torch.no_grad():
            lb = torch.log_softmax(base(input_ids=ids).logits[0, len(prompt) - 1:-1].float(), -1)
            lr = torch.log_softmax(rl(input_ids=ids).logits[0, len(prompt) - 1:-1].float(), -1)
        ref = position_stats(lb, lr, comp)
        for k, v in ref.items():
            torch.testing.assert_close(stats[k][i, : len(comp)], v, rtol=1e-4, atol=1e-5)
            assert float(stats[k][i, len(comp):].abs().sum()) == 0
        # the formulas themselves, written out for one position
        pr, pb = lr[0].exp(), lb[0].exp()
        assert float(ref["kl"][0]) == pytest.approx(sum(float(pr[v] * (lr[0, v] - lb[0, v])) for v in range(len(pr))), rel=1e-4)
    # token entropy: the mean over completions of their mean per-token entropy
    per = (stats["entropy_rl"].sum(-1) / roll.completion_mask.sum(-1)).mean()
    assert token_entropy(rl, roll) == pytest.approx(float(per), rel=1e-5)


def test_answer_entropy_worked_examples():
    # answers 1, 1, 2, unparseable: p = 1/2, 1/4, 1/4 -> 1/2 log 2 + 2 * 1/4 log 4 = 1.5 log 2
    assert answer_entropy(["1", "1", "2", None]) == pytest.approx(1.5 * math.log(2))
    assert answer_entropy([None, None]) == 0.0 and answer_entropy(["7"]) == 0.0
    with pytest.raises(ValueError, match=r"^answers: got 'an empty list'; allowed: at least one sampled answer"):
        answer_entropy([])


def test_extrapolation_with_gamma_zero_is_the_rlvr_model_exactly(pair):
    rl_roll, _ = _decode(pair, "rl")
    for tau in (-0.3, 10.0):
        ex_roll, flags = _decode(pair, "extrapolate", gamma=0.0, tau=tau)
        assert torch.equal(ex_roll.completion_ids, rl_roll.completion_ids)
        assert torch.equal(ex_roll.completion_mask, rl_roll.completion_mask)
    assert bool(flags[ex_roll.completion_mask].all())  # τ = 10 selects every token


def test_extrapolated_logits_are_the_closed_form():
    torch.manual_seed(1)
    lb, lr = torch.randn(3, 9), torch.randn(3, 9)
    out = torch.log_softmax(extrapolated_logits(lb, lr, tau=-0.2, gamma=0.5), -1)
    log_b, log_r = torch.log_softmax(lb, -1), torch.log_softmax(lr, -1)
    delta = log_r - log_b
    raw = torch.where(delta <= -0.2, 1.5 * log_r - 0.5 * log_b, log_r)  # (1+γ) log π_RL − γ log π_base where selected
    torch.testing.assert_close(out, torch.log_softmax(raw, -1))


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_replacement_at_rate_zero_is_base_decoding_exactly(pair, criterion):
    base_roll, _ = _decode(pair, "base")
    base, rl, _ = pair
    stats = token_stats(base, rl, base_roll)
    tau = calibrate(criterion, stats, base_roll.completion_mask, 0.0)
    roll, flags = _decode(pair, "replace", criterion=criterion, tau=tau)
    assert not bool(flags.any())
    assert torch.equal(roll.completion_ids, base_roll.completion_ids)


def test_calibrated_thresholds_select_the_rate(pair):
    base_roll, _ = _decode(pair, "base", G=16)
    base, rl, _ = pair
    stats = token_stats(base, rl, base_roll)
    mask = base_roll.completion_mask
    for criterion in ("delta-logp", "entropy", "kl", "reverse-kl", "js"):
        tau = calibrate(criterion, stats, mask, 0.25)
        key, below = CRITERIA[criterion]
        share = float(((stats[key] <= tau) if below else (stats[key] >= tau))[mask].float().mean())
        assert share == pytest.approx(0.25, abs=0.03), criterion


def test_replacement_samples_from_the_two_stage_distribution(pair):
    """One decoding step, 4000 draws: base draws y; where Δlog p(y) <= τ, y is redrawn from π_RL
    restricted to the base's top 5. The frequencies match q(z) = π_b(z)·1[Δ(z) > τ] + P_sel·π_RL|top5(z)."""
    base, rl, tok = pair
    prompt = _prompts(tok, 1)
    roll, flags = generate(base, rl, prompt, mode="replace", G=4000, max_new_tokens=1, eos_id=tok.eos_token_id,
                           pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(3), criterion="delta-logp",
                           tau=-0.1, candidates=5)
    ids = torch.tensor([prompt[0]])
    with torch.no_grad():
        log_b = torch.log_softmax(base(input_ids=ids).logits[0, -1].float(), -1)
        log_r = torch.log_softmax(rl(input_ids=ids).logits[0, -1].float(), -1)
    pb, pr = log_b.exp(), log_r.exp()
    sel = (log_r - log_b) <= -0.1
    top = torch.zeros_like(pb, dtype=torch.bool).scatter(0, log_b.topk(5).indices, True)
    r_top = torch.where(top, pr, 0) / pr[top].sum()
    q = pb * ~sel + pb[sel].sum() * r_top
    freq = torch.bincount(roll.completion_ids[:, 0], minlength=len(q)).double() / 4000
    se = torch.sqrt(q * (1 - q) / 4000).double()
    assert float(pb[sel].sum()) > 0.05  # the criterion does select
    assert bool(((freq - q.double()).abs() <= 4 * se + 1e-9).all()), (freq, q)
    assert float(flags[:, 0].float().mean()) == pytest.approx(float(pb[sel].sum()), abs=4 * math.sqrt(0.25 / 4000))


def test_sample_answers_counts_what_the_verifier_says(pair):
    base, _, tok = pair
    task = make_task("add")
    problems = task.sample(3, seed=2)
    out = sample_answers(base, tok, task, problems, 5, max_new_tokens=12, seed=0, prompts_per_batch=2)
    assert [len(a) for a in out["answers"]] == [5, 5, 5]
    for p, texts, c, answers in zip(problems, out["texts"], out["correct"], out["answers"]):
        assert c == sum(task.verify(t, p) for t in texts)
        assert answers == [task.extract(t) for t in texts]


def test_pairs_that_do_not_share_a_tokenizer_are_refused(pair, tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlvrlab.lm.tokenizer import char_tokenizer

    base, rl, tok = pair
    other = char_tokenizer("0123456789xyz")
    with pytest.raises(ValueError, match=r"^rl tokenizer: got .a vocabulary of 16 entries, \d+ \(token, id\) pairs "
                                         r"differing from the base's 23 .*allowed: a model pair sharing one tokenizer"):
        check_pair(base, tok, rl, other)
    wider = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match=rf"^rl model vocabulary: got '{len(tok) + 3} output logits'; allowed: the base's"):
        check_pair(base, tok, wider, tok)
    check_pair(base, tok, rl, tok)  # the pair of the fixture shares everything


@pytest.mark.parametrize("kw, message", [
    (dict(mode="beam"), r"^mode: got 'beam'; allowed: base, extrapolate, replace, rl"),
    (dict(mode="replace", criterion="perplexity"), r"^criterion: got 'perplexity'; allowed: delta-logp, entropy, js, kl"),
    (dict(mode="extrapolate", gamma=-0.1), r"^gamma: got -0.1; allowed: a number >= 0"),
    (dict(mode="rl", top_p=0.0), r"^top_p: got 0.0; allowed: a number in \(0, 1\]"),
])
def test_bad_decoding_settings(pair, kw, message):
    with pytest.raises(ValueError, match=message):
        _decode(pair, **kw)
