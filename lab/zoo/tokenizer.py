"""A small byte-level BPE for the zoo models, trained on the ShapesWorld corpus.

Training uses the same normalizer, pre-tokenizer regex and byte mapping as transformers'
`Qwen2Tokenizer`, so the learnt merges apply inside exactly the pieces that tokenizer produces.
The merges then go to `specvid.models.tokenizer.build_tokenizer`, which adds each family's
special tokens. The corpus uses about 160 distinct words, so a vocabulary of a few hundred
merges turns nearly every word, with its leading space, into one token; an anchor word is then
one token, which keeps per-token anchor marking exact.
"""

from __future__ import annotations

import json
from typing import Sequence

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from specvid.models.tokenizer import build_tokenizer
from specvid.shapesworld.language import build_corpus
from specvid.shapesworld.world import split_seeds

# A ceiling: the corpus saturates (every word one symbol) at roughly 500 merges.
DEFAULT_VOCAB_SIZE = 800
DEFAULT_CORPUS_CLIPS = 2000
# Text the families' chat templates put around every prompt (special tokens aside), once per
# clip, so role names become single tokens instead of byte runs.
CHAT_TEXTS: tuple[str, ...] = ("system\nYou are a helpful assistant.", "user\n", "assistant\n")

Merge = tuple[str, str]


def _qwen2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Mirrors Qwen2Tokenizer.__init__; merges learnt on other splits would never fire there.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def train_merges(corpus: Sequence[str], vocab_size: int) -> list[Merge]:
    """BPE merges learnt on `corpus`; `vocab_size` counts the 256 byte symbols plus the merges.

    Training stops early once every word is a single symbol, so a small corpus can yield fewer
    merges than asked for.
    """
    if vocab_size <= 256:
        raise ValueError(f"vocab_size must exceed the 256 byte symbols, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = _qwen2_pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    # Older tokenizers releases store a merge as "left right", newer ones as [left, right].
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def train_zoo_tokenizer(
    vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0, num_clips: int = DEFAULT_CORPUS_CLIPS
) -> list[Merge]:
    """Merges learnt on the text of `num_clips` train clips starting at train offset `seed`.

    Deterministic: the corpus is a pure function of the seeds and the trainer breaks ties
    deterministically.
    """
    corpus = build_corpus(split_seeds("train", num_clips, start=seed))
    return train_merges(corpus + list(CHAT_TEXTS) * num_clips, vocab_size)


def zoo_tokenizer(family: str, merges: Sequence[Merge]) -> PreTrainedTokenizerBase:
    """The transformers tokenizer of a model family with the zoo's merges."""
    return build_tokenizer(family, merges=list(merges))
