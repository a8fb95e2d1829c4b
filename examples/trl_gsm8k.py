"""GRPO on GSM8K-format data with TRL, watched by rlvrlab's Gradient-Gap monitor.

One GPU:      accelerate launch examples/trl_gsm8k.py --model_name_or_path MODEL --data train.jsonl \\
                  --output_dir runs/gsm8k --bf16 true
Several GPUs: accelerate launch --num_processes 8 examples/trl_gsm8k.py ...  (DDP; or --config_file
              for DeepSpeed / FSDP, where η is not measured: see rlvrlab.integrations.trl)
On a CPU:     python examples/trl_gsm8k.py --model_name_or_path DIR --data train.jsonl --output_dir runs/x --use_cpu true

--data is a .jsonl or .parquet file of records {"question": ..., "answer": "... #### 42"} (GSM8K's
format; a \\boxed{} or bare answer works too; other keys with --question_key / --answer_key). The
reward is 1 when the completion's final answer (after ####, in \\boxed{}, or its last number)
equals the reference, mathematically (math-verify), else 0: the binary verifiable reward of the
theory. Every GRPOConfig option is a flag (--learning_rate, --num_generations,
--per_device_train_batch_size, --max_completion_length, --report_to tensorboard, ...), and so is
every GapConfig option (--gap_schedule gap-adaptive, --gap_alpha 0.1, --gap_every 2, ...).

The settings of the paper's GSM8K run (§6.2): 4 prompts × 4 completions per step, lr 5e-6,
completions of at most 256 tokens, no KL, 20% of the questions held out:
    --per_device_train_batch_size 16 --num_generations 4 --learning_rate 5e-6 \\
    --max_completion_length 256 --beta 0 --eval_fraction 0.2 --eval_strategy steps --eval_steps 100
(per_device_train_batch_size counts completions: 16 = 4 prompts × 4, on one GPU).

What to watch (README, "TRL"): gap/crit_ratio (> 1: the learning rate is past the critical step),
gap/log_odds_change (< 0: the step made success less likely), gap/M against the reward, and
gap/zero_variance_groups (groups that teach nothing).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from datasets import Dataset
from trl import GRPOConfig, TrlParser

from rlvrlab.integrations.trl import GapConfig, GapGRPOTrainer
from rlvrlab.lm.tasks import Problem, load_qa

INSTRUCTION = "Solve the problem step by step, then give the final answer after '####'."


@dataclass
class ExampleArgs:
    model_name_or_path: str = field(metadata={"help": "a Hugging Face causal LM: a local directory or a hub name"})
    data: str = field(metadata={"help": "a .jsonl or .parquet file of question-answer records (GSM8K format)"})
    question_key: str = field(default="question", metadata={"help": "the records' question field"})
    answer_key: str = field(default="answer", metadata={"help": "the records' answer field"})
    eval_fraction: float = field(default=0.0, metadata={"help": "hold this share of the questions out as eval_dataset"})
    instruction: str = field(default=INSTRUCTION, metadata={"help": "appended to each question"})


def prompts(problems: list[Problem], instruction: str, chat: bool) -> Dataset:
    """A TRL dataset: the prompt (a chat turn when the tokenizer has a chat template) and the answer."""
    text = [f"{p.prompt}\n{instruction}".rstrip() + "\n" for p in problems]
    prompt = [[{"role": "user", "content": t}] for t in text] if chat else text
    return Dataset.from_dict({"prompt": prompt, "answer": [p.answer for p in problems]})


def main(argv: list[str] | None = None) -> GapGRPOTrainer:
    script, grpo, gap = TrlParser((ExampleArgs, GRPOConfig, GapConfig)).parse_args_and_config(argv)
    if not 0 <= script.eval_fraction < 1:
        raise SystemExit(f"eval_fraction: got {script.eval_fraction}; allowed: a fraction in [0, 1)")
    task = load_qa(script.data, question_key=script.question_key, answer_key=script.answer_key)

    def correct(completions, answer, **kwargs) -> list[float]:
        """1.0 when the completion's final answer equals the reference (math-verify), else 0.0."""
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(task.verify(t, Problem("", a))) for t, a in zip(texts, answer)]

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(script.model_name_or_path)
    problems = list(task.problems)
    random.Random(grpo.seed).shuffle(problems)
    n_eval = int(round(script.eval_fraction * len(problems)))
    chat = tokenizer.chat_template is not None
    trainer = GapGRPOTrainer(
        model=script.model_name_or_path, reward_funcs=correct, args=grpo, processing_class=tokenizer,
        train_dataset=prompts(problems[n_eval:], script.instruction, chat),
        eval_dataset=prompts(problems[:n_eval], script.instruction, chat) if n_eval else None,
        gap=gap)
    trainer.train()
    trainer.save_model(grpo.output_dir)
    if trainer.accelerator.is_main_process and trainer.gap_history:
        last = trainer.gap_history[-1]
        print(f"done: {trainer.state.global_step} steps; gap/M {last['gap/M']:.4g}, last gap/crit_ratio "
              f"{last['gap/crit_ratio']:.3g}; every step's gap/* values: {grpo.output_dir}/gap_metrics.parquet")
    return trainer


if __name__ == "__main__":
    main()
