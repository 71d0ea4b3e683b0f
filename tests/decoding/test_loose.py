"""LVSpec's pure parts: anchor ranking, strict classes, the loose rule, embedding relevance."""

from __future__ import annotations

import pytest
import torch

from specvid.decoding.accept import anchor_mask, greedy_accept, loose_accept
from specvid.decoding.relevance import TokenRelevance, embedding_relevance
from specvid.decoding.strict import TokenClasses, is_strict_word, strict_positions

VOCAB = 16


def logits_for(targets: list[int], seconds: dict[int, list[int]] | None = None) -> torch.Tensor:
    """Rows whose argmax is targets[i]; seconds[i] lists the next best tokens of row i, in order."""
    logits = torch.zeros(len(targets), VOCAB)  # [k+1, vocab]
    for i, token in enumerate(targets):
        logits[i, token] = 10.0
        for rank, other in enumerate((seconds or {}).get(i, [])):
            logits[i, other] = 9.0 - rank
    return logits


def accept(targets, drafts, strict, window=2, top_k=3, seconds=None, wishes=(), context=(), start=10,
           ratio=0.0):
    return loose_accept(
        logits_for(targets, seconds),
        torch.tensor(drafts),
        torch.tensor(strict),
        start=start,
        shift_window=window,
        shift_top_k=top_k,
        filler_ratio=ratio,
        wishes=wishes,
        context=context,
    )


# (name, targets [k+1], drafts [k], strict [k], extra kwargs, (n, next, loose, rescued))
CASES = [
    ("all match", [1, 2, 3, 4], [1, 2, 3], [True] * 3, {}, (3, 4, 0, 0)),
    ("filler mismatch accepted", [1, 2, 3, 4], [1, 9, 3], [True, False, True], {}, (3, 4, 1, 0)),
    ("anchor mismatch rejected", [1, 2, 3, 4], [1, 9, 3], [True, True, True], {}, (1, 2, 0, 0)),
    (
        "shift rescue: the target's token is drafted one place later",
        [1, 2, 5, 6, 7],
        [1, 9, 2, 6],
        [True] * 4,
        {"seconds": {1: [9]}},
        (2, 5, 0, 1),
    ),
    (
        "shift rescue needs the draft token in the target's top-k",
        [1, 2, 5, 6, 7],
        [1, 9, 2, 6],
        [True] * 4,
        {"seconds": {1: [11, 12, 13, 9]}},
        (1, 2, 0, 0),
    ),
    (
        "shift rescue outside the window",
        [1, 2, 5, 6, 7, 8],
        [1, 9, 5, 6, 2],
        [True] * 5,
        {"seconds": {1: [9]}, "window": 2},
        (1, 2, 0, 0),
    ),
    (
        "shift rescue with window 3 reaches it",
        [1, 2, 5, 6, 7, 8],
        [1, 9, 5, 6, 2],
        [True] * 5,
        {"seconds": {1: [9]}, "window": 3},
        (4, 7, 0, 1),
    ),
    (
        "window 0 turns the shift rule off",
        [1, 2, 5, 6, 7],
        [1, 9, 2, 6],
        [True] * 4,
        {"seconds": {1: [9]}, "window": 0},
        (1, 2, 0, 0),
    ),
    (
        "draft late: it writes what the target wanted at a loose position",
        [1, 2, 3, 4],
        [9, 1, 3],
        [False, True, True],
        {"seconds": {1: [1]}},
        (3, 4, 1, 1),
    ),
    # logits_for: the target's token scores 10, its runners-up 9, 8, ...: p(d) / p(t) = e^(l_d - 10).
    (
        "filler gate: a runner-up (p ratio e^-1) passes ratio 0.3",
        [1, 2, 3, 4],
        [1, 9, 3],
        [True, False, True],
        {"seconds": {1: [9]}, "ratio": 0.3},
        (3, 4, 1, 0),
    ),
    (
        "filler gate: a token the target all but excludes (ratio e^-10) is rejected",
        [1, 2, 3, 4],
        [1, 9, 3],
        [True, False, True],
        {"ratio": 0.3},
        (1, 2, 0, 0),
    ),
    (
        "filler gate: a gated filler can still be a shift rescue",
        [1, 2, 5, 6, 7],
        [1, 9, 2, 6],
        [True, False, True, True],
        {"seconds": {1: [11, 9]}, "ratio": 0.3},
        (2, 5, 0, 1),
    ),
    (
        "a loose accept that repeats the last token is refused",
        [1, 2, 3, 4],
        [1, 1, 3],
        [False] * 3,
        {},
        (1, 2, 0, 0),
    ),
    (
        "a loose accept that repeats a two-token span is refused",
        [7, 2, 3, 4],
        [5, 6, 3],
        [False] * 3,
        {"context": [5, 6]},
        (1, 2, 1, 0),
    ),
]


