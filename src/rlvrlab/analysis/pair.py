"""The base/RLVR pair an analysis compares, and the problems it compares them on.

``model_pair`` returns the directories of a base model and its RLVR descendants: the ones given,
or the tiny base model (rlvrlab.lm.pretrain) and GRPO descendants of it, one per seed, each trained
once into the cache (rlvrlab.lm.trainer.descendant) and found there after. ``evaluation_problems``
draws the problems the comparison is made on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["DESCENDANT_PROMPTS", "EVALUATION_SEED", "evaluation_problems", "model_pair"]

DESCENDANT_PROMPTS = 400  # problems each descendant trains on: task.sample(400, seed)
EVALUATION_SEED = 10_007  # no descendant trains with this seed

OnTask = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n), as Progress.task


def model_pair(base: str, rl: str, *, task: str, seeds: Sequence[int], steps: int, lr: float, preset: str,
               max_new_tokens: int, on_task: OnTask | None = None) -> tuple[str, dict[str, str]]:
    """(base directory, {label: RLVR model directory}).

    base: a model directory, or "" for the tiny base model (trained once, then cached).
    rl:   a model directory (label "rl"), or "" for GRPO descendants of the base on ``task``, one
          per seed (labels "rl-seed<seed>"), with ``steps``, ``lr``, ``preset``, batches of 64
          completions in groups of 8 over DESCENDANT_PROMPTS problems (trained once, then cached).
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
                         prompts=DESCENDANT_PROMPTS, max_new_tokens=max_new_tokens, eval_every=steps,
                         checkpoint_every=max(1, steps // 4), seed=seed)
        descendants[f"rl-seed{seed}"] = str(descendant(tc, on_step=ticker(f"GRPO descendant, seed {seed} (once)", tc.steps)))
    return base, descendants


def evaluation_problems(task, n: int) -> list:
    """n problems to compare a pair on. A synthetic task draws them with EVALUATION_SEED, a seed no
    descendant trains with (so they coincide with training prompts only by chance); a
    question-answer file gives its first n records, which its descendants may have trained on
    (they draw DESCENDANT_PROMPTS records) unless the file holds many more."""
    from rlvrlab.lm.tasks import QATask

    if isinstance(task, QATask):
        return task.problems[:n]
    return task.sample(n, seed=EVALUATION_SEED)
