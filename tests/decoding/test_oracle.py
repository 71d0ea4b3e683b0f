"""The oracle: with exact verification, speculative output equals the target's greedy output.

For both families, 20 seeded clips and prompts each, across draft lengths and max_tokens
boundaries, with a different random draft and with the target as its own draft.
"""

from __future__ import annotations

import pytest

from specvid.engine import LocalEngine
from specvid.errors import InvalidRequestError
from tests.helpers import FAMILIES, random_video

CASES = 20
DRAFT_LENGTHS = (1, 2, 3, 5, 8)
MAX_TOKENS = (1, 2, 6, 7, 17, 24, 40)


@pytest.fixture(scope="module")
def engines(random_models):
    """Per family: target alone, target + random draft, target drafting for itself."""
    return {
        f: {
            "ar": LocalEngine(target),
            "random_draft": LocalEngine(target, draft),
            "self_draft": LocalEngine(target, target),
        }
        for f, (target, draft) in random_models.items()
    }


def request(case: int, method: str, k: int, max_tokens: int, stop=()):
    return {
        "video": "unused",
        "prompt": f"Question {case}: what happens to the {['red', 'blue', 'green'][case % 3]} shape?",
        "spec": {"method": method, "num_draft_tokens": k, "draft_length": "fixed"},
        "sampling": {"max_tokens": max_tokens, "stop_token_ids": list(stop)},
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_sd_equals_greedy_target(engines, family):
    e = engines[family]
    for case in range(CASES):
        video = random_video(seed=case)
        k, max_tokens = DRAFT_LENGTHS[case % 5], MAX_TOKENS[case % 7]
        ar = e["ar"].generate(request(case, "ar", k, max_tokens), video)
        sd = e["random_draft"].generate(request(case, "sd", k, max_tokens), video)
        own = e["self_draft"].generate(request(case, "sd", k, max_tokens), video)
        assert sd.token_ids == ar.token_ids, f"case {case}: random draft changed the output"
        assert own.token_ids == ar.token_ids, f"case {case}: self draft changed the output"
        assert len(ar.token_ids) <= max_tokens
        assert ar.stats.tau == 0 and ar.stats.drafted == 0
        # The target drafting for itself: every draft token is accepted.
        assert own.stats.accepted == own.stats.drafted
        if max_tokens > k + 1 and len(ar.token_ids) == max_tokens:
            assert own.stats.tau > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_adaptive_draft_length_stops_early_and_keeps_the_output(engines, family):
    e = engines[family]
    video = random_video(seed=3)
    ar = e["ar"].generate(request(3, "ar", 6, 40), video)
    fixed = e["random_draft"].generate(request(3, "sd", 6, 40), video)
    body = request(3, "sd", 6, 40)
    body["spec"]["draft_confidence"] = 0.5  # a random draft is rarely this sure
    adaptive = e["random_draft"].generate(body, video)
    assert adaptive.token_ids == ar.token_ids
    assert adaptive.stats.drafted / adaptive.stats.rounds < fixed.stats.drafted / fixed.stats.rounds


def first_occurrences_inside_blocks(tokens: list[int], k: int) -> list[int]:
    """Indices whose token appears there first and that do not end a self-draft round.

    Token 0 comes from prefill; each round where the target drafts for itself emits k + 1
    tokens, so index i ends a round when i % (k + 1) == 0.
    """
    return [i for i, t in enumerate(tokens) if i >= 2 and tokens.index(t) == i and i % (k + 1)]


@pytest.mark.parametrize("family", FAMILIES)
def test_stop_token_inside_a_draft_block(engines, family):
    e = engines[family]
    checked = 0
    for case in range(8):
        video = random_video(seed=100 + case)
        full = e["ar"].generate(request(case, "ar", 5, 30), video)
        candidates = first_occurrences_inside_blocks(full.token_ids, k=5)
        if not candidates:
            continue  # a random model looping on one or two tokens offers no such position
        # Make a token the target emits mid-answer a stop token: every method must end just
        # before it, although for the self draft it falls inside a draft block.
        first = candidates[case % len(candidates)]
        stop = (full.token_ids[first],)
        ar = e["ar"].generate(request(case, "ar", 5, 30, stop), video)
        sd = e["random_draft"].generate(request(case, "sd", 5, 30, stop), video)
        own = e["self_draft"].generate(request(case, "sd", 5, 30, stop), video)
        assert ar.token_ids == full.token_ids[:first]
        assert ar.finish_reason == "stop"
        assert sd.token_ids == ar.token_ids and own.token_ids == ar.token_ids
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("family", FAMILIES)
def test_max_tokens_one_is_the_prefill_token(engines, family):
    video = random_video(seed=7)
    ar = engines[family]["ar"].generate(request(7, "ar", 5, 1), video)
    sd = engines[family]["self_draft"].generate(request(7, "sd", 5, 1), video)
    assert len(ar.token_ids) == 1 and sd.token_ids == ar.token_ids
    assert sd.stats.rounds == 0 and ar.finish_reason == "length"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "pruning",
    [{"drop_rate": 0.9}, {"drop_rate": 0.5}, {"pruning": "uniform"}, {"draft_positions": "compact"}],
)
def test_specvlm_equals_greedy_target(engines, family, pruning):
    e = engines[family]
    for case in range(6):
        video = random_video(seed=200 + case)
        k, max_tokens = DRAFT_LENGTHS[case % 5], MAX_TOKENS[(case + 3) % 7]
        ar = e["ar"].generate(request(case, "ar", k, max_tokens), video)
        pruned = request(case, "specvlm", k, max_tokens)
        pruned["spec"].update(pruning)
        out = e["random_draft"].generate(pruned, video)
        assert out.token_ids == ar.token_ids, f"case {case}: pruning the draft changed the output"
        budget = round(out.stats.video_tokens * (1 - pruning.get("drop_rate", 0.9)))
        assert out.stats.draft_video_tokens == budget < out.stats.video_tokens


