"""Batched decoding: concurrent requests share forwards and get exactly what they get alone."""

from __future__ import annotations

import asyncio

import pytest
import torch

from specvid.decoding.batching import Batcher
from specvid.engine import LocalEngine
from specvid.errors import SessionLostError
from tests.helpers import FAMILIES, random_frames, random_video

TOL = 1e-4


def run(coro):
    return asyncio.run(coro)


def test_calls_that_arrive_together_run_as_one_batch_and_a_lone_call_runs_at_once():
    batches: list[list[int]] = []

    async def double(calls):
        batches.append(list(calls))
        return [2 * c for c in calls]

    async def main():
        batcher = Batcher(double, max_batch=3)
        together = await asyncio.gather(*(batcher(i) for i in range(5)))
        alone = await batcher(7)
        return together, alone, batcher.sizes

    together, alone, sizes = run(main())
    assert together == [0, 2, 4, 6, 8] and alone == 14
    assert batches == [[0, 1, 2], [3, 4], [7]]  # at most max_batch, in arrival order
    assert sizes == {3: 1, 2: 1, 1: 1}


def test_each_caller_gets_its_own_error_and_a_failed_batch_fails_all_of_its_callers():
    async def some_fail(calls):
        if "boom" in calls:
            raise RuntimeError("the batched call failed")
        return [SessionLostError(f"lost {c}") if c < 0 else c for c in calls]

    async def main():
        batcher = Batcher(some_fail)
        mixed = await asyncio.gather(batcher(1), batcher(-2), batcher(3), return_exceptions=True)
        failed = await asyncio.gather(batcher("boom"), batcher(4), return_exceptions=True)
        return mixed, failed

    mixed, failed = run(main())
    assert mixed[0] == 1 and mixed[2] == 3
    assert isinstance(mixed[1], SessionLostError) and "lost -2" in str(mixed[1])
    assert all(isinstance(e, RuntimeError) for e in failed)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batched_forward_equals_each_sequence_alone(random_models, family):
    """Three sequences at different lengths, with blocks of 3, 1 and 6 tokens padded into one
    forward; then a second batched step, which must not see the padding of the first."""
    target = random_models[family][0]
    prompts = [target.build_prompt(random_frames(seed, num_frames=2 + seed), f"Question {seed}?") for seed in range(3)]
    history = [[], [17], [17, 19]]
    blocks = [[5, 9, 11], [7], [3, 4, 8, 13, 21, 2]]

    def opened(prompt, tokens):
        state, _ = target.prefill(prompt, reserve=16)
        if tokens:
            target.extend(state, tokens)
        return state

    states = [opened(p, h) for p, h in zip(prompts, history)]
    batched = target.extend_many(states, blocks)
    following = target.extend_many(states, [[30]] * 3)
    for prompt, tokens, block, got, then in zip(prompts, history, blocks, batched, following):
        alone = opened(prompt, tokens)
        assert torch.allclose(got, target.extend(alone, block), atol=TOL)
        assert torch.allclose(then, target.extend(alone, [30]), atol=TOL)


REQUESTS = [
    ("ar", {}),
    ("sd", {}),
    ("sd", {"temperature": 0.8, "seed": 3}),
    ("specvlm", {}),
    ("lvspec", {}),
    ("lvspec", {"relevance": "attention"}),
    ("sd", {"num_draft_tokens": 3, "draft_confidence": 0.3}),
    ("ar", {"max_tokens": 5}),
]


def _request(case: int, method: str, options: dict) -> dict:
    sampling = {"max_tokens": options.get("max_tokens", 20), "ignore_eos": True}
    if "temperature" in options:
        sampling.update(temperature=options["temperature"], seed=options["seed"])
    decoding = {"method": method, "draft_length": "fixed", **{k: v for k, v in options.items() if k in ("relevance", "num_draft_tokens", "draft_confidence")}}
    return {"video": "unused", "prompt": f"Request {case}: which shape moves?", "decoding": decoding, "sampling": sampling}


@pytest.mark.parametrize("family", FAMILIES)
def test_concurrent_requests_get_the_tokens_they_get_alone(random_models, family):
    target, draft = random_models[family]
    engine = LocalEngine(target, draft)
    cases = [(_request(i, method, options), random_video(seed=i, num_frames=2 + i % 3)) for i, (method, options) in enumerate(REQUESTS)]
    alone = [engine.generate(request, video).token_ids for request, video in cases]

    async def together():
        return await asyncio.gather(*(engine.agenerate(request, video) for request, video in cases))

    results = run(together())
    assert [r.token_ids for r in results] == alone
    sizes = engine._verifier.batch_sizes
    assert max(sizes) > 1, f"no verify forward was shared: {dict(sizes)}"
    assert max(engine._drafter.batch_sizes) > 1


def test_a_loop_that_shuts_down_mid_batch_leaves_nothing_to_run_in_the_next():
    ran: list[list[int]] = []

    async def slow(calls):
        ran.append(list(calls))
        await asyncio.sleep(10)
        return calls

    batcher = Batcher(slow, max_batch=1)  # calls 1 and 2 wait behind the first

    async def abandon():
        calls = [asyncio.ensure_future(batcher(i)) for i in range(3)]
        await asyncio.sleep(0.05)  # the first batch runs; the loop then closes under it
        return calls

    run(abandon())  # asyncio.run cancels what is left
    assert ran == [[0]] and batcher.queued == 0

    async def fast(calls):
        ran.append(list(calls))
        return calls

    batcher.run_many = fast
    assert run(batcher(7)) == 7 and ran[-1] == [7]
