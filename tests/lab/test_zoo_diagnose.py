"""Where a target's lookups fail: the measurements of `lab.zoo.diagnose`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.zoo.diagnose import (
    colour_lookups,
    feature_probe,
    letter_position,
    letter_token_ids,
    lookup_outcome,
    reference_answer,
)
from lab.zoo.rows import encode_conversation
from specvid.bench.card import clip_video
from specvid.engine import LocalEngine
from specvid.models.loader import load_model
from specvid.shapesworld.clips import make_clip
from specvid.shapesworld.world import ClipSpec, ShapeTrack, split_seeds

SPEC = ClipSpec(
    background="black",
    tracks=(
        ShapeTrack("red", "circle", 0.15, (0.7, 0.3), "left"),
        ShapeTrack("blue", "square", 0.15, (0.3, 0.7), "stay"),
    ),
)


@pytest.mark.parametrize(
    "answer, outcome",
    [
        ("The square is blue.", "right"),
        ("It is blue in colour.", "right"),
        ("The square is red.", "another shape's"),  # the circle's colour: a binding error
        ("The square is green.", "not in the clip"),
        ("The square is red or blue.", "no single colour"),
        ("It is a square.", "no single colour"),
    ],
)
def test_a_colour_lookup_is_right_another_shapes_or_not_in_the_clip(answer, outcome):
    assert lookup_outcome(answer, SPEC, "square") == outcome


@pytest.mark.parametrize("reasoned", [True, False])
def test_the_scored_position_is_the_option_letter_of_thereference_answer(reasoned):
    adapter = load_model("qwen-tiny-draft")
    letter_ids = letter_token_ids(adapter.tokenizer)
    for seed in split_seeds("eval", 6):
        clip = make_clip(seed)
        qa = next(q for q in clip.qa if q.options)
        row = encode_conversation(adapter, clip_video(clip).frames, [(qa.question, reference_answer(qa, reasoned))])
        position, spelling = letter_position(row, letter_ids)
        assert adapter.tokenizer.decode([row["input_ids"][position]]).strip() == qa.letter
        assert row["input_ids"][position] in letter_ids[spelling]


def test_the_shipped_targets_video_tokens_hold_colour_and_kind():
    # Measured on 300 / 40 clips: colour 1.00 and kind 0.99 (model card); a small fit still shows it.
    figures = feature_probe(load_model("qwen-tiny"), split_seeds("train", 40), split_seeds("eval", 8))
    assert figures["shape_tokens"] > 30
    assert figures["accuracy"]["colour"] >= 0.9 and figures["accuracy"]["kind"] >= 0.8


def test_every_shape_is_asked_once_by_its_kind():
    seeds = split_seeds("eval", 3)
    outcomes = colour_lookups(LocalEngine(load_model("qwen-tiny")), seeds)
    shapes = [make_clip(seed).spec.count for seed in seeds]
    assert sum(sum(c.values()) for c in outcomes.values()) == sum(shapes)
    assert set(outcomes) == {str(n) for n in shapes}
    known = {"right", "another shape's", "not in the clip", "no single colour"}
    assert all(set(counts) <= known for counts in outcomes.values())


def test_zoo_diagnose_writes_its_figures(tmp_path):
    out = tmp_path / "diagnose.json"
    args = ["diagnose", "--model", "qwen-tiny-draft", "--clips", "2", "--probe-clips", "6", "--json", str(out)]
    result = subprocess.run([sys.executable, "-m", "lab.zoo", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["choice_letters_reasoned"]["questions"] == 2  # one multiple-choice question a clip
    assert set(figures["feature_probe"]["accuracy"]) == {"colour", "kind", "motion"}
