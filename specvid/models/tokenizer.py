"""Byte-level BPE tokenizers for the built-in models, made without a model hub.

Both seed families use a Qwen2 byte-level BPE plus their own special tokens. The random test
models get the bare byte alphabet (no merges); the zoo trains merges on its own corpus and
passes them in. Either way the result is a real `Qwen2Tokenizer` that saves and reloads with
transformers' auto classes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Optional, Sequence

from transformers import Qwen2Tokenizer

# The special tokens each family's processor and chat template rely on, in id order after the
# regular vocabulary.
FAMILY_SPECIAL_TOKENS: dict[str, tuple[str, ...]] = {
    "qwen2_5_vl": (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ),
    "llava_onevision": (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<image>",
        "<video>",
    ),
}


@lru_cache(maxsize=1)
def byte_alphabet() -> tuple[str, ...]:
    """The 256 printable stand-ins GPT-2 style byte-level BPE uses for raw bytes, in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    extra = 0
    chars = {}
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


def build_tokenizer(
    family: str,
    merges: Optional[Sequence[tuple[str, str]]] = None,
    extra_tokens: Iterable[str] = (),
) -> Qwen2Tokenizer:
    """A byte-level BPE tokenizer for `family` with the given merges (none: pure bytes).

    Vocabulary: the 256 byte symbols, then one symbol per merge, then `extra_tokens`, then the
    family's special tokens.
    """
    if family not in FAMILY_SPECIAL_TOKENS:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILY_SPECIAL_TOKENS)}")
    merges = [tuple(m) for m in (merges or ())]
    vocab: dict[str, int] = {}
    for symbol in byte_alphabet():
        vocab[symbol] = len(vocab)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for token in extra_tokens:
        vocab.setdefault(token, len(vocab))
    specials = FAMILY_SPECIAL_TOKENS[family]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(specials)})
    return tokenizer
