"""Tokens loose verification never relaxes, and how strictness spreads over a word's pieces.

Some mismatches change an answer's meaning whatever their visual relevance: ending early
(EOS and special tokens), a number, a negation, an option letter. They are strict always.
A word split into pieces is strict as a whole when any of its pieces is (or when the whole
word is a negation, a number or an option letter), so "gre" + "en" is judged like "green".

Word pieces are found from each token's text: a token starts a new word when its text begins
with something other than a letter, digit or apostrophe (byte-level BPE pieces carry their
leading space), or when the previous token ends with one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

NEGATIONS = frozenset(
    {"no", "not", "never", "none", "nor", "neither", "nothing", "nobody", "nowhere", "without",
     "cannot", "n't", "isn't", "aren't", "doesn't", "don't", "didn't", "wasn't", "weren't"}
)  # fmt: skip
OPTION_LETTERS = frozenset("ABCDEF")


def is_strict_word(text: str) -> bool:
    """Whether a word (with any surrounding spaces or punctuation) is always strict."""
    core = text.strip().strip(".,;:!?()[]\"")
    return (
        any(ch.isdigit() for ch in core)
        or core.lower() in NEGATIONS
        or core in OPTION_LETTERS
    )


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "'"


@dataclass(frozen=True)
class TokenClasses:
    """Per-id facts about a vocabulary that the strict rules read."""

    texts: tuple[str, ...]  # each id's text alone
    always_strict: torch.Tensor  # [vocab] bool
    starts_word: torch.Tensor  # [vocab] bool: the text opens a new word
    ends_word: torch.Tensor  # [vocab] bool: nothing can continue this token's word

    @classmethod
    def build(cls, texts: Sequence[str], special_ids: Iterable[int]) -> "TokenClasses":
        """From each id's decoded text and the ids of special tokens (EOS included)."""
        strict = torch.tensor([is_strict_word(t) for t in texts], dtype=torch.bool)
        for i in special_ids:
            if 0 <= i < len(texts):
                strict[i] = True
        starts = torch.tensor([not t or not _is_word_char(t[0]) for t in texts], dtype=torch.bool)
        ends = torch.tensor([not t or not _is_word_char(t[-1]) for t in texts], dtype=torch.bool)
        return cls(tuple(texts), strict, starts, ends)

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int, special_ids: Iterable[int]) -> "TokenClasses":
        """Decode every id once; ids past the tokenizer (padded embedding rows) get empty text."""
        known = min(vocab_size, len(tokenizer))
        texts = tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=False)
        return cls.build(list(texts) + [""] * (vocab_size - known), special_ids)

    def word_ids(self, tokens: Sequence[int]) -> list[int]:
        """The index of the word each token belongs to (0, 0, 1, 2, 2, ...)."""
        ids, word = [], -1
        for j, token in enumerate(tokens):
            if j == 0 or self.starts_word[token] or self.ends_word[tokens[j - 1]]:
                word += 1
            ids.append(word)
        return ids


def strict_positions(
    classes: TokenClasses,
    draft_tokens: Sequence[int],  # [k]
    target_tokens: Sequence[int],  # [k] the target's token at each drafted position
    anchors: torch.Tensor,  # [k] bool: positions ranked as visual anchors
    context: Sequence[int] = (),  # committed tokens just before the block (the open word)
) -> torch.Tensor:
    """Which drafted positions must match exactly.

    A position is strict when it is an anchor, when either the draft's or the target's token is
    always strict, or when it lies in a draft word that is strict as a whole (one of its pieces
    is strict or an anchor, or the word is a negation, number or option letter). A target token
    that continues the previous word inherits that word's strictness.
    """  # [k] bool
    k = len(draft_tokens)
    sequence = list(context) + list(draft_tokens)
    words = classes.word_ids(sequence)
    offset = len(context)
    piece_strict = [bool(classes.always_strict[t]) for t in sequence]
    for i in range(k):
        piece_strict[offset + i] = piece_strict[offset + i] or bool(anchors[i])
    word_strict: dict[int, bool] = {}
    word_text: dict[int, str] = {}
    for j, token in enumerate(sequence):
        word_strict[words[j]] = word_strict.get(words[j], False) or piece_strict[j]
        word_text[words[j]] = word_text.get(words[j], "") + classes.texts[token]
    for word, text in word_text.items():
        word_strict[word] = word_strict[word] or is_strict_word(text)
    strict = torch.zeros(k, dtype=torch.bool)
    for i, target in enumerate(target_tokens):
        j = offset + i
        continues_previous = j > 0 and not (classes.starts_word[target] or classes.ends_word[sequence[j - 1]])
        strict[i] = (
            word_strict[words[j]]
            or bool(classes.always_strict[target])
            or (continues_previous and word_strict[words[j - 1]])
        )
    return strict