LOOSE_RANKINGS = ("embedding", "attention", "random")


def loose_request(case: int, method: str, k: int, max_tokens: int, **knobs):
    body = request(case, method, k, max_tokens)
    body["spec"].update(knobs)
    return body


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("relevance", LOOSE_RANKINGS)
def test_lvspec_with_nothing_loose_equals_sd(engines, family, relevance):
    """lam = 0 (every position an anchor) with the shift rule off is exact verification."""
    e = engines[family]
    for case in range(6):
        video = random_video(seed=300 + case)
        k, max_tokens = DRAFT_LENGTHS[case % 5], MAX_TOKENS[(case + 2) % 7]
        sd = e["random_draft"].generate(request(case, "sd", k, max_tokens), video)
        exact = dict(lam=0.0, shift_window=0, relevance=relevance)
        lv = e["random_draft"].generate(loose_request(case, "lvspec", k, max_tokens, **exact), video)
        both = loose_request(case, "lvspec+specvlm", k, max_tokens, **exact)
        pruned = e["random_draft"].generate(both, video)
        specvlm = e["random_draft"].generate(request(case, "specvlm", k, max_tokens), video)
        assert lv.token_ids == sd.token_ids, f"case {case}"
        assert (lv.stats.rounds, lv.stats.accepted) == (sd.stats.rounds, sd.stats.accepted)
        assert pruned.token_ids == specvlm.token_ids == sd.token_ids
        assert lv.stats.loose_accepts == lv.stats.shift_rescues == pruned.stats.loose_accepts == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_filler_gate_of_one_makes_every_position_exact(engines, family):
    """lam = 1 relaxes every position, but filler_ratio 1 accepts a filler mismatch only when the
    target likes the draft's token as much as its own (a float tie): with the shift rule off that
    is exact verification again, so the gate is applied inside the target worker."""
    e = engines[family]
    for case in range(3):
        video = random_video(seed=500 + case)
        sd = e["random_draft"].generate(request(case, "sd", 5, 30), video)
        gated = dict(lam=1.0, shift_window=0, filler_ratio=1.0)
        lv = e["random_draft"].generate(loose_request(case, "lvspec", 5, 30, **gated), video)
        assert lv.token_ids == sd.token_ids, f"case {case}"
        assert lv.stats.loose_accepts == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_lvspec_accepts_more_of_a_random_draft(engines, family):
    """A random draft disagrees with the target almost everywhere: loose verification keeps some
    of its tokens (more accepted per round, counted as loose accepts), exact verification not."""
    e = engines[family]
    sd_accepted = lv_accepted = loose = 0
    for case in range(4):
        video = random_video(seed=400 + case)
        sd = e["random_draft"].generate(request(case, "sd", 5, 40), video)
        lv = e["random_draft"].generate(loose_request(case, "lvspec", 5, 40, lam=0.9, shift_window=0), video)
        sd_accepted += sd.stats.accepted
        lv_accepted += lv.stats.accepted
        loose += lv.stats.loose_accepts
        assert lv.stats.loose_accepts + lv.stats.shift_rescues <= lv.stats.accepted
    assert loose > 0 and lv_accepted > sd_accepted


@pytest.mark.parametrize("family", FAMILIES)
def test_lvspec_self_draft_never_relaxes(engines, family):
    """When the draft is the target, every token matches: nothing is loose, output is ar's."""
    e = engines[family]
    video = random_video(seed=500)
    ar = e["ar"].generate(request(0, "ar", 5, 30), video)
    own = e["self_draft"].generate(loose_request(0, "lvspec", 5, 30, lam=0.9, shift_window=3), video)
    assert own.token_ids == ar.token_ids
    assert own.stats.loose_accepts == own.stats.shift_rescues == 0


def test_lvspec_with_sampling_is_a_clear_error(engines):
    body = loose_request(0, "lvspec", 5, 10)
    body["sampling"]["temperature"] = 0.8
    with pytest.raises(InvalidRequestError, match="greedy decoding only"):
        engines["qwen"]["random_draft"].generate(body, random_video(seed=1))
