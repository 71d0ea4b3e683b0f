"""SpecVLM pruning: budget, stage I mass rule, stage II spread, ties, the extremes."""

from __future__ import annotations

import pytest
import torch

from specvid.decoding.prune import (
    evenly_spaced,
    pruning_budget,
    select_video_tokens,
    stage_one,
)


@pytest.mark.parametrize(
    "num_tokens, drop_rate, budget",
    [
        (100, 0.9, 10),
        (100, 0.5, 50),
        (100, 0.0, 100),
        (64, 0.9, 6),  # 6.4 rounds down
        (65, 0.9, 7),  # 6.5 rounds up
        (10, 0.99, 1),  # never below one token
        (1, 0.5, 1),
    ],
)
def test_budget(num_tokens, drop_rate, budget):
    assert pruning_budget(num_tokens, drop_rate) == budget


@pytest.mark.parametrize("drop_rate", [-0.1, 1.0, 1.5])
def test_budget_rejects_rates_outside_zero_one(drop_rate):
    with pytest.raises(ValueError, match="drop_rate"):
        pruning_budget(10, drop_rate)


@pytest.mark.parametrize(
    "scores, mass, budget, expected",
    [
        # 0.5 of the mass is reached by the top token alone.
        ([0.1, 0.6, 0.1, 0.1, 0.1], 0.5, 5, [1]),
        # Two tokens needed: 0.3 + 0.3 >= 0.5, taken in score order.
        ([0.1, 0.3, 0.05, 0.3, 0.25], 0.5, 5, [1, 3]),
        # Exactly reaching the mass is enough.
        ([0.25, 0.25, 0.25, 0.25], 0.5, 4, [0, 1]),
        # The budget caps the set before the mass is reached.
        ([0.2, 0.2, 0.2, 0.2, 0.2], 0.9, 2, [0, 1]),
        # Ties go to the earlier token.
        ([0.1, 0.3, 0.3, 0.3], 0.2, 4, [1]),
        # mass 0 selects nothing; all-zero scores carry no signal.
        ([0.5, 0.5], 0.0, 2, []),
        ([0.0, 0.0, 0.0], 0.5, 3, []),
        # mass 1 needs every token with a positive score.
        ([0.5, 0.0, 0.5], 1.0, 3, [0, 2]),
    ],
)
def test_stage_one_mass_rule(scores, mass, budget, expected):
    assert stage_one(torch.tensor(scores), mass, budget).tolist() == expected


@pytest.mark.parametrize(
    "length, count, expected",
    [
        (10, 5, [1, 3, 5, 7, 9]),
        (10, 2, [2, 7]),
        (9, 3, [1, 4, 7]),
        (4, 4, [0, 1, 2, 3]),
        (3, 5, [0, 1, 2]),  # never more than there are
        (5, 0, []),
    ],
)
def test_evenly_spaced(length, count, expected):
    assert evenly_spaced(length, count).tolist() == expected


def test_staged_keeps_the_budget_exactly_with_stage_one_inside():
    scores = torch.zeros(100)
    scores[[7, 42, 93]] = torch.tensor([4.0, 3.0, 3.0])  # all the mass on three tokens
    assert stage_one(scores, 0.5, 10).tolist() == [7, 42]  # 4 + 3 of 10 reaches 0.5
    kept = select_video_tokens(scores, drop_rate=0.9, mass=0.5)
    assert kept.numel() == 10
    assert {7, 42} <= set(kept.tolist())
    assert kept.tolist() == sorted(set(kept.tolist()))  # sorted and distinct


def test_stage_two_spreads_the_rest_over_the_whole_video():
    scores = torch.zeros(100)
    scores[0] = 1.0
    kept = select_video_tokens(scores, drop_rate=0.9, mass=0.5).tolist()
    # Token 0 from stage I, then 9 from the other 99, one per stride of 11.
    assert kept[0] == 0
    gaps = [b - a for a, b in zip(kept[1:], kept[2:])]
    assert max(gaps) - min(gaps) <= 1 and kept[-1] >= 90


def test_uniform_needs_no_scores_and_ignores_them():
    high_first = torch.linspace(1.0, 0.0, 50)
    high_last = torch.linspace(0.0, 1.0, 50)
    a = select_video_tokens(high_first, drop_rate=0.8, pruning="uniform")
    b = select_video_tokens(high_last, drop_rate=0.8, pruning="uniform")
    assert a.tolist() == b.tolist() == evenly_spaced(50, 10).tolist()


@pytest.mark.parametrize("pruning", ["staged", "uniform", "none"])
def test_drop_zero_keeps_every_token(pruning):
    scores = torch.rand(37, generator=torch.Generator().manual_seed(0))
    assert select_video_tokens(scores, drop_rate=0.0, pruning=pruning).tolist() == list(range(37))


def test_drop_near_one_keeps_the_single_best_token():
    scores = torch.tensor([0.1, 0.2, 0.9, 0.3])
    assert select_video_tokens(scores, drop_rate=0.99, mass=0.5).tolist() == [2]


def test_none_keeps_every_token_whatever_the_rate():
    assert select_video_tokens(torch.ones(8), drop_rate=0.9, pruning="none").tolist() == list(range(8))
