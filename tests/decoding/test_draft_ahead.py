"""Draft-ahead rounds: the draft drafts the next round while the target verifies, same output.

A random draft almost never guesses a whole round (every proposal drafted ahead is discarded);
the target drafting for itself always does (every one is used). Both must give the target's
own output, alone, batched, with adaptive length, sampled with a seed, and per request.
"""

from __future__ import annotations

import asyncio

import pytest

from specvid.config import SamplingParams
from specvid.decoding.session import Commit, PrefillRequest
from specvid.engine import LocalEngine
from tests.helpers import FAMILIES, random_frames, random_video

CASES = [(1, 1), (2, 6), (3, 7), (5, 17), (4, 24), (8, 40)]  # (k, max_tokens)


def request(case: int, method: str, k: int, max_tokens: int, **decoding) -> dict:
    return {
        "video": "unused",
        "prompt": f"Question {case}: what does the {['red', 'blue', 'green'][case % 3]} shape do?",
        "decoding": {"method": method, "num_draft_tokens": k, "draft_length": "fixed", **decoding},
        "sampling": {"max_tokens": max_tokens},
    }


@pytest.fixture(scope="module")
def engines(random_models):
    return {
        f: {
            "ar": LocalEngine(target),
            "random_draft": LocalEngine(target, draft, draft_ahead=True),
            "self_draft": LocalEngine(target, target, draft_ahead=True),
        }
        for f, (target, draft) in random_models.items()
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_draft_ahead_rounds_give_the_targets_greedy_output(engines, family):
    e = engines[family]
    for case, (k, max_tokens) in enumerate(CASES):
        video = random_video(seed=case)
        ar = e["ar"].generate(request(case, "ar", k, max_tokens), video)
        missed = e["random_draft"].generate(request(case, "sd", k, max_tokens), video)
        guessed = e["self_draft"].generate(request(case, "sd", k, max_tokens), video)
        assert missed.token_ids == ar.token_ids, f"case {case}: discarded proposals changed the output"
        assert guessed.token_ids == ar.token_ids, f"case {case}: proposals drafted ahead changed the output"
        # A proposal drafted ahead is used only after a round that accepted all (>= 1) of its drafts.
        for result in (missed, guessed):
            assert result.stats.ahead_hits <= sum(result.stats.rounds_by_accepted[1:])
        if len(ar.token_ids) == max_tokens and max_tokens >= 2 * (k + 1) + 1:
            # A whole round guessed: later rounds start from proposals drafted during a verify.
            assert guessed.stats.ahead_hits >= 1, f"case {case}: no proposal drafted ahead was used"
            assert missed.stats.ahead_rounds >= 1


@pytest.mark.parametrize("method", ["specvlm", "lvspec", "lvspec+specvlm"])
def test_draft_ahead_rounds_keep_each_methods_output(random_models, method):
    target, draft = random_models["qwen"]
    plain, ahead = LocalEngine(target, target), LocalEngine(target, target, draft_ahead=True)
    video = random_video(seed=11)
    body = request(11, method, 4, 30)
    expected = plain.generate(body, video)
    got = ahead.generate(body, video)
    assert got.token_ids == expected.token_ids
    assert got.stats.ahead_rounds > 0 and expected.stats.ahead_rounds == 0


def test_the_switch_is_per_request_and_defaults_to_the_engine(random_models):
    target, draft = random_models["llava"]
    off, on = LocalEngine(target, target), LocalEngine(target, target, draft_ahead=True)
    video = random_video(seed=5)
    default_off = off.generate(request(5, "sd", 3, 24), video)
    asked_on = off.generate(request(5, "sd", 3, 24, draft_ahead=True), video)  # draft-ahead rounds, draft inline
    asked_off = on.generate(request(5, "sd", 3, 24, draft_ahead=False), video)
    default_on = on.generate(request(5, "sd", 3, 24), video)
    assert default_off.token_ids == asked_on.token_ids == asked_off.token_ids == default_on.token_ids
    assert default_off.stats.ahead_rounds == asked_off.stats.ahead_rounds == 0
    assert asked_on.stats.ahead_rounds > 0 and default_on.stats.ahead_rounds > 0
    # Requests that still use the field's earlier name get the same switch.
    earlier_name = off.generate(request(5, "sd", 3, 24, pipeline=True), video)
    assert earlier_name.token_ids == default_off.token_ids and earlier_name.stats.ahead_rounds > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_adaptive_length_and_drafting_ahead_keep_the_output(engines, family):
    e = engines[family]
    video = random_video(seed=3)
    ar = e["ar"].generate(request(3, "ar", 6, 40), video)
    for engine in ("random_draft", "self_draft"):
        adaptive = e[engine].generate(request(3, "sd", 6, 40, draft_confidence=0.5), video)
        assert adaptive.token_ids == ar.token_ids


def test_seeded_sampling_with_draft_ahead_rounds_is_reproducible(random_models):
    target, draft = random_models["qwen"]
    engine = LocalEngine(target, draft, draft_ahead=True)
    body = request(2, "sd", 4, 30)
    body["sampling"].update(temperature=0.9, seed=17)
    results = [engine.generate(body, random_video(seed=2)) for _ in range(3)]
    runs = [r.token_ids for r in results]
    assert runs[0] == runs[1] == runs[2]
    assert all(0 <= t < target.vocab_size for t in runs[0])
    # A sampled round drafting ahead runs to its end (no settling); it is still used only
    # when the round before accepted every draft and the draft guessed the next token.
    stats = results[0].stats
    assert stats.ahead_rounds > 0
    assert stats.ahead_hits <= sum(stats.rounds_by_accepted[1:])


@pytest.mark.parametrize("family", FAMILIES)
def test_concurrent_draft_ahead_requests_get_the_tokens_they_get_alone(random_models, family):
    target, draft = random_models[family]
    engine = LocalEngine(target, target, draft_ahead=True)
    cases = [(request(i, "sd", 2 + i % 4, 12 + 3 * i), random_video(seed=i, num_frames=2 + i % 3)) for i in range(6)]
    alone = [LocalEngine(target).generate(dict(body, decoding={"method": "ar"}), video).token_ids
             for body, video in cases]

    async def together():
        return await asyncio.gather(*(engine.agenerate(body, video) for body, video in cases))

    results = asyncio.run(together())
    assert [r.token_ids for r in results] == alone
    assert max(engine._drafter.batch_sizes) > 1, "no draft step was shared"
    assert sum(r.stats.ahead_hits for r in results) > 0


# ---- the draft worker's side: assumed tokens and settling ----------------------------------------


def _opened(worker, request_id: str, seed: int = 0) -> None:
    worker.prefill(PrefillRequest(request_id, random_frames(seed, 4), 4.0, "What moves?",
                                  SamplingParams(max_tokens=40)))


def test_assumed_tokens_are_drafted_after_but_not_committed(random_models):
    from specvid.decoding.draft import DraftWorker

    target, draft = random_models["qwen"]
    worker = DraftWorker(draft)
    _opened(worker, "committed")
    _opened(worker, "assumed")
    committed = worker.propose("committed", Commit(0, (5, 6, 7)), 4)
    assumed = worker.propose("assumed", Commit(0, (5,), assumed=(6, 7)), 4)
    assert assumed.tokens == committed.tokens
    assert worker.sessions.get("assumed").committed == [5]
    # The next call commits other tokens: the assumed ones leave the cache, nothing breaks.
    after = worker.propose("assumed", Commit(1, (9,)), 3)
    _opened(worker, "fresh")
    assert after.tokens == worker.propose("fresh", Commit(0, (5, 9)), 3).tokens


def test_a_settled_verdict_stops_a_round_drafting_ahead_once_its_path_leaves_it(random_models):
    from specvid.decoding.draft import DraftWorker

    target, draft = random_models["llava"]
    worker = DraftWorker(draft)
    _opened(worker, "r")
    full = worker.propose("r", Commit(0, (3,), assumed=(4, 5)), 6)
    assert len(full.tokens) == 6
    # The target kept 4 but not 5: the round drafting ahead of (4, 5) is discarded at once.
    worker.settle("r", 1, (4, 8))
    assert worker.propose("r", Commit(1, (), assumed=(4, 5)), 6).tokens == ()
    # The target kept both and picked the draft's own guess next: the round drafts on.
    worker.settle("r", 1, (4, 5, full.tokens[0]))
    assert worker.propose("r", Commit(1, (), assumed=(4, 5)), 6).tokens == full.tokens
    # A verdict about another round (another base) stops nothing.
    worker.settle("r", 0, (1,))
    assert worker.propose("r", Commit(1, (), assumed=(4, 5)), 6).tokens == full.tokens
