"""Judge-free scoring of ShapesWorld answers against a clip's ground truth.

Text becomes facts through a small deterministic parser that reads the grammar's anchor words
and ignores fillers, so any paraphrase of the fillers scores the same. Facts are flat tuples, as
`ClipSpec.facts()` makes them:

    ("background", "black")                 ("count", 2)
    ("shape", "circle", "color", "red")     ("shape", "red circle", "motion", "left")
    ("order", "red circle", "first")

A caption scores fact precision / recall / F1 against the clip's facts (a wrong colour is a
wrong fact, a missing shape lowers recall, an invented one lowers precision). A QA answer is
correct when the value it gives for the asked fact is exactly the reference value — a wrong
colour, or two colours, fails; a multiple-choice answer may give the letter, the option text,
or both (then both must be right). `aggregate` averages a data set; the retention of a method
is its aggregate divided by the target's greedy aggregate on the same clips (`retention`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Union

from specvid.shapesworld.anchors import find_option_letters
from specvid.shapesworld.clips import Clip
from specvid.shapesworld.questions import QA
from specvid.shapesworld.vocabulary import (
    COLOUR_WORDS,
    COUNT_WORDS,
    MOTION_WORDS,
    ORDER_WORDS,
    YES_NO_WORDS,
)
from specvid.shapesworld.world import SHAPE_KINDS, Fact

_CLAUSE_BREAK = re.compile(r"[.!?;\n]+|,\s*and\b")
_WORD = re.compile(r"[a-z]+|\d+")
_COUNT_VALUES = {word: n for n, word in COUNT_WORDS.items()}
_COLOURS = frozenset(COLOUR_WORDS)
_KINDS = frozenset(SHAPE_KINDS)
_SHAPE_NOUNS = frozenset({"shape", "shapes"})


@dataclass(frozen=True)
class FactScore:
    """Precision, recall and F1 of the facts a text states against the gold facts."""

    precision: float
    recall: float
    f1: float
    predicted: frozenset[Fact]
    gold: frozenset[Fact]

    @property
    def missing(self) -> frozenset[Fact]:
        return self.gold - self.predicted

    @property
    def wrong(self) -> frozenset[Fact]:
        return self.predicted - self.gold


@dataclass(frozen=True)
class _Mention:
    """A shape named in the text, at a word position within its clause."""

    position: int
    name: str  # "red circle", or a bare kind when no colour is known for it


def parse_facts(text: str) -> frozenset[Fact]:
    """Every fact `text` states, read clause by clause.

    Within a clause, a motion or order word belongs to the nearest shape named before it, else
    the nearest one after it ("The first shape is the red circle"), else the last shape named
    in an earlier clause ("It slides left"). A bare kind ("the circle") takes the colour it was
    last named with.
    """
    facts: set[Fact] = set()
    colour_of_kind: dict[str, str] = {}
    last_mention: Optional[str] = None
    for clause in _CLAUSE_BREAK.split(text.lower()):
        words = _WORD.findall(clause)
        mentions = _mentions(words, colour_of_kind)
        for mention in mentions:
            kind = mention.name.split()[-1]
            if mention.name != kind:
                facts.add(("shape", kind, "color", mention.name.split()[0]))
        for position, word in enumerate(words):
            subject = _subject(position, mentions) or last_mention
            if word in MOTION_WORDS and subject is not None:
                facts.add(("shape", subject, "motion", MOTION_WORDS[word]))
            elif word in ORDER_WORDS and subject is not None:
                facts.add(("order", subject, word))
        facts |= _count_facts(words) | _background_facts(words)
        if mentions:
            last_mention = mentions[-1].name
    return frozenset(facts)


def _mentions(words: list[str], colour_of_kind: dict[str, str]) -> list[_Mention]:
    mentions = []
    for position, word in enumerate(words):
        if word not in _KINDS:
            continue
        before = words[position - 1] if position > 0 else ""
        if before in _COLOURS:
            colour_of_kind[word] = before
        colour = colour_of_kind.get(word)
        mentions.append(_Mention(position, f"{colour} {word}" if colour else word))
    return mentions


def _subject(position: int, mentions: list[_Mention]) -> Optional[str]:
    before = [m for m in mentions if m.position < position]
    if before:
        return before[-1].name
    after = [m for m in mentions if m.position > position]
    return after[0].name if after else None


def _count_facts(words: list[str]) -> set[Fact]:
    # A number counts shapes when "shape(s)" follows within two words ("two simple shapes").
    facts: set[Fact] = set()
    for position, word in enumerate(words):
        value = _number(word)
        if value is not None and _SHAPE_NOUNS & set(words[position + 1 : position + 3]):
            facts.add(("count", value))
    return facts


def _background_facts(words: list[str]) -> set[Fact]:
    # A colour in a clause about the background, not naming a shape.
    if "background" not in words:
        return set()
    return {
        ("background", word)
        for position, word in enumerate(words)
        if word in _COLOURS and (position + 1 == len(words) or words[position + 1] not in _KINDS)
    }


def _number(word: str) -> Optional[int]:
    if word.isdigit():
        return int(word)
    return _COUNT_VALUES.get(word)


def score_facts(predicted: frozenset[Fact], gold: frozenset[Fact]) -> FactScore:
    """Set precision / recall / F1; stating nothing scores zero."""
    hits = len(predicted & gold)
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return FactScore(precision, recall, f1, predicted, gold)


def score_caption(text: str, clip: Clip) -> FactScore:
    """How well a caption states the clip's facts."""
    return score_facts(parse_facts(text), clip.spec.facts())


