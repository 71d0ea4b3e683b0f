"""Load-adaptive draft length: the chooser alone, then in `LocalEngine` under changing load."""

import asyncio

import numpy as np

import pytest

from specvid.decoding.draft_length import PROBE_EVERY, REDECIDE_EVERY, Acceptance, DraftLengths, ForwardCosts
from specvid.decoding.stats import SpecStats
from specvid.engine import LocalEngine
from specvid.models.loader import load_model
from specvid.shapesworld.clips import make_clip
from specvid.shapesworld.world import split_seeds
from specvid.video import DecodedVideo

CAP = 4


def verify_ms(rows: int, width: int) -> float:
    """A target whose forward is fixed cost alone (memory-bound) and tokens' cost in a batch."""
    return 5.0 if rows == 1 else 2.0 * rows * width


def draft_ms(rows: int, steps: int) -> float:
    return steps * (0.5 if rows == 1 else 1.0 * rows)


def measured(lengths: DraftLengths, rows: int, widths=range(1, CAP + 2)) -> None:
    for width in widths:
        lengths.record_forward("verify", rows, width, verify_ms(rows, width) / 1e3)
        if width <= CAP:
            lengths.record_forward("draft", rows, width, draft_ms(rows, width) / 1e3)


def good_draft(lengths: DraftLengths, rounds: int = 50) -> None:
    for _ in range(rounds):
        lengths.record_round("sd", CAP, CAP, CAP, None, 0.0)


def choose_at(lengths: DraftLengths, rows: int) -> int:
    """The k the estimates favour for a batch of `rows`."""
    return lengths.best("sd", rows, CAP)


def test_a_lone_request_drafts_and_a_compute_bound_batch_does_not():
    lengths = DraftLengths()
    assert lengths.choose("sd", CAP) == CAP  # nothing measured: draft, and measure
    good_draft(lengths)
    measured(lengths, 1)
    measured(lengths, 8)
    assert choose_at(lengths, 1) == CAP
    assert choose_at(lengths, 8) == 0
    assert choose_at(lengths, 1) == CAP  # the load fell: speculation comes back


def test_unmeasured_shapes_are_read_off_the_measured_ones():
    verify = ForwardCosts(steps=False)
    verify.record(1, 6, 0.006)
    assert verify.estimate(1, 1) == pytest.approx(0.006)  # one width known: wider costs the same
    verify.record(8, 6, 0.048)
    assert verify.estimate(8, 1) == pytest.approx(0.006 + (8 - 6) * (0.042 / 42))  # the line through both
    draft = ForwardCosts(steps=True)
    draft.record(1, 5, 0.005)
    assert draft.estimate(1, 2) == pytest.approx(0.002)  # steps run one after another
    assert draft.estimate(1, 0) == 0.0


def test_a_draft_the_target_rejects_is_not_used_and_tried_again_later():
    lengths = DraftLengths()
    measured(lengths, 1)
    for _ in range(60):
        lengths.record_round("sd", CAP, CAP, 0, None, 0.0)
    assert choose_at(lengths, 1) == 0
    # Rounds that draft nothing measure no acceptance: the estimate drifts back to the prior.
    for _ in range(600):
        lengths.record_round("sd", 0, 0, 0, None, 0.0)
    assert Acceptance().rate(0) > 0.5
    for _ in range(600):
        lengths.acceptance["sd"].record(0, 0)
    assert choose_at(lengths, 1) > 0


def rounds_at(lengths: DraftLengths, rows: int, rounds: int) -> list[int]:
    """The k each request of a batch of `rows` gets, round after round."""
    lengths.decoding = rows
    return [lengths.choose("sd", CAP) for _ in range(rounds * rows)]


def test_a_batch_keeps_its_k_and_probes_the_other_side_now_and_then():
    lengths = DraftLengths()
    good_draft(lengths)
    measured(lengths, 1)
    measured(lengths, 8)
    assert set(rounds_at(lengths, 8, REDECIDE_EVERY)) == {0}
    lengths.record_forward("verify", 8, 1, 1.05 * verify_ms(8, 1) / 1e3)  # noise does not flip it
    ks = rounds_at(lengths, 8, PROBE_EVERY)
    assert ks.count(CAP) == 1 and ks.count(0) == len(ks) - 1  # one probe of drafting per PROBE_EVERY rounds
    ks = rounds_at(lengths, 1, PROBE_EVERY)
    assert ks.count(0) == 1 and ks.count(CAP) == len(ks) - 1  # and alone, one probe of not drafting


