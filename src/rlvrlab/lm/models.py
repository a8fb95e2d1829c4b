"""Loading a Hugging Face causal LM and its tokenizer for rlvrlab's trainer, with a clear
one-line refusal of whatever GRPO cannot use: a directory without the tokenizer's files, weights
that do not load, a model that is not causal (an encoder-decoder, a masked LM such as BERT), and
prompts the tokenizer cannot encode."""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path

import torch

from rlvrlab import _checks

__all__ = ["check_prompts", "load_model", "resolve_device"]

# Any one of these beside config.json is a tokenizer transformers can load; without them
# AutoTokenizer falls back to an empty one whose prompts encode to nothing.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                    "spiece.model", "sentencepiece.bpe.model")


def resolve_device(name: str) -> torch.device:
    """'auto' is cuda where available, else cpu; an unavailable accelerator is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        _checks.fail("device", name, "cpu or auto (no CUDA device is available here)")
    if name == "mps" and not torch.backends.mps.is_available():
        _checks.fail("device", name, "cpu or auto (MPS is not available here)")
    return torch.device(name)


def _short(err: BaseException, path: Path) -> str:
    """A library's error as a short clause: its first line, the directory named once, at most 120 characters."""
    text = (str(err).strip().splitlines() or [""])[0].replace(str(path), "it")
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def load_model(path: str | Path):
    """(model, tokenizer) from a directory, with clear errors for what GRPO cannot use."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of rlvrlab's own progress

    p = Path(path)
    if not str(path) or not p.is_dir() or not (p / "config.json").exists():
        _checks.fail("model", str(path), "a directory holding a Hugging Face causal LM (config.json, weights, tokenizer)")
    if not any((p / f).exists() for f in _TOKENIZER_FILES):
        _checks.fail("model", str(path), "a directory with the tokenizer's files beside the weights (tokenizer.json or "
                     "tokenizer_config.json; save them with tokenizer.save_pretrained)")
    try:
        config = AutoConfig.from_pretrained(p)
    except Exception as err:  # any library failure here is a directory we cannot use
        _checks.fail("model", str(path), f"a readable config.json ({_short(err, p)})")
    if getattr(config, "is_encoder_decoder", False):
        _checks.fail("model", str(path), f"a decoder-only causal LM (this is an encoder-decoder, model type {config.model_type!r})")
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        _checks.fail("model", str(path), f"a causal LM (transformers has no causal-LM class for model type {config.model_type!r})")
    prev = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # BERT's "add is_decoder=True" advice: refused below with our own words
    try:
        model = AutoModelForCausalLM.from_pretrained(p)
    except Exception as err:  # truncated or mismatched weights raise many kinds (SafetensorError, OSError, RuntimeError)
        _checks.fail("model", str(path), f"weights that load ({_short(err, p)})")
    finally:
        hf_logging.set_verbosity(prev)
    _check_causal(model, str(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(p)
    except Exception as err:
        _checks.fail("tokenizer", str(path), f"a tokenizer that loads ({_short(err, p)})")
    if len(tokenizer) < 3:
        _checks.fail("tokenizer", str(path), f"a tokenizer with a vocabulary (this one has {len(tokenizer)} tokens)")
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        _checks.fail("tokenizer", str(path), f"the model's own tokenizer ({len(tokenizer)} tokens, but the model embeds {vocab})")
    if tokenizer.eos_token_id is None:
        _checks.fail("tokenizer", str(path), "a tokenizer with an EOS token (completions must be able to end)")
    if tokenizer.pad_token_id is None:
        _checks.fail("tokenizer", str(path), "a tokenizer with a pad token (set tokenizer.pad_token, e.g. to the EOS token)")
    return model, tokenizer


def _check_causal(model, path: str) -> None:
    """Sampling needs a prediction at each position that ignores the tokens after it. Two inputs
    that differ only in their last token must give the same logits at the first position; a masked
    LM (BERT loaded as BertLMHeadModel without is_decoder) attends both ways and fails this."""
    V = model.get_input_embeddings().num_embeddings
    if V < 3:
        _checks.fail("model", path, f"a language model with a vocabulary (this one embeds {V} tokens)")
    ids = torch.tensor([[1, 1], [1, 2]])
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()  # (2, 2, V)
    except Exception as err:
        _checks.fail("model", path, f"a causal LM whose forward pass runs ({_short(err, Path(path))})")
    scale = float(logits[0, 0].abs().max()) + 1.0
    if not torch.allclose(logits[0, 0], logits[1, 0], rtol=0, atol=1e-4 * scale):
        _checks.fail("model", path, f"a causal LM ({type(model).__name__} reads later tokens to predict earlier ones, "
                     "as a masked LM such as BERT does)")


def check_prompts(tokenizer, prompts: list[str], *, name: str) -> None:
    """Refuse an empty prompt, or one the tokenizer cannot encode: decode(encode(p)) must give p back,
    up to what the tokenizer normalizes on purpose (its normalizer, e.g. Unicode or lowercasing;
    whitespace it adds or changes, e.g. a BPE's add_prefix_space). Names the first prompt that
    fails and the characters it loses (a character tokenizer maps unknown characters to <unk>, which
    decoding drops: "What is 1+2?" would silently become "1+2")."""
    for i, p in enumerate(prompts):
        where = name if len(prompts) == 1 else f"{name} (prompt {i + 1} of {len(prompts)})"
        if not isinstance(p, str) or not p.strip():
            _checks.fail(where, p, "a non-empty prompt")
        ids = tokenizer(p)["input_ids"]
        back = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) if ids else ""
        if not ids or not _same_text(back, p, tokenizer):
            lost = sorted((Counter(p) - Counter(back)).keys())
            shown = ", ".join(repr(c) for c in lost) if lost else "none, but they change"
            _checks.fail(where, p, f"text the model's tokenizer can encode (it reads back as {back!r}; characters lost: {shown})")


def _same_text(back: str, prompt: str, tokenizer) -> bool:
    """Equal up to the tokenizer's own normalizer, Unicode NFKC and whitespace the tokenizer adds
    (a BPE's prefix space, WordPiece's spaces around punctuation), never whitespace it drops."""
    candidates = {prompt, unicodedata.normalize("NFKC", prompt)}
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    if normalizer is not None:
        candidates.add(normalizer.normalize_str(prompt))
    return any(_adds_whitespace_only(back, c) for c in candidates)


def _adds_whitespace_only(back: str, text: str) -> bool:
    """Whether ``back`` is ``text`` with its whitespace changed or added, but no word boundary lost."""
    pieces, i = back.split(), 0
    for word in text.split():
        joined = ""
        while len(joined) < len(word) and i < len(pieces):
            joined, i = joined + pieces[i], i + 1
        if joined != word:
            return False
    return i == len(pieces)
