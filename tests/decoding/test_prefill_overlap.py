"""Both workers prefill at the same time where the draft does not need the target's result
(`sd`, towers of their own), and one after the other where it does (`specvlm` prunes by the
target's scores; a shared vision tower hands its output over)."""

from __future__ import annotations

import asyncio
import time

import pytest

from specvid.config import DecodingConfig, SamplingParams
from specvid.decoding.loop import decode
from specvid.decoding.session import PrefillRequest
from specvid.decoding.stats import SpecStats
from specvid.engine import LocalEngine
from specvid.request_path import sampled_fps
from tests.helpers import random_video


class Timed:
    """A worker whose prefill takes a moment of waiting first (as a remote call does), timed."""

    def __init__(self, worker, spans: dict, name: str):
        self.worker, self.spans, self.name = worker, spans, name

    async def prefill(self, *args):
        started = time.perf_counter()
        await asyncio.sleep(0.2)  # the trip to a replica: other work may run meanwhile
        result = await self.worker.prefill(*args)
        self.spans[self.name] = (started, time.perf_counter())
        return result

    def __getattr__(self, name):
        return getattr(self.worker, name)


def prefill_spans(engine: LocalEngine, method: str, share_vision: bool = False) -> tuple[dict, list[int]]:
    spans: dict = {}
    drafter, verifier = engine.workers("r", None, True)
    video = random_video(5)
    request = PrefillRequest("r", video.frames, sampled_fps(video), "What moves?", SamplingParams(max_tokens=12),
                             share_vision=share_vision)

    async def run() -> list[int]:
        tokens = []
        async for emitted in decode(Timed(drafter, spans, "draft"), Timed(verifier, spans, "target"), request,
                                    DecodingConfig(method=method), SpecStats()):
            tokens += emitted
        return tokens

    return spans, asyncio.run(run())


def overlap(spans: dict) -> bool:
    (a0, a1), (b0, b1) = spans["draft"], spans["target"]
    return a0 < b1 and b0 < a1


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_the_two_prefills_overlap_only_where_the_draft_does_not_wait_for_the_target(random_models, family):
    target, draft = random_models[family]
    engine = LocalEngine(target, draft)
    ar_tokens = LocalEngine(target).generate({"video": "unused", "prompt": "What moves?", "decoding": {"method": "ar"},
                                              "sampling": {"max_tokens": 12}}, random_video(5)).token_ids
    spans, tokens = prefill_spans(engine, "sd")
    assert overlap(spans) and tokens == ar_tokens
    spans, tokens = prefill_spans(engine, "specvlm")
    assert not overlap(spans) and spans["target"][1] <= spans["draft"][0] and tokens == ar_tokens
    same_tower = LocalEngine(target, target)  # a draft with the target's tower takes its output: it waits
    spans, _ = prefill_spans(same_tower, "sd", share_vision=True)
    assert not overlap(spans)

