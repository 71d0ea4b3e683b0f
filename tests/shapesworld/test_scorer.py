"""The judge-free scorer on hand-written captions and answers."""

from __future__ import annotations

import numpy as np
import pytest

from specvid.shapesworld.clips import Clip
from specvid.shapesworld.questions import QA
from specvid.shapesworld.scorer import (
    FactScore,
    aggregate,
    parse_facts,
    retention,
    score_answer,
    score_caption,
)
from specvid.shapesworld.world import ClipSpec, ShapeTrack


@pytest.fixture
def clip() -> Clip:
    # A red circle slides left from the start; a blue square appears later.
    spec = ClipSpec(
        background="black",
        tracks=(
            ShapeTrack("red", "circle", 0.15, (0.7, 0.3), "left"),
            ShapeTrack("blue", "square", 0.15, (0.3, 0.7), "appear", appear_time=0.45),
        ),
    )
    return Clip(0, spec, np.zeros((1, 2, 2, 3), np.uint8), "", "", ())


CORRECT = (
    "In this video, there are two shapes on a black background. The red circle moves to the "
    "left. The blue square appears partway through. The red circle comes first, and the blue "
    "square comes last."
)
PARAPHRASES = [
    "We can see two coloured shapes against a black background. There is a red circle that "
    "slowly slides left throughout the clip. In addition, a blue square suddenly emerges. The "
    "first shape to show is the red circle. The blue square is the last shape to be seen.",
    "The clip shows two simple shapes. The background is plain black. We see a red circle that "
    "travels leftwards. Also, the blue square becomes visible at some point. The red circle is "
    "the first shape to be seen, and the last shape to show is the blue square.",
    # Pronoun and bare-kind references resolve to the shape named before.
    "Here, we see two shapes in front of a black background. There is a red circle. It drifts "
    "to the left. The blue square emerges. The circle comes first; the square comes last.",
]


def test_correct_caption_scores_one(clip):
    assert parse_facts(CORRECT) == clip.spec.facts()
    assert score_caption(CORRECT, clip).f1 == 1.0


@pytest.mark.parametrize("text", PARAPHRASES)
def test_paraphrased_fillers_still_score_one(clip, text):
    score = score_caption(text, clip)
    assert score.f1 == 1.0, (score.missing, score.wrong)


def test_wrong_colour_lowers_precision(clip):
    score = score_caption(CORRECT.replace("red", "green"), clip)
    assert score.precision < 1.0 and score.recall < 1.0
    assert ("shape", "circle", "color", "green") in score.wrong


def test_missing_fact_lowers_recall_only(clip):
    score = score_caption(CORRECT.replace(" The blue square appears partway through.", ""), clip)
    assert score.precision == 1.0 and score.recall < 1.0
    assert score.missing == {("shape", "blue square", "motion", "appear")}


def test_invented_fact_lowers_precision_only(clip):
    score = score_caption(CORRECT + " There is also a yellow star that grows.", clip)
    assert score.recall == 1.0 and score.precision < 1.0
    assert score.wrong == {
        ("shape", "star", "color", "yellow"),
        ("shape", "yellow star", "motion", "grow"),
    }


def test_wrong_motion_and_empty_text(clip):
    assert score_caption(CORRECT.replace("to the left", "to the right"), clip).f1 < 1.0
    assert score_caption("", clip).f1 == 0.0


def qa(kind: str, value: str, fact: tuple, **choice) -> QA:
    return QA(kind, "question?", "reference.", value, fact, **choice)


COLOUR = qa("color", "red", ("shape", "circle", "color", "red"))
MOTION = qa("motion", "left", ("shape", "red circle", "motion", "left"))
COUNT = qa("count", "2", ("count", 2))
ORDER = qa("order", "red circle", ("order", "red circle", "first"))
EXISTS = qa("exists", "no", ("exists", "green star", False))
BACKGROUND = qa("background", "black", ("background", "black"))
CHOICE = qa(
    "color",
    "red",
    ("shape", "circle", "color", "red"),
    options=("green", "red", "blue", "white"),
    letter="B",
)


@pytest.mark.parametrize(
    "question, text, correct",
    [
        (COLOUR, "The circle is red.", True),
        (COLOUR, "Red.", True),
        (COLOUR, "The circle is green.", False),
        (COLOUR, "It is red or blue.", False),
        (COLOUR, "", False),
        (MOTION, "It glides left during the clip.", True),
        (MOTION, "The red circle travels leftwards.", True),
        (MOTION, "The red circle moves to the right.", False),
        (COUNT, "Two.", True),
        (COUNT, "There are 2 shapes.", True),
        (COUNT, "I can see three shapes.", False),
        (ORDER, "The red circle comes first.", True),
        (ORDER, "The circle.", True),
        (ORDER, "The blue square.", False),
        (EXISTS, "No, there is no green star.", True),
        (EXISTS, "Yes.", False),
        (BACKGROUND, "The background is plain black.", True),
        (BACKGROUND, "Gray.", False),
        (CHOICE, "B", True),
        (CHOICE, "B.", True),
        (CHOICE, "B. red", True),
        (CHOICE, "The answer is B.", True),
        (CHOICE, "red", True),
        (CHOICE, "A", False),
        (CHOICE, "B. green", False),
        (CHOICE, "A. red", False),
        (CHOICE, "A. green\nB. red", False),
        (CHOICE, "blue", False),
    ],
)
def test_score_answer(question, text, correct):
    assert score_answer(text, question) is correct


def test_aggregate_and_retention(clip):
    target = aggregate([score_caption(CORRECT, clip), True, True])
    assert target == {
        "fact_precision": 1.0,
        "fact_recall": 1.0,
        "fact_f1": 1.0,
        "qa_accuracy": 1.0,
        "num_captions": 1,
        "num_answers": 2,
    }
    half = FactScore(0.5, 0.5, 0.5, frozenset(), frozenset())
    method = aggregate(iter([score_caption(CORRECT, clip), half, True, False]))
    assert method["fact_f1"] == 0.75 and method["qa_accuracy"] == 0.5
    assert retention(method, target) == {
        "fact_precision": 0.75,
        "fact_recall": 0.75,
        "fact_f1": 0.75,
        "qa_accuracy": 0.5,
    }
    assert aggregate([])["fact_f1"] is None
