"""`bench-relevance` figures on hand-made captions: AUROC, precision/recall at lam, strict recall."""

from __future__ import annotations

import pytest
import torch

from specvid.bench.relevance import Caption, auroc, separation
from specvid.decoding.strict import TokenClasses

TEXTS = [" the", " red", " ball", " moves", " not", "."]
THE, RED, BALL, MOVES, NOT, DOT = range(len(TEXTS))


@pytest.fixture(scope="module")
def classes():
    return TokenClasses.build(TEXTS, special_ids=[])


def caption(scores: list[float]) -> Caption:
    # " the red ball moves . the red ball": anchors at red, ball.
    tokens = [THE, RED, BALL, MOVES, DOT, THE, RED, BALL]
    anchors = [t in (RED, BALL) for t in tokens]
    return Caption(tokens, list(tokens), anchors, {"r": torch.tensor(scores)})


def test_auroc():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5], [0.5]) == 0.5
    assert auroc([], [0.5]) is None


def test_a_perfect_ranking(classes):
    perfect = caption([0.1, 0.9, 0.8, 0.2, 0.0, 0.1, 0.9, 0.8])
    row = separation([perfect], "r", classes, lam=0.5, k=4)
    # Blocks of 4 with 2 anchors each: the top half of each block is exactly the anchors.
    assert (row["auroc"], row["precision"], row["recall"], row["strict_recall"]) == (1.0, 1.0, 1.0, 1.0)
    assert (row["anchors"], row["positions"]) == (4, 8)


def test_an_inverted_ranking_marks_only_fillers(classes):
    inverted = caption([0.9, 0.1, 0.2, 0.8, 0.9, 0.9, 0.1, 0.2])
    row = separation([inverted], "r", classes, lam=0.5, k=4)
    assert (row["auroc"], row["precision"], row["recall"]) == (0.0, 0.0, 0.0)


def test_always_strict_tokens_count_in_strict_recall(classes):
    # " not" is strict whatever its score; as an anchor position it lifts strict recall only.
    tokens = [THE, NOT, BALL, DOT]
    c = Caption(tokens, list(tokens), [False, True, True, False], {"r": torch.tensor([0.9, 0.1, 0.8, 0.2])})
    row = separation([c], "r", classes, lam=0.5, k=4)
    assert row["recall"] == 0.5 and row["strict_recall"] == 1.0
