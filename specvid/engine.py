"""`LocalEngine`: draft and target in one process, driven by the shared request pipeline.

    engine = LocalEngine.from_specs("qwen-tiny", "qwen-tiny-draft")
    result = engine.generate({"video": "clip.mp4", "prompt": "What moves?"})
    for chunk in engine.stream(request): print(chunk.text, end="")
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Union

from specvid.config import (
    GenerationRequest,
    Limits,
    ModelSpec,
    SourceConfig,
    VideoLimits,
    VideoSampling,
    parse,
)
from specvid.decoding.batching import Batcher
from specvid.decoding.draft import DraftWorker
from specvid.decoding.loop import Drafter, Verifier
from specvid.decoding.stats import SpecStats
from specvid.decoding.target import TargetWorker
from specvid.errors import ModelLoadError
from specvid.models.adapter import VideoLLM
from specvid.models.loader import load_model
from specvid.pipeline import (
    GenerationResult,
    RequestShape,
    StreamChunk,
    collect,
    load_video,
    run_request,
)
from specvid.video import DecodedVideo


class _InProcess:
    """A worker's methods as coroutines, so the loop drives local workers like remote ones.

    While several requests decode, `propose` and `verify` go through a `Batcher`: the requests
    share each forward (`LocalEngine` serves `asyncio.gather` of many requests). A request
    alone calls the worker directly, which saves the batcher's hand-off on every call.

    With a `thread`, the worker's forwards run there (in call order) instead of on the event
    loop, so they overlap the other worker's: the draft of a pipelined `LocalEngine`. Calls that
    only touch session state (`settle`, `release`) run at once, even while a forward runs.
    """

    IMMEDIATE = ("settle", "release")

    def __init__(self, worker: Any, max_batch: int, in_flight: Callable[[], int],
                 thread: Optional[ThreadPoolExecutor] = None):
        self._worker = worker
        self._in_flight = in_flight
        self._thread = thread
        self._batched = {
            name: Batcher(_as_coroutine(getattr(worker, f"{name}_many"), thread), max_batch)
            for name in ("propose", "verify")
            if hasattr(worker, f"{name}_many")
        }

    def __getattr__(self, name: str):
        method = getattr(self._worker, name)
        run = _as_coroutine(method, None if name in self.IMMEDIATE else self._thread)
        batcher = self._batched.get(name)

        async def call(*args):
            if batcher is not None and (self._in_flight() > 1 or batcher.queued):
                return await batcher(args)
            return await run(*args)

        setattr(self, name, call)  # built once: later look-ups find it without __getattr__
        return call


def _as_coroutine(method: Callable, thread: Optional[ThreadPoolExecutor]) -> Callable:
    """`method` as a coroutine function, run on the event loop itself (in process, the forward
    is the work) or on `thread`."""
    if thread is None:
        async def run(*args):
            return method(*args)
    else:
        async def run(*args):
            return await asyncio.get_running_loop().run_in_executor(thread, method, *args)
    return run


class LocalEngine:
    """Both workers in this process; a `Transport` of the request pipeline."""

    def __init__(
        self,
        target: VideoLLM,
        draft: Optional[VideoLLM] = None,
        *,
        sources: SourceConfig = SourceConfig(),
        video_limits: VideoLimits = VideoLimits(),
        limits: Limits = Limits(),
        max_sessions: int = 64,
        max_batch: int = 16,
        pipeline: bool = False,
    ):
        """`pipeline`: pipelined rounds by default, with the draft's forwards on a thread of their
        own so they overlap the target's (docs/decoding.md; off by default: measured slower on two
        CPU cores, where both forwards share the cores and the interpreter lock)."""
        if draft is not None:
            check_pair(target, draft)
        self.target, self.draft = target, draft
        self.sources, self.video_limits, self.limits = sources, video_limits, limits
        self.pipeline = pipeline and draft is not None
        self.target_worker = TargetWorker(target, max_sessions)
        self.draft_worker = DraftWorker(draft, max_sessions) if draft is not None else None
        self._in_flight = 0  # requests decoding now
        in_flight = lambda: self._in_flight  # noqa: E731
        thread = ThreadPoolExecutor(1, thread_name_prefix="specvid-draft") if self.pipeline else None
        self._drafter = _InProcess(self.draft_worker, max_batch, in_flight, thread) if draft is not None else None
        self._verifier = _InProcess(self.target_worker, max_batch, in_flight)

    @classmethod
    def from_specs(
        cls,
        target: Union[str, ModelSpec],
        draft: Union[str, ModelSpec, None] = None,
        **kwargs,
    ) -> "LocalEngine":
        return cls(load_model(target), load_model(draft) if draft is not None else None, **kwargs)

    # ---- the pipeline's transport ---------------------------------------------------------------

    @property
    def has_draft(self) -> bool:
        return self.draft_worker is not None

    async def shape(self, request: GenerationRequest, frames: int) -> RequestShape:
        sampling = request.video_sampling
        width, height = self.target.frame_size(sampling.width, sampling.height)
        context = self.target.context_length(request.prompt, frames, width, height)
        return RequestShape(width, height, context, self.target.max_positions)

    async def video_for(self, request: GenerationRequest) -> DecodedVideo:
        return await asyncio.to_thread(self.load_video, request.video, request.video_sampling)

    def workers(self, request_id: str, video: DecodedVideo, uses_draft: bool) -> tuple[Optional[Drafter], Verifier]:
        return (self._drafter if uses_draft else None), self._verifier

    async def decode_text(self) -> Callable[[list[int]], str]:
        return self.target.decode

    # ---- video ------------------------------------------------------------------------------

    def load_video(self, uri: str, sampling: VideoSampling = VideoSampling()) -> DecodedVideo:
        """Fetch and decode a video at the frame size the target wants."""
        return load_video(uri, sampling, self.target.frame_size, self.sources, self.video_limits)

    # ---- generation -------------------------------------------------------------------------

    async def astream(
        self,
        request: Union[GenerationRequest, dict],
        video: Optional[DecodedVideo] = None,
        stats: Optional[SpecStats] = None,
    ) -> AsyncIterator[StreamChunk]:
        """Yield text as it is verified; `video` skips fetching `request.video`; `stats`, if
        given, is filled in as decoding goes."""
        request = parse(GenerationRequest, request)
        chunks = run_request(self, request, SpecStats() if stats is None else stats, video=video)
        self._in_flight += 1
        try:
            # In process nothing else suspends a request: requests started together all count
            # themselves in here before any of them decodes, so their rounds are batched.
            await asyncio.sleep(0)
            async for chunk in chunks:
                yield chunk
        finally:
            self._in_flight -= 1
            await chunks.aclose()

    async def agenerate(
        self, request: Union[GenerationRequest, dict], video: Optional[DecodedVideo] = None
    ) -> GenerationResult:
        request = parse(GenerationRequest, request)
        stats = SpecStats()
        chunks = self.astream(request, video, stats)
        return await collect(chunks, request.sampling.max_tokens, stats, self.target.decode)

    def generate(
        self, request: Union[GenerationRequest, dict], video: Optional[DecodedVideo] = None
    ) -> GenerationResult:
        """Blocking generate; safe to call from code that already runs an event loop."""
        return _run_sync(self.agenerate(request, video))

    def stream(
        self,
        request: Union[GenerationRequest, dict],
        video: Optional[DecodedVideo] = None,
        stats: Optional[SpecStats] = None,
    ) -> Iterator[StreamChunk]:
        """Blocking stream of chunks."""
        agen = self.astream(request, video, stats)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()


def check_pair(target: VideoLLM, draft: VideoLLM) -> None:
    """A draft must speak the target's tokens: same tokenizer size and special tokens."""
    if len(target.tokenizer) != len(draft.tokenizer) or target.special_token_ids != draft.special_token_ids:
        raise ModelLoadError(
            f"draft {draft.name!r} and target {target.name!r} use different tokenizers "
            f"({len(draft.tokenizer)} vs {len(target.tokenizer)} tokens)"
        )


def _run_sync(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Inside a running loop (a notebook, a server): run on a private thread's loop.
    result: dict = {}

    def target():
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
