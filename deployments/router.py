"""The router: the application's ingress, which runs the decode loop over remote workers.

Per request it fetches and decodes the video once, puts the frames in the object store, and
runs `specvid.request_path.run_request` (the request path `LocalEngine` runs) with a remote
drafter and verifier: the router is that path's transport. With `colocate`, a replica of the
engine deployment runs the whole path instead and the router relays its tokens
(`deployments/colocated.py`). Either way the router admits, times out, meters and formats.
Python callers take it through the handle methods `generate` and `stream`; HTTP callers through
the FastAPI routes below.
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import AsyncIterator, Optional

import ray
from fastapi import Request
from fastapi.responses import StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.args import AppArgs
from deployments.colocated import RemoteEngine
from deployments.graphs import Links
from deployments.http import api, api_key_from_env, configure, error_response, json_body
from deployments.metrics import RouterMetrics
from deployments.openai_api import (
    ChatCompletionRequest,
    chunk,
    completion,
    models_list,
    to_generation_request,
    usage,
)
from deployments.remote import RemoteDrafter, RemoteVerifier
from specvid.admission import AdmissionGate
from specvid.config import GenerationRequest, parse
from specvid.decoding.draft_length import DraftLengths
from specvid.decoding.stats import SpecStats
from specvid.errors import (
    ModelLoadError,
    ModelNotFoundError,
    OverloadedError,
    RequestTimeoutError,
    SpecVidError,
)
from specvid.request_path import (
    GenerationResult,
    check_request,
    RequestShape,
    StreamChunk,
    collect,
    finish_reason,
    load_video,
    run_request,
)

logger = logging.getLogger("ray.serve")


class GenerateBody(GenerationRequest):
    """The native REST body: a generation request, optionally streamed as server-sent events."""

    stream: bool = False


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def _prepend(first, rest: AsyncIterator) -> AsyncIterator:
    yield first
    async for item in rest:
        yield item


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
@serve.ingress(api)
class Router:
    def __init__(self, args: dict, target: DeploymentHandle, draft: Optional[DeploymentHandle] = None):
        self.args = parse(AppArgs, args)
        api_key = api_key_from_env(self.args.api_key_env)
        if api_key is None and self.args.require_api_key:
            raise ModelLoadError(
                f"require_api_key is set but {self.args.api_key_env} is empty: refusing to serve without a key"
            )
        configure(api_key, self.args.limits)
        self.target, self.draft = target, draft
        # Colocated: `target` is an engine replica that runs whole requests (`deployments/colocated.py`).
        self.engine = RemoteEngine(target) if self.args.colocate else None
        self.metrics = RouterMetrics()
        self.gate = AdmissionGate(self.args.admission)
        self._tokenizer = None
        self._target_description: Optional[dict] = None
        self._shares_vision: Optional[bool] = None
        self._frame_sizes: dict[tuple[int, int], tuple[int, int]] = {}
        # Compiled graphs to the worker actors this replica's requests reach (`deployments/graphs.py`).
        self.links = Links(self.args.batching.max_batch_size, enabled=self.args.compiled_graphs)
        # Every round's k for the requests this replica decodes (`specvid/decoding/draft_length.py`).
        self.draft_lengths = DraftLengths()

    def __del__(self):
        self.links.close()  # Serve calls this when the replica shuts down

    # ---- the request path's transport ---------------------------------------------------------------

    @property
    def limits(self):
        return self.args.limits

    @property
    def video_limits(self):
        return self.args.video_limits

    @property
    def has_draft(self) -> bool:
        return self.args.draft is not None

    @property
    def draft_ahead(self) -> bool:
        return self.args.draft_ahead

    async def decode_text(self):
        if self._tokenizer is None:
            self._tokenizer = (await self._target_facts())["tokenizer"]
        tokenizer = self._tokenizer
        return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)

    async def vision_shared(self) -> bool:
        """Whether the draft's vision tower is the target's (asked once of both deployments)."""
        if self._shares_vision is None:
            draft = await self.draft.describe.remote() if self.draft is not None else None
            target = await self._target_facts()
            self._shares_vision = draft is not None and draft.get("vision_tower") == target.get("vision_tower")
        return self._shares_vision

    async def _target_facts(self) -> dict:
        if self._target_description is None:
            self._target_description = await self.target.describe.remote()
        return self._target_description

    async def _frame_size(self, width: int, height: int) -> tuple[int, int]:
        if (width, height) not in self._frame_sizes:
            self._frame_sizes[width, height] = tuple(await self.target.frame_size.remote(width, height))
        return self._frame_sizes[width, height]

    async def shape(self, request: GenerationRequest, frames: int) -> RequestShape:
        width, height = await self._frame_size(request.video_sampling.width, request.video_sampling.height)
        context, window = await self.target.context.remote(request.prompt, frames, width, height)
        return RequestShape(width, height, context, window)

    async def video_for(self, request: GenerationRequest):
        size = await self._frame_size(request.video_sampling.width, request.video_sampling.height)
        return await asyncio.to_thread(
            load_video,
            request.video,
            request.video_sampling,
            lambda w, h: size,
            self.args.sources,
            self.args.video_limits,
        )

    def workers(self, request_id: str, video, uses_draft: bool):
        frames = ray.put(video.frames)  # once per request, shared by both sides
        drafter = (
            RemoteDrafter(self.draft, frames, propose_timeout_s=self.args.draft_timeout_s, links=self.links)
            if uses_draft
            else None
        )
        return drafter, RemoteVerifier(self.target, frames, links=self.links)

    # ---- the one path every entry point takes ------------------------------------------------

    async def _chunks(
        self, request: GenerationRequest, request_id: str, stats: SpecStats
    ) -> AsyncIterator[StreamChunk]:
        started = time.perf_counter()
        first_token_s: Optional[float] = None
        outcome, status = "error", 500
        try:
            async with asyncio.timeout(self.args.request_timeout_s), self._admitted():
                chunks = (self._engine_chunks(request, request_id, stats) if self.engine is not None
                          else run_request(self, request, stats, request_id))
                try:
                    async for item in chunks:
                        if first_token_s is None and item.token_ids:
                            first_token_s = time.perf_counter() - started
                        yield item
                finally:
                    await chunks.aclose()  # frees both sessions, also on disconnect or timeout
            outcome, status = "ok", 200
        except OverloadedError:
            outcome, status = "rejected", OverloadedError.status_code
            self.metrics.rejected.inc(1, {"model": self.args.served_model_name})
            raise
        except TimeoutError:
            outcome, status = "timeout", RequestTimeoutError.status_code
            raise RequestTimeoutError(
                f"the request did not finish within {self.args.request_timeout_s} s"
            ) from None
        except asyncio.CancelledError:
            outcome, status = "cancelled", 499  # the client went away
            raise
        except SpecVidError as error:
            status = error.status_code
            raise
        finally:
            elapsed_ms = 1e3 * (time.perf_counter() - started)
            logger.info(
                "request %s %s %d: %d tokens, tau %.2f, %.0f ms",
                request_id, request.decoding.method, status, stats.emitted, stats.tau, elapsed_ms,
            )
            self.metrics.record(
                self.args.served_model_name,
                request.decoding.method,
                stats,
                time.perf_counter() - started,
                first_token_s,
                outcome,
            )

    async def _engine_chunks(self, request: GenerationRequest, request_id: str,
                             stats: SpecStats) -> AsyncIterator[StreamChunk]:
        """A colocated engine's chunks. The router checks the request and fetches and decodes its
        video, as it does for the split deployment: the engine's process keeps its cores for
        forwards."""
        await check_request(request, self)
        started = time.perf_counter()
        video = await self.video_for(request)
        video_s = time.perf_counter() - started
        async for item in self.engine.stream(request, request_id, stats, await self.decode_text(), video):
            yield item
        stats.video_s = video_s

    @contextlib.asynccontextmanager
    async def _admitted(self):
        """A place among the requests this replica decodes at once (queued for it if need be)."""
        model = self.args.served_model_name
        try:
            async with self.gate.admitted():
                self.metrics.admission(model, self.gate.active, self.gate.queued)
                yield
        finally:
            self.metrics.admission(model, self.gate.active, self.gate.queued)

    async def _generate(self, request: GenerationRequest, request_id: str) -> GenerationResult:
        stats = SpecStats()
        return await collect(
            self._chunks(request, request_id, stats),
            request.sampling.max_tokens,
            stats,
            await self.decode_text(),
        )

    # ---- Python handle API ---------------------------------------------------------------------

    async def generate(self, request: dict) -> dict:
        """`await handle.generate.remote({...})` -> the result dict (text, token_ids, stats)."""
        request = parse(GenerationRequest, request)
        result = await self._generate(request, uuid.uuid4().hex)
        return result.to_dict()

    async def stream(self, request: dict) -> AsyncIterator[dict]:
        """`handle.options(stream=True).stream.remote({...})` yields {"text", "token_ids"} per
        round, then one final {"finish_reason", "stats"}."""
        request = parse(GenerationRequest, request)
        stats = SpecStats()
        count = 0
        async for item in self._chunks(request, uuid.uuid4().hex, stats):
            count += len(item.token_ids)
            yield {"text": item.text, "token_ids": item.token_ids}
        reason = finish_reason(count, request.sampling.max_tokens)
        yield {"finish_reason": reason, "stats": stats.to_dict()}

    # ---- REST ----------------------------------------------------------------------------------

    @api.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz(self) -> dict:
        await self.target.describe.remote()
        if self.draft is not None:
            await self.draft.describe.remote()
        return {"status": "ok"}

    @api.get("/v1/models")
    async def models(self) -> dict:
        return models_list(self.args.served_model_name)

    @api.post("/v1/generate")
    async def generate_rest(self, http: Request):
        body = parse(GenerateBody, await json_body(http))
        request = parse(GenerationRequest, body.model_dump(exclude={"stream"}))
        request_id = uuid.uuid4().hex
        if not body.stream:
            result = await self._generate(request, request_id)
            return {"id": request_id, "model": self.args.served_model_name, **result.to_dict()}
        return await self._sse_response(self._native_events(request, request_id), openai=False)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, http: Request):
        chat = parse(ChatCompletionRequest, await json_body(http))
        if chat.model is not None and chat.model != self.args.served_model_name:
            raise ModelNotFoundError(
                f"the model {chat.model!r} does not exist; this deployment serves {self.args.served_model_name!r}"
            )
        request = parse(GenerationRequest, to_generation_request(chat))
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        model = self.args.served_model_name
        if not chat.stream:
            return completion(request_id, model, await self._generate(request, request_id))
        include_usage = chat.stream_options is not None and chat.stream_options.include_usage
        return await self._sse_response(self._chat_events(request, request_id, model, include_usage), openai=True)

    async def _sse_response(self, events: AsyncIterator[str], openai: bool) -> StreamingResponse:
        # Pull the first event before answering, so a bad video still gets its HTTP status.
        try:
            first = await events.__anext__()
        except StopAsyncIteration:
            first = ""

        async def body():
            yield first
            try:
                async for event in events:
                    yield event
            except Exception as e:  # mid-stream: the status is sent, so report in-band
                yield _sse(error_response(e, openai).body.decode())
                yield _sse("[DONE]")

        return StreamingResponse(body(), media_type="text/event-stream")

    async def _native_events(self, request: GenerationRequest, request_id: str) -> AsyncIterator[str]:
        stats = SpecStats()
        count = 0
        async for item in self._chunks(request, request_id, stats):
            count += len(item.token_ids)
            yield _sse({"id": request_id, "text": item.text, "token_ids": item.token_ids})
        reason = finish_reason(count, request.sampling.max_tokens)
        yield _sse({"id": request_id, "finish_reason": reason, "stats": stats.to_dict()})
        yield _sse("[DONE]")

    async def _chat_events(
        self, request: GenerationRequest, request_id: str, model: str, include_usage: bool
    ) -> AsyncIterator[str]:
        stats = SpecStats()
        count = 0
        items = self._chunks(request, request_id, stats)
        # The first round runs before the first event, so errors in the video or the prefill
        # still reach the client as an HTTP status rather than in-band.
        first = await anext(items, None)
        yield _sse(chunk(request_id, model, {"role": "assistant", "content": ""}))
        rest = items if first is None else _prepend(first, items)
        async for item in rest:
            count += len(item.token_ids)
            if item.text:
                yield _sse(chunk(request_id, model, {"content": item.text}))
        reason = finish_reason(count, request.sampling.max_tokens)
        yield _sse(chunk(request_id, model, {}, reason, spec_decode=stats.to_dict()))
        if include_usage:
            yield _sse({**chunk(request_id, model, {}), "choices": [], "usage": usage(stats, count)})
        yield _sse("[DONE]")
