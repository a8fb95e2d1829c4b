"""What RLVR changed, token by token: a base model and its RLVR descendant on the same completions.

Teacher-forced over the full vocabulary at every completion position t of a sampled completion
(METHODS.md; π_RL the RLVR model, π_base its base, y_t the sampled token):

    delta_logp   Δlog p = log π_RL(y_t) − log π_base(y_t)                  ("Direction", §B)
    entropy_*    H(π(·)) = −Σ_v π(v) log π(v)
    kl           KL(π_RL ‖ π_base) = Σ_v π_RL(v) (log π_RL(v) − log π_base(v))
    reverse_kl   KL(π_base ‖ π_RL)
    js           ½ KL(π_RL ‖ m) + ½ KL(π_base ‖ m),  m = ½ (π_RL + π_base)

token entropy = (1/N) Σ_i (1/T_i) Σ_t H(π(· | x, y_<t)) over N sampled completions; answer entropy
= −Σ_j p_j log p_j over the distinct extracted answers, unparseable outputs one answer "NA"
("Invisible Leash", §A). The two models must share a tokenizer (`check_pair`).

The full-vocabulary quantities need both models' whole next-token distributions, never (N, T, V)
at once: each model's backbone runs over `prompts_per_chunk` prompts' completions, and the two
distributions are formed `chunk_size` completion positions at a time (`lm.logprobs`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

from rlvrlab import _checks
from rlvrlab.lm.logprobs import CHUNK_ELEMENTS, log_softmax_chunks
from rlvrlab.lm.sampling import Rollout, completion_texts, sample

__all__ = ["answer_entropy", "check_pair", "position_stats", "sample_answers", "token_entropy", "token_stats"]


def check_pair(base, base_tokenizer, rl, rl_tokenizer) -> None:
    """Refuse a pair that does not share one tokenizer and vocabulary (their log-probabilities of the
    same token ids would compare different strings)."""
    vb, vr = base_tokenizer.get_vocab(), rl_tokenizer.get_vocab()
    if vb != vr:
        differ = sorted(set(vb.items()) ^ set(vr.items()))
        _checks.fail("rl tokenizer", f"a vocabulary of {len(vr)} entries, {len(differ)} (token, id) pairs differing from the "
                     f"base's {len(vb)} (e.g. {differ[0]!r})", "a model pair sharing one tokenizer")
    for name in ("eos_token_id", "pad_token_id"):
        if getattr(base_tokenizer, name) != getattr(rl_tokenizer, name):
            _checks.fail(f"rl tokenizer {name}", getattr(rl_tokenizer, name), f"the base's {getattr(base_tokenizer, name)}")
    nb, nr = base.get_output_embeddings().weight.shape[0], rl.get_output_embeddings().weight.shape[0]
    if nb != nr:
        _checks.fail("rl model vocabulary", f"{nr} output logits", f"the base's {nb} (a model pair sharing one vocabulary)")


_STATS = ("delta_logp", "entropy_base", "entropy_rl", "kl", "reverse_kl", "js")


def position_stats(logp_base: torch.Tensor, logp_rl: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-position quantities of the module docstring from two log-distributions (..., V) and
    the sampled tokens (...): each (...)."""
    pb, pr = logp_base.exp(), logp_rl.exp()
    log_m = torch.log(0.5 * (pb + pr))
    y = tokens.unsqueeze(-1)
    return {
        "delta_logp": (logp_rl.gather(-1, y) - logp_base.gather(-1, y)).squeeze(-1),
        "entropy_base": -(pb * logp_base).sum(-1),
        "entropy_rl": -(pr * logp_rl).sum(-1),
        "kl": (pr * (logp_rl - logp_base)).sum(-1),
        "reverse_kl": (pb * (logp_base - logp_rl)).sum(-1),
        "js": 0.5 * (pr * (logp_rl - log_m)).sum(-1) + 0.5 * (pb * (logp_base - log_m)).sum(-1),
    }


