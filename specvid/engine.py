"""`LocalEngine`: draft and target in one process, driven by the shared decode loop.

    engine = LocalEngine.from_specs("random-qwen", "random-qwen-draft")
    result = engine.generate({"video": "clip.mp4", "prompt": "What moves?"})
    for chunk in engine.stream(request): print(chunk.text, end="")
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Union

import numpy as np

from specvid.config import (
    GenerationRequest,
    Limits,
    ModelSpec,
    SourceConfig,
    VideoLimits,
    VideoSampling,
    parse,
)
from specvid.errors import InvalidRequestError, ModelLoadError
from specvid.models.adapter import VideoLLM
from specvid.models.loader import load_model
from specvid.spec.draft import DraftWorker
from specvid.spec.loop import Drafter, Verifier, decode
from specvid.spec.session import PrefillRequest
from specvid.spec.stats import SpecStats
from specvid.spec.target import TargetWorker
from specvid.video import DecodedVideo, decode_video, fetch_video_bytes

DEFAULT_FPS = 2.0


@dataclass
class StreamChunk:
    """Tokens emitted by one round and the text they complete."""

    token_ids: list[int]
    text: str


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop token) or "length" (max_tokens)
    stats: SpecStats = field(default_factory=SpecStats)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "num_tokens": len(self.token_ids),
            "finish_reason": self.finish_reason,
            "stats": self.stats.to_dict(),
        }


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas without splitting multi-byte characters."""

    def __init__(self, decode_text: Callable[[list[int]], str]):
        self.decode_text = decode_text
        self.token_ids: list[int] = []
        self.text = ""

    def add(self, token_ids: list[int]) -> str:
        self.token_ids.extend(token_ids)
        text = self.decode_text(self.token_ids)
        if text.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 sequence: wait for the next tokens
        delta, self.text = text[len(self.text) :], text
        return delta

    def flush(self) -> str:
        """Whatever text was held back, once no more tokens will come."""
        text = self.decode_text(self.token_ids)
        delta, self.text = text[len(self.text) :], text
        return delta


async def stream_request(
    drafter: Optional[Drafter],
    verifier: Verifier,
    request: GenerationRequest,
    video: DecodedVideo,
    stats: SpecStats,
    decode_text: Callable[[list[int]], str],
    request_id: Optional[str] = None,
) -> AsyncIterator[StreamChunk]:
    """Run one request through the decode loop over any drafter / verifier transport.

    The local engine passes in-process workers, the Ray Serve router remote replicas; both get
    the same chunks for the same request.
    """
    prefill = PrefillRequest(
        request_id=request_id or uuid.uuid4().hex,
        frames=video.frames,
        fps=sampled_fps(video),
        prompt=request.prompt,
        sampling=request.sampling,
    )
    detok = IncrementalDetokenizer(decode_text)
    steps = decode(drafter, verifier, prefill, request.spec, stats)
    try:
        async for tokens in steps:
            yield StreamChunk(tokens, detok.add(tokens))
        if rest := detok.flush():
            yield StreamChunk([], rest)
    finally:
        await steps.aclose()


async def collect(
    chunks: AsyncIterator[StreamChunk],
    max_tokens: int,
    stats: SpecStats,
    decode_text: Callable[[list[int]], str],
) -> GenerationResult:
    """Drain a chunk stream into one result."""
    token_ids: list[int] = []
    async for chunk in chunks:
        token_ids.extend(chunk.token_ids)
    return GenerationResult(decode_text(token_ids), token_ids, finish_reason(len(token_ids), max_tokens), stats)


def finish_reason(num_tokens: int, max_tokens: int) -> str:
    """"length" when the token budget ended generation, else "stop" (a stop token did)."""
    return "length" if num_tokens >= max_tokens else "stop"


def load_video(
    uri: str,
    sampling: VideoSampling,
    frame_size: Callable[[int, int], tuple[int, int]],
    sources: SourceConfig,
    limits: VideoLimits,
) -> DecodedVideo:
    """Fetch and decode a video at the frame size the target wants."""
    width, height = frame_size(sampling.width, sampling.height)
    sampling = sampling.model_copy(update={"width": width, "height": height})
    data = fetch_video_bytes(uri, sources, limits)
    return decode_video(data, sampling, limits)


class _InProcess:
    """A worker's methods as coroutines, so the loop drives local workers like remote ones."""

    def __init__(self, worker: Any):
        self._worker = worker

    def __getattr__(self, name: str):
        method = getattr(self._worker, name)

        async def call(*args):
            return method(*args)

        return call


class LocalEngine:
    def __init__(
        self,
        target: VideoLLM,
        draft: Optional[VideoLLM] = None,
        *,
        sources: SourceConfig = SourceConfig(),
        video_limits: VideoLimits = VideoLimits(),
        limits: Limits = Limits(),
        max_sessions: int = 64,
    ):
        if draft is not None:
            check_pair(target, draft)
        self.target, self.draft = target, draft
        self.sources, self.video_limits, self.limits = sources, video_limits, limits
        self.target_worker = TargetWorker(target, max_sessions)
        self.draft_worker = DraftWorker(draft, max_sessions) if draft is not None else None

    @classmethod
    def from_specs(
        cls,
        target: Union[str, ModelSpec],
        draft: Union[str, ModelSpec, None] = None,
        **kwargs,
    ) -> "LocalEngine":
        return cls(load_model(target), load_model(draft) if draft is not None else None, **kwargs)

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
        self._check(request)
        stats = SpecStats() if stats is None else stats
        started = time.perf_counter()
        if video is None:
            video = await asyncio.to_thread(self.load_video, request.video, request.video_sampling)
        stats.video_s = time.perf_counter() - started
        drafter = _InProcess(self.draft_worker) if self.draft_worker is not None else None
        chunks = stream_request(drafter, _InProcess(self.target_worker), request, video, stats, self.target.decode)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
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

    def _check(self, request: GenerationRequest) -> None:
        if len(request.prompt) > self.limits.max_prompt_chars:
            raise InvalidRequestError(
                f"prompt has {len(request.prompt)} characters; the limit is {self.limits.max_prompt_chars}"
            )
        if request.spec.method != "ar" and self.draft is None:
            raise InvalidRequestError(f"method {request.spec.method!r} needs a draft model; none is loaded")


def check_pair(target: VideoLLM, draft: VideoLLM) -> None:
    """A draft must speak the target's tokens: same tokenizer size and special tokens."""
    if len(target.tokenizer) != len(draft.tokenizer) or target.special_token_ids != draft.special_token_ids:
        raise ModelLoadError(
            f"draft {draft.name!r} and target {target.name!r} use different tokenizers "
            f"({len(draft.tokenizer)} vs {len(target.tokenizer)} tokens)"
        )


def sampled_fps(video: DecodedVideo) -> float:
    """Frames per second of the sampled frames (Qwen2.5-VL spaces temporal positions by it)."""
    ts = np.asarray(video.timestamps_s, dtype=float)
    if ts.size < 2 or ts[-1] <= ts[0]:
        return DEFAULT_FPS
    return float((ts.size - 1) / (ts[-1] - ts[0]))


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
