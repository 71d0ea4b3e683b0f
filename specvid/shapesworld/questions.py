"""The ShapesWorld question grammar: QA pairs whose answers state one visual fact each.

Questions cover a shape's colour and kind, every shape's motion, the count, the background,
the order of appearance, yes / no existence, and multiple choice over any of those. Answer
forms are fillers drawn at random; the value each answer states is exact. No answer opens
with a colour, kind or count word: a sentence-initial anchor would be a second, capitalised
token for the same fact ("Red" beside " red"), which the tiny models learn far more slowly.
"""

from __future__ import annotations

from dataclasses import dataclass

from specvid.shapesworld.vocabulary import (
    COLOUR_SPELLINGS,
    COUNT_WORDS,
    MOTION_OPTIONS,
    OPTION_LETTERS,
    Picker,
    motion_phrase,
    with_article,
)
from specvid.shapesworld.world import (
    BACKGROUNDS,
    DIRECTIONS,
    MOTIONS,
    SHAPE_COLOURS,
    SHAPE_KINDS,
    ClipSpec,
    Fact,
    ShapeTrack,
)

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
    reasoning: str = ""  # yes/no and multiple choice: the looked-up fact ("The circle is blue.")


def reasoned_answer(qa: QA) -> str:
    """The reference answer after the fact it rests on: "The circle is blue.\nNo."

    A yes / no or option-letter answer decides in its first anchor, after a lookup it never
    states; the tiny targets do not learn that silently (model card: both stay at chance).
    With the fact written first, the decision compares it with the question or the option list.
    """
    return f"{qa.reasoning}\n{qa.answer}" if qa.reasoning else qa.answer