def _chunks(rollout: Rollout, prompts: int):
    """Slices of whole groups (the G completions of `prompts` prompts at a time)."""
    step = prompts * rollout.group
    for i in range(0, rollout.completion_ids.shape[0], step):
        s = slice(i, i + step)
        yield s, rollout.rows(s)


@torch.no_grad()
def token_stats(base, rl, rollout: Rollout, *, prompts_per_chunk: int = 8,
                chunk_size: int | None = None) -> dict[str, torch.Tensor]:
    """`position_stats` at every completion token of the rollout: each (N, T), 0 where masked.
    chunk_size positions at a time (default: lm.logprobs.CHUNK_ELEMENTS // V)."""
    N, T = rollout.completion_ids.shape
    chunk_size = chunk_size or max(1, CHUNK_ELEMENTS // base.get_output_embeddings().weight.shape[0])
    out = {k: torch.zeros(N, T) for k in _STATS}
    for s, part in _chunks(rollout, prompts_per_chunk):
        y = part.completion_ids.flatten()
        found = {k: torch.zeros(y.numel(), device=y.device) for k in _STATS}
        for (where, lb), (_, lr) in zip(log_softmax_chunks(base, part, chunk_size=chunk_size),
                                        log_softmax_chunks(rl, part, chunk_size=chunk_size)):
            for k, v in position_stats(lb, lr, y[where]).items():
                found[k][where] = v
        for k, v in found.items():
            out[k][s] = v.view(part.completion_ids.shape).cpu()
    return out


@torch.no_grad()
def token_entropy(model, rollout: Rollout, *, prompts_per_chunk: int = 8, chunk_size: int | None = None) -> float:
    """(1/N) Σ_i (1/T_i) Σ_t H(π(· | x, y_<t)): the mean over completions of their mean token entropy."""
    per = []
    for _, part in _chunks(rollout, prompts_per_chunk):
        H = torch.zeros(part.completion_ids.numel(), device=part.completion_ids.device)
        for where, logp in log_softmax_chunks(model, part, chunk_size=chunk_size):
            H[where] = -(logp.exp() * logp).sum(-1)
        per.append(H.view(part.completion_ids.shape).sum(-1) / part.completion_mask.sum(-1).clamp(min=1))
    return float(torch.cat(per).mean())


def answer_entropy(answers: Sequence[str | None]) -> float:
    """−Σ_j p_j log p_j over the distinct answers (None, an unparseable output, counts as one "NA")."""
    if len(answers) == 0:
        _checks.fail("answers", "an empty list", "at least one sampled answer")
    counts = Counter("NA" if a is None else a for a in answers)
    n = len(answers)
    return -sum(c / n * math.log(c / n) for c in counts.values())


@torch.no_grad()
def sample_answers(model, tokenizer, task, problems: Sequence, n: int, *, max_new_tokens: int, seed: int = 0,
                   temperature: float = 1.0, prompts_per_batch: int = 8) -> dict[str, list]:
    """n completions of each problem: per problem the number correct, the extracted answers (None:
    unparseable), and the texts; plus the Rollouts (for teacher-forced statistics)."""
    _checks.integer("n", n)
    if len(problems) == 0:
        _checks.fail("problems", "none", "at least one problem")
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    correct, answers, texts, rollouts = [], [], [], []
    for i in range(0, len(problems), prompts_per_batch):
        batch = problems[i : i + prompts_per_batch]
        ids = [tokenizer(p.prompt)["input_ids"] for p in batch]
        roll = sample(model, ids, G=n, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                      pad_id=tokenizer.pad_token_id, generator=gen, temperature=temperature)
        out = completion_texts(tokenizer, roll)
        for j, p in enumerate(batch):
            mine = out[j * n : (j + 1) * n]
            texts.append(mine)
            answers.append([task.extract(t) for t in mine])
            correct.append(sum(int(task.verify(t, p)) for t in mine))
        rollouts.append(roll)
    return {"correct": correct, "answers": answers, "texts": texts, "rollouts": rollouts}