def answer_values(text: str, kind: str) -> set[str]:
    """The values `text` gives for a fact kind: colours, kinds, motions, counts, names, yes/no."""
    words = _WORD.findall(text.lower())
    if kind in ("color", "background"):
        return {w for w in words if w in _COLOURS}
    if kind == "shape":
        return {w for w in words if w in _KINDS}
    if kind == "motion":
        return {MOTION_WORDS[w] for w in words if w in MOTION_WORDS}
    if kind == "count":
        return {str(n) for n in map(_number, words) if n is not None}
    if kind == "order":
        return {m.name for m in _mentions(words, {})}
    if kind == "exists":
        return {w for w in words if w in YES_NO_WORDS}
    raise ValueError(f"unknown question kind {kind!r}")


def score_answer(text: str, qa: QA) -> bool:
    """Whether an answer gives exactly the right value for the fact the question asks."""
    if qa.options:
        return _score_choice(text, qa)
    values = answer_values(text, qa.kind)
    if qa.kind == "order":
        # Kinds are unique within a clip, so "the circle" names the red circle too.
        kind = qa.value.split()[-1]
        values = {qa.value if value == kind else value for value in values}
    return values == {qa.value}


def _score_choice(text: str, qa: QA) -> bool:
    letters = set(find_option_letters(text))
    if len(letters) > 1:
        return False
    values = answer_values(text, qa.kind)
    if letters:
        # Option text beside the letter must not contradict it ("B. red" when B is blue fails).
        return letters == {qa.letter} and values <= {qa.value}
    return values == {qa.value}


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def aggregate(scores: Iterable[Union[FactScore, bool]]) -> dict[str, Optional[float]]:
    """Mean caption precision / recall / F1 and QA accuracy (None where there is no score)."""
    items = list(scores)
    captions = [s for s in items if isinstance(s, FactScore)]
    answers = [float(s) for s in items if isinstance(s, bool)]
    return {
        "fact_precision": _mean([s.precision for s in captions]),
        "fact_recall": _mean([s.recall for s in captions]),
        "fact_f1": _mean([s.f1 for s in captions]),
        "qa_accuracy": _mean(answers),
        "num_captions": len(captions),
        "num_answers": len(answers),
    }


def retention(
    method: Mapping[str, Optional[float]], target: Mapping[str, Optional[float]]
) -> dict[str, float]:
    """A method's quality as a fraction of the target's (1.0 = nothing lost)."""
    keys = ("fact_precision", "fact_recall", "fact_f1", "qa_accuracy")
    return {
        key: method[key] / target[key]
        for key in keys
        if method.get(key) is not None and target.get(key)
    }