@pytest.mark.parametrize("name,targets,drafts,strict,kwargs,expected", CASES, ids=[c[0] for c in CASES])
def test_loose_rule(name, targets, drafts, strict, kwargs, expected):
    verdict = accept(targets, drafts, strict, **kwargs)
    assert (verdict.num_accepted, verdict.next_token, verdict.loose, verdict.rescued) == expected


def test_wishes_carry_over_to_the_next_round():
    # Round 1: position 10 is loose; the target wanted 8 there. 3 accepted + 1 bonus, so round 2
    # starts at 14: 4 positions later, out of reach of window 2 (the wish is dropped), in reach
    # of window 4.
    round_one = dict(targets=[8, 2, 3, 4], drafts=[9, 2, 3], strict=[False, True, True], start=10)
    assert accept(**round_one, window=2).wishes == ()
    kept = accept(**round_one, window=4)
    assert kept.wishes == ((10, 8),) and kept.num_accepted == 3
    late = accept([5, 6], [8], [True], window=4, seconds={0: [8]}, wishes=kept.wishes, start=14)
    assert (late.num_accepted, late.rescued) == (1, 1)
    too_late = accept([5, 6], [8], [True], window=4, seconds={0: [8]}, wishes=kept.wishes, start=15)
    assert too_late.num_accepted == 0


def test_nothing_loose_and_no_shift_is_greedy():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        k = int(torch.randint(1, 8, (1,), generator=generator))
        logits = torch.randn(k + 1, VOCAB, generator=generator)
        drafts = logits[:k].argmax(-1)
        flip = torch.rand(k, generator=generator) < 0.3
        drafts[flip] = torch.randint(0, VOCAB, (int(flip.sum()),), generator=generator)
        exact = greedy_accept(logits, drafts)
        strict = torch.ones(k, dtype=torch.bool)
        loose = loose_accept(logits, drafts, strict, start=0, shift_window=0, shift_top_k=5)
        assert (loose.num_accepted, loose.next_token) == (exact.num_accepted, exact.next_token)


@pytest.mark.parametrize(
    "scores,lam,expected",
    [
        ([0.1, 0.9, 0.5, 0.3], 0.5, [False, True, True, False]),
        ([0.1, 0.9, 0.5, 0.3], 0.0, [True] * 4),
        ([0.1, 0.9, 0.5, 0.3], 1.0, [False] * 4),
        ([0.1, 0.9, 0.5, 0.3, 0.2], 0.7, [False, True, True, False, False]),  # ceil(1.5) = 2
        ([0.5, 0.5, 0.5], 0.5, [True, True, False]),  # ties: earlier first
        ([0.2] * 10, 0.7, [True] * 3 + [False] * 7),  # 0.3 * 10 is 3, not 4, despite float error
    ],
)
def test_anchor_mask(scores, lam, expected):
    assert anchor_mask(torch.tensor(scores), lam).tolist() == expected


# A toy vocabulary: byte-level pieces carry their leading space.
TEXTS = ["<eos>", " the", " red", " ball", " gre", "en", " not", " 3", " A", ".", " ne", "ver", " is", "s",
         " B", " moves"]  # fmt: skip
EOS, THE, RED, BALL, GRE, EN, NOT, THREE, A, DOT, NE, VER, IS, S, B, MOVES = range(len(TEXTS))


@pytest.fixture(scope="module")
def classes():
    return TokenClasses.build(TEXTS, special_ids=[EOS])


