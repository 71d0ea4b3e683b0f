"""`LocalEngine`: draft and target in one process, driven by the shared request path.

    engine = LocalEngine.from_specs("qwen-tiny", "qwen-tiny-draft")
    result = engine.generate({"video": "clip.mp4", "prompt": "What moves?"})
    for chunk in engine.stream(request): print(chunk.text, end="")
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Awaitable, Callable, Iterator, Optional, Sequence, Union

import torch

from specvid.config import (
    GenerationRequest,
    Limits,
    ModelSpec,
    SourceConfig,
    VideoLimits,
    VideoSampling,
    parse,
)
from specvid.decoding.accept import Verdict
from specvid.decoding.batching import Batcher
from specvid.decoding.draft import DraftWorker
from specvid.decoding.draft_length import DraftLengths
from specvid.decoding.session import Commit, PrefillRequest, PrefillResult, Proposal, VideoKeep, returned
from specvid.decoding.sides import Drafter, Verifier
from specvid.decoding.stats import SpecStats
from specvid.decoding.target import TargetWorker
from specvid.errors import ModelLoadError
from specvid.models.adapter import VideoLLM
from specvid.models.loader import load_model
from specvid.models.vision_share import TowerFeatures
from specvid.request_path import (
    GenerationResult,
    RequestShape,
    StreamChunk,
    collect,
    load_video,
    run_request,
)
from specvid.video import DecodedVideo


class _Batched:
    """A worker's batched round method (`propose_many` / `verify_many`) as one request's call.

    While several requests decode, their calls go through a `Batcher` and share each forward
    (`LocalEngine` serves `asyncio.gather` of many requests). A request alone calls the worker
    directly, which saves the batcher's hand-off on every call.
    """

    def __init__(self, run_many: Callable[[list], Awaitable[list]], max_batch: int, in_flight: Callable[[], int]):
        self._run_many = run_many
        self._batcher = Batcher(run_many, max_batch)
        self._in_flight = in_flight

    @property
    def sizes(self) -> Counter:
        """Batches run so far, by size."""
        return self._batcher.sizes

    async def __call__(self, call: tuple):
        if self._in_flight() > 1 or self._batcher.queued:
            return await self._batcher(call)
        return returned((await self._run_many([call]))[0])


class _Forwards:
    """Where a worker's forwards run: on the event loop itself (in process the forward is the
    work), or on a thread of their own, in call order, so they overlap the other worker's."""

    def __init__(self, thread: Optional[ThreadPoolExecutor] = None):
        self._thread = thread

    async def __call__(self, forward: Callable, *args):
        if self._thread is None:
            return forward(*args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, forward, *args)


