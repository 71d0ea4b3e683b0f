"""Which words of a ShapesWorld text are visual anchors, and which tokens cover them.

The grammar never uses an anchor word as a filler, so marking anchors is a word lookup:
`anchor_spans` returns their character spans and `token_anchor_mask` maps those onto a
tokenizer's offsets. The one context rule is for option letters: "A" is an anchor when it is
an option ("A." / "A)" / a lone "A"), not when it is the article ("A red...").
"""

from __future__ import annotations

import re
from typing import Sequence

from specvid.shapesworld.vocabulary import (
    COLOUR_WORDS,
    COUNT_WORDS,
    MOTION_WORDS,
    OPTION_LETTERS,
    ORDER_WORDS,
    YES_NO_WORDS,
)
from specvid.shapesworld.world import SHAPE_KINDS

_WORD = re.compile(r"[A-Za-z]+|\d+")
# An option letter: a capital A-D standing alone, followed by "." or ")" or the end of a line.
_OPTION_LETTER = re.compile(r"(?<![A-Za-z'])[A-D](?=[.)]|[ \t]*$)", re.MULTILINE)


def _lowercase_anchors() -> frozenset[str]:
    words = set(COLOUR_WORDS) | set(SHAPE_KINDS) | set(MOTION_WORDS)
    words |= set(COUNT_WORDS.values()) | set(ORDER_WORDS) | set(YES_NO_WORDS)
    return frozenset(words)


_ANCHORS = _lowercase_anchors()


def anchor_words() -> set[str]:
    """Every word that can carry a visual fact (lowercase words plus the option letters)."""
    return set(_ANCHORS) | set(OPTION_LETTERS)


def is_anchor_word(word: str) -> bool:
    """Whether a word (out of context) is an anchor; digits always are."""
    return word.isdigit() or word.lower() in _ANCHORS


def anchor_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the anchors in `text`, in order."""
    spans = {m.span() for m in _WORD.finditer(text) if is_anchor_word(m.group())}
    spans |= {m.span() for m in _OPTION_LETTER.finditer(text)}
    return sorted(spans)


def find_option_letters(text: str) -> list[str]:
    """The option letters `text` names, in order ("B", "The answer is B.", "B. blue")."""
    return [m.group() for m in _OPTION_LETTER.finditer(text)]


def token_anchor_mask(text: str, offsets: Sequence[tuple[int, int]]) -> list[bool]:
    """For each token's character offsets in `text`, whether it overlaps an anchor."""
    spans = anchor_spans(text)
    return [start < end and any(start < b and a < end for a, b in spans) for start, end in offsets]