@pytest.mark.parametrize(
    "word,strict",
    [(" 3", True), (" not", True), ("never", True), (" A", True), ("B.", True), (" the", False),
     (" red", False), (" a", False), ("12px", True), (" doesn't", True)],
)  # fmt: skip
def test_always_strict_words(word, strict):
    assert is_strict_word(word) is strict


def test_always_strict_tokens(classes):
    drafts = [THE, THREE, NOT, A, EOS, BALL]
    strict = strict_positions(classes, drafts, drafts, torch.zeros(6, dtype=torch.bool))
    assert strict.tolist() == [False, True, True, True, True, False]


def test_target_token_strict_makes_the_position_strict(classes):
    strict = strict_positions(classes, [THE, BALL], [EOS, NOT], torch.zeros(2, dtype=torch.bool))
    assert strict.tolist() == [True, True]


def test_every_piece_of_an_anchor_word_is_strict(classes):
    # " gre" + "en" is one word: the anchor on its first piece makes the second strict too.
    drafts = [THE, GRE, EN, BALL]
    anchors = torch.tensor([False, True, False, False])
    assert strict_positions(classes, drafts, drafts, anchors).tolist() == [False, True, True, False]


def test_a_word_strict_as_a_whole(classes):
    # " ne" + "ver" spells a negation although neither piece is one.
    drafts = [NE, VER, BALL]
    strict = strict_positions(classes, drafts, drafts, torch.zeros(3, dtype=torch.bool))
    assert strict.tolist() == [True, True, False]


def test_the_open_word_before_the_block_counts(classes):
    # The block starts inside " gre|en" whose first piece, committed, is an anchor-free filler,
    # but " ne|ver" committed before makes the continuation strict.
    anchors = torch.zeros(2, dtype=torch.bool)
    after_ne = strict_positions(classes, [VER, BALL], [VER, BALL], anchors, context=[THE, NE])
    after_gre = strict_positions(classes, [EN, BALL], [EN, BALL], anchors, context=[THE, GRE])
    assert after_ne.tolist() == [True, False] and after_gre.tolist() == [False, False]


def test_a_target_piece_continuing_a_strict_word_is_strict(classes):
    # The draft ends the word " not" and starts " ball"; the target wants to continue it ("s").
    anchors = torch.zeros(2, dtype=torch.bool)
    strict = strict_positions(classes, [NOT, BALL], [NOT, S], anchors)
    assert strict.tolist() == [True, True]


def test_word_ids(classes):
    assert classes.word_ids([THE, GRE, EN, DOT, A, IS, S]) == [0, 1, 1, 2, 3, 4, 4]


def test_embedding_relevance_ranks_the_aligned_token_first():
    video = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])  # [V, hidden]
    units = torch.nn.functional.normalize(video, dim=-1)
    tokens = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    top1 = embedding_relevance(tokens, torch.zeros(3), units, top_n=1)
    assert top1.argmax() == 0 and top1[2] == pytest.approx(1.0)
    top2 = embedding_relevance(tokens, torch.zeros(3), units, top_n=2)
    assert top2[0] > top2[2]  # two video tokens look like token 0, one like token 2
    assert embedding_relevance(tokens, torch.zeros(3), units, top_n=100).shape == (3,)  # N > V is clipped


def test_token_relevance_is_centred_and_cached():
    table = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, 1.0]])
    video = torch.tensor([[3.0, 1.0], [1.0, 1.0]])  # its mean (2, 1) is removed: (1, 0) and (-1, 0)
    relevance = TokenRelevance(table, table.mean(0), video, top_n=1)
    scores = relevance(torch.tensor([0, 1, 0]))
    assert scores[0] == scores[2] == pytest.approx(0.5**0.5)  # (2,0) - (1,1) = (1,-1) against (1,0)
    assert scores[1] == pytest.approx(0.5**0.5)  # (0,2) - (1,1) = (-1,1) against (-1,0)
    assert relevance(torch.tensor([2]))[0] == pytest.approx(0.0, abs=1e-6)  # the mean row itself
    assert len(relevance._cache) == 3
    assert relevance(torch.tensor([1])).item() == pytest.approx(scores[1].item())
