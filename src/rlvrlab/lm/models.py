"""Loading a Hugging Face causal LM and its tokenizer for rlvrlab's trainer, with a clear
one-line refusal of whatever GRPO cannot use."""

from __future__ import annotations

from pathlib import Path

import torch

from rlvrlab import _checks

__all__ = ["load_model", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """'auto' is cuda where available, else cpu; an unavailable accelerator is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        _checks.fail("device", name, "cpu or auto (no CUDA device is available here)")
    if name == "mps" and not torch.backends.mps.is_available():
        _checks.fail("device", name, "cpu or auto (MPS is not available here)")
    return torch.device(name)


def load_model(path: str | Path):
    """(model, tokenizer) from a directory, with clear errors for what GRPO cannot use."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of rlvrlab's own progress

    p = Path(path)
    if not str(path) or not p.is_dir() or not (p / "config.json").exists():
        _checks.fail("model", str(path), "a directory holding a Hugging Face causal LM (config.json, weights, tokenizer)")
    try:
        config = AutoConfig.from_pretrained(p)
        model = AutoModelForCausalLM.from_pretrained(p)
    except (ValueError, OSError, KeyError) as err:
        _checks.fail("model", str(path), f"a causal language model that AutoModelForCausalLM loads ({type(err).__name__}: {err})")
    if not getattr(config, "is_decoder", True) and getattr(config, "is_encoder_decoder", False):
        _checks.fail("model", str(path), "a decoder-only causal LM")
    tokenizer = AutoTokenizer.from_pretrained(p)
    if tokenizer.eos_token_id is None:
        _checks.fail("tokenizer", str(path), "a tokenizer with an EOS token (completions must be able to end)")
    if tokenizer.pad_token_id is None:
        _checks.fail("tokenizer", str(path), "a tokenizer with a pad token (set tokenizer.pad_token, e.g. to the EOS token)")
    return model, tokenizer
