"""Engine behaviour around sessions: release, eviction and restore, sampling, bad requests."""

from __future__ import annotations

import asyncio

import pytest
import torch

from specvid.config import SamplingParams
from specvid.decoding.draft import DraftWorker
from specvid.decoding.session import PrefillRequest, VideoKeep
from specvid.engine import LocalEngine
from specvid.errors import InvalidRequestError
from tests.helpers import random_frames, random_video


def request(method="sd", max_tokens=24, **sampling):
    return {
        "video": "unused",
        "prompt": "What does the blue square do?",
        "spec": {"method": method, "num_draft_tokens": 4, "draft_length": "fixed"},
        "sampling": {"max_tokens": max_tokens, **sampling},
    }


def test_sessions_are_released_after_a_request(random_models):
    target, draft = random_models["qwen"]
    engine = LocalEngine(target, draft)
    engine.generate(request(), random_video(0))
    assert len(engine.target_worker.sessions) == 0
    assert len(engine.draft_worker.sessions) == 0


def test_sessions_are_released_when_a_stream_is_abandoned(random_models):
    target, draft = random_models["qwen"]
    engine = LocalEngine(target, draft)
    stream = engine.stream(request(max_tokens=40), random_video(0))
    next(stream)
    assert len(engine.target_worker.sessions) == 1
    stream.close()  # the consumer goes away mid-answer (e.g. a client disconnect)
    assert len(engine.target_worker.sessions) == 0
    assert len(engine.draft_worker.sessions) == 0


def test_evicted_sessions_are_restored_without_changing_the_output(random_models):
    target, draft = random_models["llava"]
    reference = LocalEngine(target, draft)
    expected = [reference.generate(request(), random_video(s)).token_ids for s in (1, 2)]

    # Room for one session per worker: two interleaved requests evict each other every round.
    engine = LocalEngine(target, draft, max_sessions=1)

    async def both():
        from specvid.decoding.stats import SpecStats

        stats = [SpecStats(), SpecStats()]

        async def run(i, seed):
            out = []
            async for chunk in engine.astream(request(), random_video(seed), stats[i]):
                out.extend(chunk.token_ids)
                await asyncio.sleep(0)  # let the other request take a round
            return out

        results = await asyncio.gather(run(0, 1), run(1, 2))
        return results, stats

    results, stats = asyncio.run(both())
    assert results == expected
    assert sum(s.sessions_restored for s in stats) > 0


def test_seeded_sampling_is_reproducible_and_in_vocab(random_models):
    target, draft = random_models["qwen"]
    engine = LocalEngine(target, draft)
    params = dict(temperature=0.8, top_k=50, seed=123)
    a = engine.generate(request(**params), random_video(3))
    b = engine.generate(request(**params), random_video(3))
    assert a.token_ids == b.token_ids
    assert all(0 <= t < target.vocab_size for t in a.token_ids)
    assert a.stats.rounds > 0


def test_sd_without_a_draft_is_a_clear_error(random_models):
    engine = LocalEngine(random_models["qwen"][0])
    with pytest.raises(InvalidRequestError, match="needs a draft"):
        engine.generate(request("sd"), random_video(0))


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt": ""},
        {"spec": {"method": "beam"}},
        {"spec": {"num_draft_tokens": 0}},
        {"sampling": {"max_tokens": 0}},
        {"sampling": {"temperature": -1}},
        {"surprise": 1},
    ],
)
def test_invalid_requests_are_rejected_with_400(random_models, bad):
    engine = LocalEngine(random_models["qwen"][0])
    body = {**request("ar"), **bad}
    with pytest.raises(InvalidRequestError) as err:
        engine.generate(body, random_video(0))
    assert err.value.status_code == 400


def test_mismatched_tokenizers_are_refused(random_models):
    from specvid.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="different tokenizers"):
        LocalEngine(random_models["qwen"][0], random_models["llava"][1])


def test_pruning_needs_the_draft_to_share_the_targets_video_grid(random_models):
    draft = DraftWorker(random_models["qwen"][1])
    request = PrefillRequest("grid", random_frames(0), 2.0, "Describe.", SamplingParams())
    with pytest.raises(InvalidRequestError, match="share a video token grid"):
        draft.prefill(request, VideoKeep(torch.arange(3), of=10_000))
