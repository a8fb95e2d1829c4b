"""The base/RLVR pair an analysis compares, and the problems it compares them on.

``model_pair`` returns the directories of a base model and its RLVR descendants: the ones given,
or the tiny base model (rlvrlab.lm.pretrain) and GRPO descendants of it, one per seed, each trained
once into the cache (rlvrlab.lm.trainer.descendant) and found there after. ``evaluation_problems``
draws the problems the comparison is made on, none of which a descendant trained on.

What a descendant trains on (rlvrlab.lm.trainer.GRPOTrainer): it draws ``task.sample(prompts, seed)``,
holds out the first max(1, round(holdout·n)) of the n drawn and trains on the rest (less any prompt
also held out). ``descendant_training_prompts`` repeats that split; the tests check it against the
trainer's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rlvrlab import _checks

__all__ = ["DESCENDANT_HOLDOUT", "DESCENDANT_PROMPTS", "DESCENDANT_SEEDS", "EVALUATION_SEED", "descendant_training_prompts",
           "evaluation_problems", "model_pair"]

DESCENDANT_PROMPTS = 400  # problems each descendant draws: task.sample(400, seed)
DESCENDANT_HOLDOUT = 0.2  # the share of them it holds out (never trains on)
DESCENDANT_SEEDS = (0, 1)  # whose training draws evaluation_problems avoids unless told the seeds (leash's defaults)
EVALUATION_SEED = 10_007  # no descendant trains with this seed
_MAX_DRAW = 64  # evaluation_problems draws at most this many times n (at least 4096) looking for untrained problems

OnTask = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n), as Progress.task


def model_pair(base: str, rl: str, *, task: str, seeds: Sequence[int], steps: int, lr: float, preset: str,
               max_new_tokens: int, on_task: OnTask | None = None) -> tuple[str, dict[str, str]]:
    """(base directory, {label: RLVR model directory}).

    base: a model directory, or "" for the tiny base model (trained once, then cached).
    rl:   a model directory (label "rl"), or "" for GRPO descendants of the base on ``task``, one
          per seed (labels "rl-seed<seed>"), with ``steps``, ``lr``, ``preset``, batches of 64
          completions in groups of 8 over DESCENDANT_PROMPTS problems, DESCENDANT_HOLDOUT of them
          held out (trained once, then cached).
    on_task: reports the progress of whatever is trained here.
    """
    from rlvrlab.lm.pretrain import PretrainConfig, pretrain
    from rlvrlab.lm.trainer import TrainConfig, descendant

    def ticker(description: str, total: int) -> Callable[[int], None] | None:
        return on_task(description, total) if on_task else None

    if not base:
        pc = PretrainConfig()
        base = str(pretrain(pc, on_step=ticker("pretraining the tiny base model (once)", pc.max_steps)))
    if rl:
        return base, {"rl": rl}
    descendants = {}
    for seed in seeds:
        tc = TrainConfig(model=base, task=task, preset=preset, steps=steps, lr=lr, batch_size=64, group=8,
                         prompts=DESCENDANT_PROMPTS, holdout=DESCENDANT_HOLDOUT, max_new_tokens=max_new_tokens,
                         eval_every=steps, checkpoint_every=max(1, steps // 4), seed=seed)
        descendants[f"rl-seed{seed}"] = str(descendant(tc, on_step=ticker(f"GRPO descendant, seed {seed} (once)", tc.steps)))
    return base, descendants


def descendant_training_prompts(task, seed: int, *, prompts: int = DESCENDANT_PROMPTS,
                                holdout: float = DESCENDANT_HOLDOUT) -> set[str]:
    """The prompts a GRPO run on ``task`` with ``seed``, ``prompts`` and ``holdout`` trains on (the
    split of rlvrlab.lm.trainer.GRPOTrainer): its draw task.sample(prompts, seed) less the first
    max(1, round(holdout·n)) of the n drawn, which it holds out."""
    problems = task.sample(prompts, seed=seed)
    n_eval = max(1, int(round(holdout * len(problems))))
    return {p.prompt for p in problems[n_eval:]} - {p.prompt for p in problems[:n_eval]}


def evaluation_problems(task, n: int, *, seeds: Sequence[int] = DESCENDANT_SEEDS) -> list:
    """n problems to compare a pair on, none of which the descendants of ``seeds`` (model_pair's,
    DESCENDANT_PROMPTS problems drawn, DESCENDANT_HOLDOUT held out) trained on: the first n of
    task.sample(·, EVALUATION_SEED) whose prompt is not in a descendant's training set.

    A synthetic task draws them with EVALUATION_SEED, a seed no descendant trains with, and skips the
    few that coincide with a training prompt; a question-answer file gives records in a seeded order
    among those every descendant held out or never drew (with a file of at most DESCENDANT_PROMPTS
    records, about DESCENDANT_HOLDOUT^len(seeds) of it). Raises ValueError when fewer than n are left.
    """
    _checks.integer("problems", n)
    trained = set().union(*(descendant_training_prompts(task, s) for s in seeds))
    m, cap = n, max(_MAX_DRAW * n, 4096)
    while True:
        draw = task.sample(m, seed=EVALUATION_SEED)  # a prefix of every longer draw with this seed
        kept = [p for p in draw if p.prompt not in trained]
        if len(kept) >= n:
            return kept[:n]
        if len(draw) < m or m >= cap:  # the task has no more problems, or too few are untrained
            _checks.fail("problems", n, f"at most {len(kept)} (the problems of {getattr(task, 'name', 'the task')} that "
                                        f"the descendants of seeds {tuple(seeds)} never train on)")
        m = min(2 * m, cap)
