"""A character-level tokenizer, built locally with Hugging Face `tokenizers` (nothing downloaded).

Every character of the tasks' alphabets is one token; `<pad>`, `<eos>` and `<unk>` are special.
The result is a `transformers.PreTrainedTokenizerFast`, saved with `save_pretrained` next to the
model, so any Hugging Face code loads the pair as it would a hub checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlvrlab import _checks

__all__ = ["SPECIAL", "char_tokenizer"]

SPECIAL = ("<pad>", "<eos>", "<unk>")


def char_tokenizer(alphabet: Iterable[str]) -> PreTrainedTokenizerFast:
    """A tokenizer with one token per character of ``alphabet`` (sorted) after the special tokens."""
    chars = sorted(set("".join(alphabet)))
    if not chars:
        _checks.fail("alphabet", "no characters", "at least one character")
    if any(len(c) != 1 for c in chars):
        _checks.fail("alphabet", chars, "single characters")
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for c in chars:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   padding_side="left")
