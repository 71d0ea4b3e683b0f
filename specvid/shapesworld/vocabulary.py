"""The ShapesWorld vocabulary: anchor words, filler phrasings, and how fillers are drawn.

Shared by the caption grammar (`language.py`) and the question grammar (`questions.py`).
Anchor words carry a visual fact; every other phrase here is a filler, drawn at random among
equivalent variants by a `Picker`.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from specvid.shapesworld.world import BACKGROUNDS, SHAPE_COLOURS

COLOUR_WORDS: tuple[str, ...] = tuple(SHAPE_COLOURS) + tuple(BACKGROUNDS)
# "four" only ever occurs as a wrong multiple-choice option (clips hold 1-3 shapes).
COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
ORDER_WORDS: tuple[str, ...] = ("first", "last")
YES_NO_WORDS: tuple[str, ...] = ("yes", "no")
OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")

T = TypeVar("T")

# Each motion's phrasings (third person singular). The words that carry the fact are in
# MOTION_WORDS; the rest of each phrase ("moves", "to the", "gets") is filler.
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moves to the left", "slides left", "travels leftwards", "drifts to the left",
             "glides left"),
    "right": ("moves to the right", "slides right", "travels rightwards", "drifts to the right",
              "glides right"),
    "up": ("moves up", "slides upwards", "rises", "travels upwards", "drifts up"),
    "down": ("moves down", "slides downwards", "sinks", "travels downwards", "drifts down"),
    "appear": ("appears", "emerges", "becomes visible"),
    "disappear": ("disappears", "vanishes", "fades away"),
    "grow": ("grows", "gets bigger", "grows larger", "expands"),
    "shrink": ("shrinks", "gets smaller", "shrinks in size", "contracts"),
    "stay": ("stays still", "does not move", "remains motionless", "stays stationary"),
}  # fmt: skip
MOTION_WORDS: dict[str, str] = {
    "left": "left", "leftwards": "left",
    "right": "right", "rightwards": "right",
    "up": "up", "upwards": "up", "rises": "up",
    "down": "down", "downwards": "down", "sinks": "down",
    "appears": "appear", "emerges": "appear", "visible": "appear",
    "disappears": "disappear", "vanishes": "disappear", "fades": "disappear",
    "grows": "grow", "bigger": "grow", "larger": "grow", "expands": "grow",
    "shrinks": "shrink", "smaller": "shrink", "contracts": "shrink",
    "still": "stay", "not": "stay", "motionless": "stay", "stationary": "stay",
}  # fmt: skip
# The short canonical phrase of each motion, used as a multiple-choice option.
MOTION_OPTIONS: dict[str, str] = {
    "left": "moves left", "right": "moves right", "up": "moves up", "down": "moves down",
    "appear": "appears", "disappear": "disappears", "grow": "grows", "shrink": "shrinks",
    "stay": "stays still",
}  # fmt: skip

# Optional fillers around a motion phrase, by the kind of motion they fit.
_CONTINUOUS = frozenset({"left", "right", "up", "down", "grow", "shrink"})
_EVENTS = frozenset({"appear", "disappear"})
PRE_ADVERBS: dict[str, tuple[str, ...]] = {
    "continuous": ("slowly", "steadily", "gradually", "smoothly"),
    "event": ("suddenly", "quickly"),
    "static": (),
}
POST_PHRASES: dict[str, tuple[str, ...]] = {
    "continuous": ("throughout the clip", "over the course of the video", "during the clip",
                   "as the video plays"),
    "event": ("partway through", "at some point", "during the video"),
    "static": ("throughout the clip", "the whole time", "for the entire video"),
}  # fmt: skip
FILLER_PROBABILITY = 0.4

COLOUR_SPELLINGS: tuple[str, ...] = ("colour", "color")


class Picker:
    """Random choices among filler variants, from one seeded Generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def one(self, options: Sequence[T]) -> T:
        return options[int(self.rng.integers(len(options)))]

    def maybe(self, options: Sequence[str], probability: float = FILLER_PROBABILITY) -> str:
        if not options or self.rng.random() >= probability:
            return ""
        return self.one(options)

    def sample(self, options: Sequence[T], k: int) -> list[T]:
        return [options[int(i)] for i in self.rng.choice(len(options), size=k, replace=False)]


def with_article(phrase: str) -> str:
    """The phrase with its indefinite article: "a red circle", "an orange star"."""
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _motion_group(motion: str) -> str:
    if motion in _CONTINUOUS:
        return "continuous"
    return "event" if motion in _EVENTS else "static"


def motion_phrase(motion: str, pick: Picker) -> str:
    """A verb phrase for `motion` with optional adverb fillers, e.g. "slowly slides left"."""
    group = _motion_group(motion)
    pre = pick.maybe(PRE_ADVERBS[group])
    post = pick.maybe(POST_PHRASES[group])
    words = [pre, pick.one(MOTION_PHRASES[motion]), post]
    return " ".join(word for word in words if word)