COLOUR_QUESTIONS: tuple[str, ...] = (
    "What {cw} is the {kind}?",
    "Which {cw} is the {kind}?",
    "What is the {cw} of the {kind}?",
)
COLOUR_ANSWERS: tuple[str, ...] = (
    "The {kind} is {c}.",
    "It is {c}.",
    "The answer is {c}.",
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
    "The answer is {n}.",
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
    "The answer is {bg}.",
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


def _colour_qa(track: ShapeTrack, pick: Picker) -> QA:
    question = pick.one(COLOUR_QUESTIONS).format(cw=pick.one(COLOUR_SPELLINGS), kind=track.kind)
    answer = pick.one(COLOUR_ANSWERS).format(
        kind=track.kind, c=track.color, cw=pick.one(COLOUR_SPELLINGS)
    )
    return QA("color", question, answer, track.color, ("shape", track.kind, "color", track.color))


def _kind_qa(track: ShapeTrack, pick: Picker) -> QA:
    question = pick.one(KIND_QUESTIONS).format(c=track.color)
    answer = pick.one(KIND_ANSWERS).format(c=track.color, kind=track.kind)
    return QA("shape", question, answer, track.kind, ("shape", track.kind, "color", track.color))


def _motion_qa(track: ShapeTrack, pick: Picker) -> QA:
    # "Which way does it move?" only makes sense for the four directions.
    questions = MOTION_QUESTIONS + (DIRECTION_QUESTIONS if track.motion in DIRECTIONS else ())
    question = pick.one(questions).format(name=track.name)
    verb = motion_phrase(track.motion, pick)
    answer = pick.one(MOTION_ANSWERS).format(name=track.name, verb=verb)
    fact = ("shape", track.name, "motion", track.motion)
    return QA("motion", question, answer, track.motion, fact)


def _count_qa(spec: ClipSpec, pick: Picker) -> QA:
    be, noun = _agreement(spec.count)
    answer = pick.one(COUNT_ANSWERS).format(be=be, n=COUNT_WORDS[spec.count], noun=noun)
    return QA("count", pick.one(COUNT_QUESTIONS), answer, str(spec.count), ("count", spec.count))


def _agreement(count: int) -> tuple[str, str]:
    """The verb and noun that agree with a shape count: ("is", "shape") or ("are", "shapes")."""
    return ("is", "shape") if count == 1 else ("are", "shapes")


def _background_qa(spec: ClipSpec, pick: Picker) -> QA:
    question = pick.one(BACKGROUND_QUESTIONS).format(cw=pick.one(COLOUR_SPELLINGS))
    background = spec.background
    answer = pick.one(BACKGROUND_ANSWERS).format(bg=background)
    return QA("background", question, answer, spec.background, ("background", spec.background))


def _order_qa(track: ShapeTrack, position: str, pick: Picker) -> QA:
    question = pick.one(ORDER_QUESTIONS).format(pos=position)
    answer = pick.one(ORDER_ANSWERS).format(name=track.name, pos=position)
    return QA("order", question, answer, track.name, ("order", track.name, position))


def _exists_qa(spec: ClipSpec, pick: Picker) -> QA:
    track = pick.one(spec.tracks)
    name = track.name if pick.rng.random() < 0.5 else _near_miss(spec, track, pick)
    return _exists_question(spec, name, pick)


def _near_miss(spec: ClipSpec, track: ShapeTrack, pick: Picker) -> str:
    """A shape the clip does not hold, with the colour or the kind of `track`."""
    candidates = {f"{c} {track.kind}" for c in SHAPE_COLOURS}
    candidates |= {f"{track.color} {k}" for k in SHAPE_KINDS}
    return pick.one(sorted(candidates - {t.name for t in spec.tracks}))


def _exists_question(spec: ClipSpec, name: str, pick: Picker) -> QA:
    value = "yes" if name in {t.name for t in spec.tracks} else "no"
    question = pick.one(EXISTS_QUESTIONS).format(a_name=with_article(name))
    answers = YES_ANSWERS if value == "yes" else NO_ANSWERS
    answer = pick.one(answers).format(name=name, a_name=with_article(name))
    fact = ("exists", name, value == "yes")
    return QA("exists", question, answer, value, fact, reasoning=_presence(spec, name.split()[-1]))


def _presence(spec: ClipSpec, kind: str) -> str:
    """What the clip has of a shape kind (kinds are distinct within a clip)."""
    track = next((t for t in spec.tracks if t.kind == kind), None)
    return f"The {kind} is {track.color}." if track else f"There is no {kind}."


def inventory(spec: ClipSpec) -> str:
    """Every shape of the clip in one sentence: "The clip shows a yellow square and a red circle."

    A yes / no reasoning that the question cannot give away (`TrainConfig.yes_no_inventory`):
    `_presence` of a shape the clip holds repeats the question's own colour.
    """
    names = [with_article(track.name) for track in spec.tracks]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"The clip shows {listed}."


CHOICE_KINDS: tuple[str, ...] = ("color", "shape", "motion", "count", "background")


def _choice_qa(spec: ClipSpec, pick: Picker) -> QA:
    """A multiple-choice version of one of the open questions, four options."""
    kind = pick.one(CHOICE_KINDS)
    track = pick.one(spec.tracks)
    return _with_options(kind, spec, track, *_open_question(kind, spec, track, pick), pick)


def _open_question(kind: str, spec: ClipSpec, track: ShapeTrack, pick: Picker) -> tuple[QA, list[str]]:
    """An open question of `kind` and every value its answer could take."""
    if kind == "color":
        return _colour_qa(track, pick), list(SHAPE_COLOURS)
    if kind == "shape":
        return _kind_qa(track, pick), list(SHAPE_KINDS)
    if kind == "motion":
        return _motion_qa(track, pick), list(MOTIONS)
    if kind == "count":
        return _count_qa(spec, pick), [str(n) for n in COUNT_WORDS]
    return _background_qa(spec, pick), list(BACKGROUNDS)


def _with_options(
    kind: str, spec: ClipSpec, track: ShapeTrack, base: QA, pool: list[str], pick: Picker
) -> QA:
    """`base` as a multiple-choice question: its value and three others from `pool`."""
    values = pick.sample([v for v in pool if v != base.value], len(OPTION_LETTERS) - 1)
    values.insert(int(pick.rng.integers(len(OPTION_LETTERS))), base.value)
    options = tuple(_option_text(kind, value) for value in values)
    right = values.index(base.value)
    listing = "\n".join(f"{option}. {text}" for option, text in zip(OPTION_LETTERS, options))
    question = f"{base.question}\n{listing}\n{pick.one(MC_INSTRUCTIONS)}"
    answer = pick.one(MC_ANSWERS).format(letter=OPTION_LETTERS[right], text=options[right])
    reasoning = _choice_reasoning(kind, spec, track, options[right])
    return QA(kind, question, answer, base.value, base.fact, options, OPTION_LETTERS[right], reasoning)


def contrast_questions(spec: ClipSpec, pick: Picker) -> tuple[QA, ...]:
    """Two pairs of questions whose answers differ only through what the question says.

    A yes / no pair asks about a shape of the clip and about a near miss of it; a multiple-choice
    pair asks one question with two draws of options. A model that answers both of a pair
    right must read the question's shape name or its option list, not just the video.
    """
    track = pick.one(spec.tracks)
    present = _exists_question(spec, track.name, pick)
    absent = _exists_question(spec, _near_miss(spec, track, pick), pick)
    kind, choice_track = pick.one(CHOICE_KINDS), pick.one(spec.tracks)
    base, pool = _open_question(kind, spec, choice_track, pick)
    choices = [_with_options(kind, spec, choice_track, base, pool, pick) for _ in range(2)]
    return (present, absent, *choices)


def _choice_reasoning(kind: str, spec: ClipSpec, track: ShapeTrack, text: str) -> str:
    """The right option's fact as a sentence that repeats the option text word for word."""
    if kind == "color":
        return f"The {track.kind} is {text}."
    if kind == "shape":
        return f"The {track.color} shape is {with_article(text)}."
    if kind == "motion":
        return f"The {track.name} {text}."
    if kind == "count":
        be, noun = _agreement(spec.count)
        return f"There {be} {text} {noun}."
    return f"The background is {text}."


def _option_text(kind: str, value: str) -> str:
    if kind == "motion":
        return MOTION_OPTIONS[value]
    if kind == "count":
        return COUNT_WORDS[int(value)]
    return value


def qa_pairs(spec: ClipSpec, pick: Picker) -> tuple[QA, ...]:
    """The clip's questions: colour, shape, every motion, count, background, order, yes/no, MC."""
    pairs = [_colour_qa(pick.one(spec.tracks), pick), _kind_qa(pick.one(spec.tracks), pick)]
    pairs += [_motion_qa(track, pick) for track in spec.tracks]
    pairs += [_count_qa(spec, pick), _background_qa(spec, pick)]
    for position, track in (("first", spec.first()), ("last", spec.last())):
        if track is not None:
            pairs.append(_order_qa(track, position, pick))
    pairs += [_exists_qa(spec, pick), _choice_qa(spec, pick)]
    return tuple(pairs)
