"""The colocated engine: draft, target and the decode loop in one process, behind the router.

With `AppArgs.colocate`, a replica of `EngineServer` holds a whole `LocalEngine` in one actor
(`EngineActor`): both prefills and every round run there, exactly as in process, and the router
relays the tokens. The router checks the request and fetches and decodes its video first, as
for the split deployment, so the engine's process keeps its cores for forwards (decoding videos
there cost its forwards 17 % of a core at 8 clients, measured). A request then costs one call and a
message per streamed chunk, where the split deployment (a draft replica, a target replica or a
tensor-parallel group, the loop in the router) pays two remote calls every round
(docs/serving.md measures both). For a single node where draft and target fit one process; the
split deployment stays what a target sharded over several GPUs needs.

A replica that dies mid-request is replaced by Serve; the router then runs the request again on
a live replica and skips the tokens the client already has. That run repeats them exactly when
decoding is greedy or seeded; a request sampled without a seed is given one by the router, so it
can be repeated too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import AsyncIterator, Callable

import ray
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.args import EngineServerArgs
from deployments.remote import REPLICA_LOST, unwrap
from deployments.workers import TargetFacts, TargetHost, use_reserved_cpus
from specvid.config import GenerationRequest, SourceConfig, parse
from specvid.decoding.stats import SpecStats
from specvid.engine import LocalEngine
from specvid.errors import UnavailableError
from specvid.models.loader import load_model
from specvid.request_path import IncrementalDetokenizer, StreamChunk
from specvid.video import DecodedVideo

RETRY_S = 60.0  # how long a request waits for a live replica before it is refused


@ray.remote
class EngineActor:
    """A `LocalEngine` in an actor of its own: every request's whole path, streamed."""

    def __init__(self, args: EngineServerArgs):
        cpus = use_reserved_cpus()
        draft = load_model(args.draft) if args.draft is not None else None
        # Prefills (long, compute-bound) take every reserved CPU; decode rounds (short steps, where
        # a thread that loses its core to another process stalls the rest) take `decode_threads`.
        torch.set_num_threads(min(cpus, args.decode_threads))
        # Videos arrive decoded from the router: the engine reads from no source at all.
        self.engine = LocalEngine(load_model(args.target), draft, sources=SourceConfig(s3_allowed_buckets=()),
                                  video_limits=args.video_limits, limits=args.limits,
                                  max_sessions=args.max_sessions, max_batch=args.batching.max_batch_size,
                                  draft_ahead=args.draft_ahead, prefill_threads=cpus)
        self.target = TargetHost(self.engine.target_worker)  # the facts a router asks of a target

    async def ready(self) -> bool:
        return True

    async def stream(self, request: dict, request_id: str, video: DecodedVideo) -> AsyncIterator[dict]:
        """The request's rounds over its decoded `video` as {"token_ids"} (the router makes the
        text), then {"stats"}."""
        stats = SpecStats()
        async for chunk in self.engine.astream(request, video, stats=stats, request_id=request_id):
            if chunk.token_ids:
                yield {"token_ids": chunk.token_ids}
        yield {"stats": dataclasses.asdict(stats)}

    async def describe(self) -> dict:
        return self.target.describe()

    async def frame_size(self, width: int, height: int) -> tuple[int, int]:
        return self.target.frame_size(width, height)

    async def context(self, prompt: str, frames: int, width: int, height: int) -> tuple[int, int]:
        return self.target.context(prompt, frames, width, height)

    async def sessions(self) -> tuple[int, int]:
        """Sessions open now: the target's and the draft's."""
        draft = self.engine.draft_worker
        return len(self.engine.target_worker.sessions), 0 if draft is None else len(draft.sessions)


@serve.deployment(ray_actor_options={"num_cpus": 0})
class EngineServer(TargetFacts):
    def __init__(self, args: EngineServerArgs):
        args = parse(EngineServerArgs, args)
        self.actor = EngineActor.options(**args.resources.ray_options()).remote(args)
        ray.get(self.actor.ready.remote())  # loaded (and compiled) before the replica reports healthy


class RemoteEngine:
    """The router's side of a colocated engine: one request's tokens, from a live replica."""

    def __init__(self, handle: DeploymentHandle, retry_s: float = RETRY_S):
        self.handle = handle
        self.retry_s = retry_s

    async def stream(self, request: GenerationRequest, request_id: str, stats: SpecStats,
                     decode_text: Callable[[list[int]], str], video: DecodedVideo) -> AsyncIterator[StreamChunk]:
        """The request's chunks over its decoded `video`; `stats` is filled in when it ends. A
        replica lost on the way is replaced by another, which repeats the request; the tokens
        already streamed are skipped."""
        request, video = _repeatable(request), ray.put(video)  # the frames go to the object store once
        detok = IncrementalDetokenizer(decode_text)
        loop = asyncio.get_running_loop()
        delay, deadline = 0.1, loop.time() + self.retry_s
        while True:
            try:
                async for tokens in self._attempt(request, request_id, video, stats, skip=len(detok.token_ids)):
                    yield StreamChunk(tokens, detok.add(tokens))
                break
            except REPLICA_LOST as error:
                if loop.time() + delay > deadline:
                    raise UnavailableError(f"no engine replica could finish the request: {error}") from None
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)
        if rest := detok.flush():
            yield StreamChunk([], rest)

    async def _attempt(self, request: GenerationRequest, request_id: str, video: ray.ObjectRef, stats: SpecStats,
                       skip: int) -> AsyncIterator[list[int]]:
        """One run on a replica: its rounds' tokens past the first `skip`."""
        actor = await self.handle.endpoint.remote()
        messages = actor.stream.options(num_returns="streaming").remote(request.model_dump(), request_id, video)
        try:
            async for ref in messages:
                try:
                    message = await ref
                except ray.exceptions.RayTaskError as error:
                    raise unwrap(error) from None
                if "stats" in message:
                    _fill(stats, message["stats"])
                    continue
                tokens, skip = message["token_ids"][skip:], max(0, skip - len(message["token_ids"]))
                if tokens:
                    yield tokens
        finally:
            ray.cancel(messages)  # a client that went away frees the request's sessions at once


def _repeatable(request: GenerationRequest) -> GenerationRequest:
    """The request with a seed if it samples without one, so a repeated run gives the same tokens."""
    if request.sampling.greedy or request.sampling.seed is not None:
        return request
    sampling = request.sampling.model_copy(update={"seed": random.getrandbits(63)})
    return request.model_copy(update={"sampling": sampling})


def _fill(stats: SpecStats, fields: dict) -> None:
    for name, value in fields.items():
        setattr(stats, name, value)
