"""The ShapesWorld language: a grammar for captions and QA pairs.

Every sentence is built from two kinds of words:

- *anchors* state a visual fact — a colour, a shape kind, a motion, a count, an order
  (first / last), the background colour, a yes / no, or a multiple-choice option letter. They
  are exact: the grammar writes them only from the clip's spec, and only where they mean that
  fact.
- *fillers* are everything else. Each filler slot (opener, verb, adverb, connective, answer
  form) is drawn at random among equivalent phrasings, so a model trained on this text is
  uncertain about fillers and certain about anchors — the split LVSpec's loose verification
  relies on.

No anchor word is ever used as a filler (no "at first", "right away", "shows up"), so marking
anchors is a word lookup; `specvid.zoo.anchors` does it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, TypeVar

import numpy as np

from specvid.zoo.shapesworld import (
    BACKGROUNDS,
    DIRECTIONS,
    MOTIONS,
    SHAPE_COLOURS,
    SHAPE_KINDS,
    TEXT_STREAM,
    ClipSpec,
    Fact,
    ShapeTrack,
    clip_spec_for_seed,
    stream_rng,
)

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

CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the video in detail.",
    "Describe what happens in this video.",
    "Give a detailed description of the clip.",
    "What happens in the video? Describe it in detail.",
    "Write a detailed caption for this video.",
)
# Scene sentence: {shapes} is e.g. "two shapes", {be} agrees with it, {where} places the
# background (or is empty when the background gets its own sentence).
SCENE_TEMPLATES: tuple[str, ...] = (
    "In this video, there {be} {shapes}{where}.",
    "In the clip, there {be} {shapes}{where}.",
    "Here, we see {shapes}{where}.",
    "The clip shows {shapes}{where}.",
    "This video shows {shapes}{where}.",
    "We can see {shapes}{where}.",
)
SHAPE_ADJECTIVES: tuple[str, ...] = ("", "coloured ", "colored ", "simple ")
WHERE_PHRASES: tuple[str, ...] = (
    " on a {bg} background",
    " against a {bg} background",
    " in front of a {bg} background",
)
BACKGROUND_SENTENCES: tuple[str, ...] = (
    "The background is {bg}.",
    "The background is plain {bg}.",
    "Everything happens on a {bg} background.",
)
# Shape sentences never begin with the article "A", which would read like an option letter.
SHAPE_TEMPLATES: tuple[str, ...] = (
    "The {name} {verb}.",
    "There is {a_name} that {verb}.",
    "We see {a_name} that {verb}.",
)
LATER_SHAPE_TEMPLATES: tuple[str, ...] = SHAPE_TEMPLATES + (
    "Also, the {name} {verb}.",
    "In addition, {a_name} {verb}.",
    "Another shape, {a_name}, {verb}.",
)
FIRST_CLAUSES: tuple[str, ...] = (
    "the {name} is the first shape to be seen",
    "the {name} comes first",
    "the first shape to show is the {name}",
)
LAST_CLAUSES: tuple[str, ...] = (
    "the {name} is the last shape to be seen",
    "the {name} comes last",
    "the last shape to show is the {name}",
)

COLOUR_SPELLINGS: tuple[str, ...] = ("colour", "color")
MC_INSTRUCTIONS: tuple[str, ...] = (
    "Answer with the option's letter.",
    "Choose the correct option.",
    "Select the correct answer.",
)
MC_ANSWERS: tuple[str, ...] = (
    "{letter}",
    "{letter}.",
    "{letter}. {text}",
    "The answer is {letter}.",
)


@dataclass(frozen=True)
class QA:
    """One question with a reference answer and the fact that decides correctness."""

    kind: str  # the fact asked: color, shape, motion, count, background, order, exists
    question: str  # the user prompt; for multiple choice it lists the options
    answer: str  # a reference answer
    value: str  # the canonical expected value: "red", "circle", "left", "2", "red circle", "yes"
    fact: Fact  # the gold fact behind the question
    options: tuple[str, ...] = ()  # multiple choice: option texts in letter order
    letter: str = ""  # multiple choice: the correct option's letter


@dataclass(frozen=True)
class ClipText:
    """All reference text of one clip."""

    caption_prompt: str
    caption: str
    qa: tuple[QA, ...]


class _Picker:
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


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _motion_group(motion: str) -> str:
    if motion in _CONTINUOUS:
        return "continuous"
    return "event" if motion in _EVENTS else "static"


def _motion_phrase(motion: str, pick: _Picker) -> str:
    """A verb phrase for `motion` with optional adverb fillers, e.g. "slowly slides left"."""
    group = _motion_group(motion)
    pre = pick.maybe(PRE_ADVERBS[group])
    post = pick.maybe(POST_PHRASES[group])
    words = [pre, pick.one(MOTION_PHRASES[motion]), post]
    return " ".join(word for word in words if word)


def _shapes_phrase(count: int, pick: _Picker) -> str:
    noun = "shape" if count == 1 else "shapes"
    return f"{COUNT_WORDS[count]} {pick.one(SHAPE_ADJECTIVES)}{noun}"


def _caption_text(spec: ClipSpec, pick: _Picker) -> str:
    """A detailed caption stating every fact of `spec.facts()` exactly once in substance."""
    background_inline = bool(pick.rng.random() < 0.6)
    where = pick.one(WHERE_PHRASES).format(bg=spec.background) if background_inline else ""
    scene = pick.one(SCENE_TEMPLATES).format(
        be="is" if spec.count == 1 else "are", shapes=_shapes_phrase(spec.count, pick), where=where
    )
    sentences = [scene]
    for index, track in enumerate(spec.tracks):
        templates = SHAPE_TEMPLATES if index == 0 else LATER_SHAPE_TEMPLATES
        sentence = pick.one(templates).format(
            name=track.name, a_name=with_article(track.name), verb=_motion_phrase(track.motion, pick)
        )
        sentences.append(sentence)
    order = _order_sentence(spec, pick)
    if order:
        sentences.append(order)
    if not background_inline:
        sentence = pick.one(BACKGROUND_SENTENCES).format(bg=spec.background)
        # The separate background sentence goes right after the scene or at the very end.
        if pick.rng.random() < 0.5:
            sentences.insert(1, sentence)
        else:
            sentences.append(sentence)
    return " ".join(sentences)


def _order_sentence(spec: ClipSpec, pick: _Picker) -> str:
    first, last = spec.first(), spec.last()
    clauses = []
    if first is not None:
        clauses.append(pick.one(FIRST_CLAUSES).format(name=first.name))
    if last is not None:
        clauses.append(pick.one(LAST_CLAUSES).format(name=last.name))
    if not clauses:
        return ""
    if len(clauses) == 2 and pick.rng.random() < 0.5:
        return f"{_capitalise(clauses[0])}, and {clauses[1]}."
    return " ".join(f"{_capitalise(clause)}." for clause in clauses)


# --- questions -------------------------------------------------------------------------------

COLOUR_QUESTIONS: tuple[str, ...] = (
    "What {cw} is the {kind}?",
    "Which {cw} is the {kind}?",
    "What is the {cw} of the {kind}?",
)
COLOUR_ANSWERS: tuple[str, ...] = (
    "The {kind} is {c}.",
    "It is {c}.",
    "{C}.",
    "The {kind} is {c} in {cw}.",
)
KIND_QUESTIONS: tuple[str, ...] = ("What shape is {c}?", "Which shape is {c}?", "What is the {c} shape?")
KIND_ANSWERS: tuple[str, ...] = (
    "The {c} shape is a {kind}.",
    "It is a {kind}.",
    "It's a {kind}.",
    "That is a {kind}.",
)
MOTION_QUESTIONS: tuple[str, ...] = (
    "What does the {name} do?",
    "What happens to the {name}?",
    "What does the {name} do in the video?",
)
DIRECTION_QUESTIONS: tuple[str, ...] = (
    "Which way does the {name} move?",
    "In which direction does the {name} move?",
)
MOTION_ANSWERS: tuple[str, ...] = ("The {name} {verb}.", "It {verb}.")
COUNT_QUESTIONS: tuple[str, ...] = (
    "How many shapes are there?",
    "How many shapes are in the video?",
    "How many shapes can you see?",
    "Count the shapes in the clip.",
)
COUNT_ANSWERS: tuple[str, ...] = (
    "There {be} {n} {noun}.",
    "{N}.",
    "I can see {n} {noun}.",
    "The video contains {n} {noun}.",
)
BACKGROUND_QUESTIONS: tuple[str, ...] = (
    "What is the background {cw}?",
    "What {cw} is the background?",
    "Which {cw} is the background?",
)
BACKGROUND_ANSWERS: tuple[str, ...] = (
    "The background is {bg}.",
    "It is {bg}.",
    "{BG}.",
    "The background is plain {bg}.",
)
ORDER_QUESTIONS: tuple[str, ...] = (
    "Which shape is seen {pos}?",
    "Which shape do we see {pos}?",
    "What is the {pos} shape to appear?",
)
ORDER_ANSWERS: tuple[str, ...] = (
    "The {name} comes {pos}.",
    "The {name}.",
    "It is the {name}.",
    "The {pos} shape is the {name}.",
)
EXISTS_QUESTIONS: tuple[str, ...] = (
    "Is there {a_name} in the video?",
    "Does the clip contain {a_name}?",
    "Can you see {a_name}?",
)
YES_ANSWERS: tuple[str, ...] = (
    "Yes, there is {a_name}.",
    "Yes.",
    "Yes, the video contains {a_name}.",
)
NO_ANSWERS: tuple[str, ...] = (
    "No, there is no {name}.",
    "No.",
    "No, the video contains no {name}.",
)


def _colour_qa(track: ShapeTrack, pick: _Picker) -> QA:
    question = pick.one(COLOUR_QUESTIONS).format(cw=pick.one(COLOUR_SPELLINGS), kind=track.kind)
    answer = pick.one(COLOUR_ANSWERS).format(
        kind=track.kind, c=track.color, C=_capitalise(track.color), cw=pick.one(COLOUR_SPELLINGS)
    )
    return QA("color", question, answer, track.color, ("shape", track.kind, "color", track.color))


def _kind_qa(track: ShapeTrack, pick: _Picker) -> QA:
    question = pick.one(KIND_QUESTIONS).format(c=track.color)
    answer = pick.one(KIND_ANSWERS).format(c=track.color, kind=track.kind)
    return QA("shape", question, answer, track.kind, ("shape", track.kind, "color", track.color))


def _motion_qa(track: ShapeTrack, pick: _Picker) -> QA:
    # "Which way does it move?" only makes sense for the four directions.
    questions = MOTION_QUESTIONS + (DIRECTION_QUESTIONS if track.motion in DIRECTIONS else ())
    question = pick.one(questions).format(name=track.name)
    verb = _motion_phrase(track.motion, pick)
    answer = pick.one(MOTION_ANSWERS).format(name=track.name, verb=verb)
    fact = ("shape", track.name, "motion", track.motion)
    return QA("motion", question, answer, track.motion, fact)


def _count_qa(spec: ClipSpec, pick: _Picker) -> QA:
    word = COUNT_WORDS[spec.count]
    answer = pick.one(COUNT_ANSWERS).format(
        be="is" if spec.count == 1 else "are",
        n=word,
        N=_capitalise(word),
        noun="shape" if spec.count == 1 else "shapes",
    )
    return QA("count", pick.one(COUNT_QUESTIONS), answer, str(spec.count), ("count", spec.count))


def _background_qa(spec: ClipSpec, pick: _Picker) -> QA:
    question = pick.one(BACKGROUND_QUESTIONS).format(cw=pick.one(COLOUR_SPELLINGS))
    background = spec.background
    answer = pick.one(BACKGROUND_ANSWERS).format(bg=background, BG=_capitalise(background))
    return QA("background", question, answer, spec.background, ("background", spec.background))


def _order_qa(track: ShapeTrack, position: str, pick: _Picker) -> QA:
    question = pick.one(ORDER_QUESTIONS).format(pos=position)
    answer = pick.one(ORDER_ANSWERS).format(name=track.name, pos=position)
    return QA("order", question, answer, track.name, ("order", track.name, position))


def _exists_qa(spec: ClipSpec, pick: _Picker) -> QA:
    track = pick.one(spec.tracks)
    if pick.rng.random() < 0.5:
        name, value = track.name, "yes"
    else:
        # A near miss: a colour or a kind that is in the clip, combined into a shape that is not.
        candidates = {f"{c} {track.kind}" for c in SHAPE_COLOURS}
        candidates |= {f"{track.color} {k}" for k in SHAPE_KINDS}
        name, value = pick.one(sorted(candidates - {t.name for t in spec.tracks})), "no"
    question = pick.one(EXISTS_QUESTIONS).format(a_name=with_article(name))
    answers = YES_ANSWERS if value == "yes" else NO_ANSWERS
    answer = pick.one(answers).format(name=name, a_name=with_article(name))
    return QA("exists", question, answer, value, ("exists", name, value == "yes"))


def _choice_qa(spec: ClipSpec, pick: _Picker) -> QA:
    """A multiple-choice version of one of the open questions, four options."""
    kind = pick.one(("color", "shape", "motion", "count", "background"))
    track = pick.one(spec.tracks)
    if kind == "color":
        base, pool = _colour_qa(track, pick), list(SHAPE_COLOURS)
    elif kind == "shape":
        base, pool = _kind_qa(track, pick), list(SHAPE_KINDS)
    elif kind == "motion":
        base, pool = _motion_qa(track, pick), list(MOTIONS)
    elif kind == "count":
        base, pool = _count_qa(spec, pick), [str(n) for n in COUNT_WORDS]
    else:
        base, pool = _background_qa(spec, pick), list(BACKGROUNDS)
    values = pick.sample([v for v in pool if v != base.value], len(OPTION_LETTERS) - 1)
    values.insert(int(pick.rng.integers(len(OPTION_LETTERS))), base.value)
    options = tuple(_option_text(kind, value) for value in values)
    letter = OPTION_LETTERS[values.index(base.value)]
    listing = "\n".join(f"{l}. {text}" for l, text in zip(OPTION_LETTERS, options))
    question = f"{base.question}\n{listing}\n{pick.one(MC_INSTRUCTIONS)}"
    answer = pick.one(MC_ANSWERS).format(letter=letter, text=options[values.index(base.value)])
    return QA(kind, question, answer, base.value, base.fact, options=options, letter=letter)


def _option_text(kind: str, value: str) -> str:
    if kind == "motion":
        return MOTION_OPTIONS[value]
    if kind == "count":
        return COUNT_WORDS[int(value)]
    return value


def _qa_pairs(spec: ClipSpec, pick: _Picker) -> tuple[QA, ...]:
    """The clip's questions: colour, shape, every motion, count, background, order, yes/no, MC."""
    pairs = [_colour_qa(pick.one(spec.tracks), pick), _kind_qa(pick.one(spec.tracks), pick)]
    pairs += [_motion_qa(track, pick) for track in spec.tracks]
    pairs += [_count_qa(spec, pick), _background_qa(spec, pick)]
    for position, track in (("first", spec.first()), ("last", spec.last())):
        if track is not None:
            pairs.append(_order_qa(track, position, pick))
    pairs += [_exists_qa(spec, pick), _choice_qa(spec, pick)]
    return tuple(pairs)


def describe_clip(spec: ClipSpec, rng: np.random.Generator) -> ClipText:
    """All reference text for `spec`; the fillers are drawn from `rng`."""
    pick = _Picker(rng)
    return ClipText(
        caption_prompt=pick.one(CAPTION_PROMPTS),
        caption=_caption_text(spec, pick),
        qa=_qa_pairs(spec, pick),
    )


def clip_text(seed: int) -> ClipText:
    """The reference text of a seed's clip without rendering it (same text as `make_clip`)."""
    return describe_clip(clip_spec_for_seed(seed), stream_rng(seed, TEXT_STREAM))


def build_corpus(seeds: Iterable[int]) -> list[str]:
    """Every prompt and reference answer of the given clips, for tokenizer training."""
    corpus = list(CAPTION_PROMPTS)
    for seed in seeds:
        text = clip_text(seed)
        corpus += [text.caption_prompt, text.caption]
        for qa in text.qa:
            corpus += [qa.question, qa.answer]
    return corpus