def test_one_slow_forward_does_not_decide_for_long():
    lengths = DraftLengths()
    good_draft(lengths)
    measured(lengths, 1)
    lengths.record_forward("draft", 1, CAP, 5.0)  # a pause: a compilation, another process on the core
    assert choose_at(lengths, 1) == CAP  # the median of the shape's measurements


def test_acceptance_counts_only_the_positions_judged():
    acceptance = Acceptance()
    acceptance.record(drafted=5, accepted=2)  # positions 0, 1 kept, 2 rejected, 3-4 never judged
    assert acceptance.tried == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert acceptance.accepted == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert acceptance.expected_tokens(0) == 1.0


class ProfiledCosts:
    """Forward costs of a known machine, so the test decides what the load means; everything
    else (acceptance, batch sizes, the rounds) is the engine's own."""

    def __init__(self, cost_ms):
        self.cost_ms = cost_ms
        self.seconds = {}  # no shape measured whole: the profile's parts decide

    def record(self, rows, width, seconds):
        pass

    def estimate(self, rows, width):
        return self.cost_ms(rows, width) / 1e3


@pytest.fixture(scope="module")
def zoo_engine():
    engine = LocalEngine(load_model("qwen-tiny"), load_model("qwen-tiny-draft"))
    engine.draft_lengths.verify = ProfiledCosts(verify_ms)
    engine.draft_lengths.draft = ProfiledCosts(draft_ms)
    engine.draft_lengths.rounds = ProfiledCosts(lambda rows, width: 0.0)  # whole rounds: the parts' sum
    return engine


def zoo_requests(count: int, **decoding):
    requests = []
    for seed in split_seeds("eval", count):
        clip = make_clip(seed, num_frames=4)
        video = DecodedVideo(clip.frames, np.arange(len(clip.frames)) / 2.0, 2.0, len(clip.frames) / 2.0, (112, 112))
        body = {"video": "unused", "prompt": clip.caption_prompt, "sampling": {"max_tokens": 24, "ignore_eos": True},
                "decoding": {"method": "sd", "num_draft_tokens": CAP, **decoding}}
        requests.append((body, video))
    return requests


def run_together(engine, requests):
    async def together():
        return await asyncio.gather(*(engine.agenerate(body, video) for body, video in requests))

    return asyncio.run(together())


def drafted_throughout(stats: SpecStats) -> bool:
    """Whether every round chose to draft (but a last one, with no budget left for drafts)."""
    return stats.rounds_by_draft_length[0] <= 1 and stats.mean_draft_length > 2


def test_the_draft_length_falls_to_zero_under_load_and_comes_back(zoo_engine):
    requests = zoo_requests(8)
    ar = [zoo_engine.generate({**body, "decoding": {"method": "ar"}}, video).token_ids for body, video in requests]
    alone = zoo_engine.generate(*requests[0])
    assert drafted_throughout(alone.stats)
    loaded = run_together(zoo_engine, requests)
    assert [r.token_ids for r in loaded] == ar  # the same tokens at every k
    assert sum(r.stats.rounds_by_draft_length[0] for r in loaded) > 0.6 * sum(r.stats.rounds for r in loaded)
    assert any(r.stats.draft_deferred for r in loaded)  # began under load: no draft prefill until needed
    again = zoo_engine.generate(*requests[1])
    assert again.token_ids == ar[1]
    assert drafted_throughout(again.stats)


def test_a_pinned_draft_length_drafts_under_load(zoo_engine):
    requests = zoo_requests(4, draft_length="fixed")
    loaded = run_together(zoo_engine, requests)
    for result in loaded:  # every round drafts CAP, but where the token budget cuts the last ones
        assert result.stats.rounds_by_draft_length[CAP] >= result.stats.rounds - CAP
        assert not result.stats.draft_deferred


def test_a_loose_method_drafts_a_fixed_k_whatever_the_load(zoo_engine):
    # What LVSpec accepts depends on what was drafted: an answer must not follow the load.
    requests = zoo_requests(4, method="lvspec")
    alone = [zoo_engine.generate(body, video) for body, video in requests]
    loaded = run_together(zoo_engine, requests)
    assert [r.token_ids for r in loaded] == [r.token_ids for r in alone]
    for result in loaded:
        assert result.stats.rounds_by_draft_length[CAP] >= result.stats.rounds - CAP
