"""The request path: one request from its checks to its last token, over any transport.

    check_request -> fetch + decode the video -> open the workers' sessions -> decode rounds -> chunks

`LocalEngine` runs this path with in-process workers, the Ray Serve router with remote
replicas; a `Transport` is what differs between them (where frames come from, how a worker is
reached). A request's limits are checked here and nowhere else, before any download or decode,
and every refusal is a typed `SpecVidError` (a 4xx on REST).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Optional, Protocol

import numpy as np

from specvid.config import (
    GenerationRequest,
    Limits,
    SourceConfig,
    VideoLimits,
    VideoSampling,
)
from specvid.decoding.draft_length import DraftLengths
from specvid.decoding.loop import Drafter, Verifier, decode
from specvid.decoding.session import PrefillRequest
from specvid.decoding.stats import SpecStats
from specvid.errors import ContextLengthError, InvalidRequestError, TooLargeError
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


@dataclass(frozen=True)
class RequestShape:
    """What a request will cost, known before its video is fetched."""

    width: int  # of a decoded frame, as the target wants it
    height: int
    context_tokens: int  # video placeholders + prompt, before generation
    context_window: int  # positions the target model has


class Transport(Protocol):
    """What the request path needs from the place it runs in."""

    limits: Limits
    video_limits: VideoLimits
    has_draft: bool
    draft_ahead: bool  # draft-ahead rounds unless a request says otherwise (`DecodingConfig.draft_ahead`)
    draft_lengths: DraftLengths  # chooses every round's k for the requests decoding here

    async def vision_shared(self) -> bool:
        """Whether draft and target have the same vision tower (`models/vision_share.py`)."""

    async def shape(self, request: GenerationRequest, frames: int) -> RequestShape:
        """The request's frame size and context length at `frames` frames (no video needed)."""

    async def video_for(self, request: GenerationRequest) -> DecodedVideo:
        """The request's video, fetched and decoded at the target's frame size."""

    def workers(
        self, request_id: str, video: DecodedVideo, uses_draft: bool
    ) -> tuple[Optional[Drafter], Verifier]:
        """The request's drafter (None without a draft) and verifier."""

    async def decode_text(self) -> Callable[[list[int]], str]:
        """Token ids -> text, as the target's tokenizer reads them."""


async def check_request(request: GenerationRequest, transport: Transport) -> None:
    """Refuse a request this deployment cannot serve, before any download or decode."""
    limits, video_limits = transport.limits, transport.video_limits
    if len(request.prompt) > limits.max_prompt_chars:
        raise InvalidRequestError(
            f"prompt has {len(request.prompt)} characters; the limit is {limits.max_prompt_chars} "
            "(limits.max_prompt_chars)"
        )
    method = request.decoding.method
    if request.decoding.uses_draft and not transport.has_draft:
        raise InvalidRequestError(f"method {method!r} needs a draft model; none is loaded")
    if request.decoding.loose and not request.sampling.greedy:
        raise InvalidRequestError(
            f"method {method!r} verifies greedy decoding only; set temperature to 0 "
            "(sampling is lossless with 'sd' and 'specvlm')"
        )
    frames = planned_frames(request.video_sampling, video_limits)
    shape = await transport.shape(request, frames)
    pixels = frames * shape.width * shape.height
    if pixels > video_limits.max_sampled_pixels:
        raise TooLargeError(
            f"{frames} frames of {shape.width}x{shape.height} are {pixels} pixels; the limit is "
            f"{video_limits.max_sampled_pixels} (video_limits.max_sampled_pixels)"
        )
    needed = shape.context_tokens + request.sampling.max_tokens
    if needed > min(limits.max_context_tokens, shape.context_window):
        limit, name = min(
            (limits.max_context_tokens, "limits.max_context_tokens"),
            (shape.context_window, "the model's context window"),
        )
        raise ContextLengthError(
            f"the request needs {needed} context tokens ({shape.context_tokens} for the video and "
            f"prompt, max_tokens {request.sampling.max_tokens}); the limit is {limit} ({name}): "
            "ask for fewer tokens, frames or a smaller frame size"
        )


def planned_frames(sampling: VideoSampling, limits: VideoLimits) -> int:
    """The most frames sampling can yield: `num_frames`, or `fps` over the longest video allowed."""
    if sampling.num_frames is not None:
        if sampling.num_frames > limits.max_frames:
            raise TooLargeError(
                f"num_frames {sampling.num_frames} exceeds the limit of {limits.max_frames} "
                "(video_limits.max_frames)"
            )
        return sampling.num_frames
    return min(limits.max_frames, max(1, math.ceil(sampling.fps * limits.max_duration_s)))


async def run_request(
    transport: Transport,
    request: GenerationRequest,
    stats: SpecStats,
    request_id: Optional[str] = None,
    video: Optional[DecodedVideo] = None,
) -> AsyncIterator[StreamChunk]:
    """The whole path of one request, refused or answered; `video` skips the fetch."""
    await check_request(request, transport)
    request_id = request_id or uuid.uuid4().hex
    started = time.perf_counter()
    decode_text = await transport.decode_text()
    if video is None:
        video = await transport.video_for(request)
    stats.video_s = time.perf_counter() - started
    if request.decoding.draft_ahead is None:  # the deployment's default
        decoding = request.decoding.model_copy(update={"draft_ahead": transport.draft_ahead})
        request = request.model_copy(update={"decoding": decoding})
    drafter, verifier = transport.workers(request_id, video, request.decoding.uses_draft)
    chunks = stream_request(drafter, verifier, request, video, stats, decode_text, request_id,
                            await transport.vision_shared(), transport.draft_lengths)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()  # frees both sessions, also on disconnect or timeout


async def stream_request(
    drafter: Optional[Drafter],
    verifier: Verifier,
    request: GenerationRequest,
    video: DecodedVideo,
    stats: SpecStats,
    decode_text: Callable[[list[int]], str],
    request_id: str,
    shares_vision: bool = False,
    lengths: Optional[DraftLengths] = None,
) -> AsyncIterator[StreamChunk]:
    """The decode rounds of one request as text chunks; `shares_vision`: the draft takes the
    target's vision tower output; `lengths`: the transport's draft-length chooser."""
    prefill = PrefillRequest(
        request_id=request_id,
        frames=video.frames,
        fps=sampled_fps(video),
        prompt=request.prompt,
        sampling=request.sampling,
        share_vision=shares_vision and request.decoding.uses_draft,
    )
    detok = IncrementalDetokenizer(decode_text)
    steps = decode(drafter, verifier, prefill, request.decoding, stats, lengths)
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


def sampled_fps(video: DecodedVideo) -> float:
    """Frames per second of the sampled frames (Qwen2.5-VL spaces temporal positions by it)."""
    ts = np.asarray(video.timestamps_s, dtype=float)
    if ts.size < 2 or ts[-1] <= ts[0]:
        return DEFAULT_FPS
    return float((ts.size - 1) / (ts[-1] - ts[0]))