@contextlib.contextmanager
def intra_op_threads(threads: Optional[int]) -> Iterator[None]:
    """torch's intra-op threads set to `threads` for a block (None: as they are)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class InProcessDrafter:
    """A `Drafter` over a `DraftWorker` of this process. With a thread, the draft's forwards run
    there (draft-ahead rounds overlap them with the target's); `settle` and `release` only touch
    session state and run at once, even while a forward runs."""

    def __init__(self, worker: DraftWorker, max_batch: int, in_flight: Callable[[], int],
                 thread: Optional[ThreadPoolExecutor] = None, prefill_threads: Optional[int] = None):
        self.worker = worker
        self.prefill_threads = prefill_threads
        self._forward = _Forwards(thread)
        self._propose = _Batched(lambda calls: self._forward(worker.propose_many, calls), max_batch, in_flight)

    @property
    def batch_sizes(self) -> Counter:
        """Batched proposals run so far, by size (a request alone is not counted)."""
        return self._propose.sizes

    async def prefill(self, request: PrefillRequest, keep: Optional[VideoKeep],
                      tower: Optional[TowerFeatures] = None) -> int:
        return await self._forward(self._prefill, request, keep, tower)

    def _prefill(self, *args) -> int:
        with intra_op_threads(self.prefill_threads):
            return self.worker.prefill(*args)

    async def propose(self, request_id: str, commit: Commit, k: int) -> Proposal:
        return await self._propose((request_id, commit, k))

    async def settle(self, request_id: str, base: int, verified: Sequence[int]) -> None:
        self.worker.settle(request_id, base, verified)

    async def release(self, request_id: str) -> None:
        self.worker.release(request_id)


class InProcessVerifier:
    """A `Verifier` over a `TargetWorker` of this process."""

    def __init__(self, worker: TargetWorker, max_batch: int, in_flight: Callable[[], int],
                 prefill_threads: Optional[int] = None):
        self.worker = worker
        self.prefill_threads = prefill_threads
        forward = _Forwards()  # on the event loop: in process the forward is the work
        self._verify = _Batched(lambda calls: forward(worker.verify_many, calls), max_batch, in_flight)

    @property
    def batch_sizes(self) -> Counter:
        """Batched verifies run so far, by size (a request alone is not counted)."""
        return self._verify.sizes

    async def prefill(self, request: PrefillRequest) -> PrefillResult:
        with intra_op_threads(self.prefill_threads):
            return self.worker.prefill(request)

    async def verify(self, request_id: str, commit: Commit, proposal: Proposal) -> Verdict:
        return await self._verify((request_id, commit, proposal))

    async def release(self, request_id: str) -> None:
        self.worker.release(request_id)


class LocalEngine:
    """Both workers in this process; a `Transport` of the request path."""

    def __init__(
        self,
        target: VideoLLM,
        draft: Optional[VideoLLM] = None,
        *,
        sources: Optional[SourceConfig] = None,
        video_limits: VideoLimits = VideoLimits(),
        limits: Limits = Limits(),
        max_sessions: int = 64,
        max_batch: int = 16,
        draft_ahead: bool = False,
        prefill_threads: Optional[int] = None,
    ):
        """`sources`: where videos may come from; by default the user's own local files too (this
        is the user's own process; a served deployment refuses them unless configured) and S3.
        `draft_ahead`: draft-ahead rounds by default, with the draft's forwards on a thread of
        their own so they overlap the target's (`decoding/ahead.py` says why it is off by default).
        `prefill_threads`: torch's intra-op threads during prefills (None: the process's setting),
        for a process whose decode rounds run on fewer threads than prefill can use."""
        if draft is not None:
            check_pair(target, draft)
        self.target, self.draft = target, draft
        self.sources = SourceConfig.user_files() if sources is None else sources
        self.video_limits, self.limits = video_limits, limits
        self.draft_ahead = draft_ahead and draft is not None
        # The draft projects the target's vision tower output where the towers are the same.
        self.shares_vision = draft is not None and draft.tower_fingerprint == target.tower_fingerprint
        self.target_worker = TargetWorker(target, max_sessions)
        self.draft_worker = DraftWorker(draft, max_sessions) if draft is not None else None
        self._in_flight = 0  # requests decoding now
        in_flight = lambda: self._in_flight  # noqa: E731
        thread = ThreadPoolExecutor(1, thread_name_prefix="specvid-draft") if self.draft_ahead else None
        self._drafter = (InProcessDrafter(self.draft_worker, max_batch, in_flight, thread, prefill_threads)
                         if self.draft_worker is not None else None)
        self._verifier = InProcessVerifier(self.target_worker, max_batch, in_flight, prefill_threads)
        self.draft_lengths = DraftLengths()  # every round's k, for the requests decoding at once

    @classmethod
    def from_specs(
        cls,
        target: Union[str, ModelSpec],
        draft: Union[str, ModelSpec, None] = None,
        **kwargs,
    ) -> "LocalEngine":
        return cls(load_model(target), load_model(draft) if draft is not None else None, **kwargs)

    # ---- the request path's transport ---------------------------------------------------------------

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

    async def vision_shared(self) -> bool:
        return self.shares_vision

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
        request_id: Optional[str] = None,
    ) -> AsyncIterator[StreamChunk]:
        """Yield text as it is verified; `video` skips fetching `request.video`; `stats`, if
        given, is filled in as decoding goes."""
        request = parse(GenerationRequest, request)
        chunks = run_request(self, request, SpecStats() if stats is None else stats, request_id, video=video)
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
