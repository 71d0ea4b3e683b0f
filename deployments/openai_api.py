"""The OpenAI-compatible chat completions surface, translated to and from `GenerationRequest`.

A request names its video as a `video_url` content part of the (single) user turn:

    {"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "s3://videos/clip.mp4"}},
        {"type": "text", "text": "What moves left?"}]}

System messages are accepted and ignored (each model family brings its own system prompt);
assistant turns are refused, as multi-turn video chat is not supported. SpecVid's own knobs
ride in optional extra fields (`decoding`, `video_sampling`), which the OpenAI Python client
sends through `extra_body`.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Optional, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from specvid.config import DecodingConfig, SamplingParams, VideoSampling
from specvid.decoding.stats import SpecStats
from specvid.errors import InvalidRequestError
from specvid.request_path import GenerationResult


class _Open(BaseModel):
    # OpenAI clients send fields SpecVid does not use (user, n=1, ...); ignore, do not fail.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class VideoURL(_Open):
    url: str = Field(description="s3://bucket/key, an allowed local path, or an allowlisted https:// URL.")


class ContentPart(_Open):
    type: Literal["text", "video_url"]
    text: Optional[str] = None
    video_url: Optional[VideoURL] = None


class ChatMessage(_Open):
    role: Literal["system", "user", "assistant", "developer"]
    content: Union[str, list[ContentPart]]


class StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    model: Optional[str] = Field(None, description="Served model name; optional.")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=10.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request.")
    decoding: DecodingConfig = Field(
        default_factory=DecodingConfig,
        validation_alias=AliasChoices("decoding", "spec"),
        description="SpecVid: method and its knobs ('spec' is accepted as the field's earlier name).",
    )
    video_sampling: VideoSampling = Field(
        default_factory=VideoSampling, description="SpecVid: frame sampling."
    )


def to_generation_request(chat: ChatCompletionRequest) -> dict:
    """The native request a chat completion asks for."""
    if any(m.role == "assistant" for m in chat.messages):
        raise InvalidRequestError(
            "multi-turn chat is not supported: send one user turn with a video_url part"
        )
    users = [m for m in chat.messages if m.role == "user"]
    if len(users) != 1:
        raise InvalidRequestError(f"expected exactly one user message, got {len(users)}")
    parts = (
        [ContentPart(type="text", text=users[0].content)]
        if isinstance(users[0].content, str)
        else users[0].content
    )
    videos = [p.video_url.url for p in parts if p.type == "video_url" and p.video_url is not None]
    if len(videos) != 1:
        raise InvalidRequestError(f"the user message needs exactly one video_url part, got {len(videos)}")
    prompt = "\n".join(p.text for p in parts if p.type == "text" and p.text)
    if not prompt.strip():
        raise InvalidRequestError("the user message has no text part")
    sampling = {
        "temperature": chat.temperature,
        "top_p": chat.top_p,
        "seed": chat.seed,
        "max_tokens": chat.max_completion_tokens or chat.max_tokens or SamplingParams().max_tokens,
    }  # validated with the rest of the request, so a bad value is a 400 like any other
    return {
        "video": videos[0],
        "prompt": prompt,
        "sampling": sampling,
        "decoding": chat.decoding,
        "video_sampling": chat.video_sampling,
    }


def usage(stats: SpecStats, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": stats.prompt_tokens + completion_tokens,
    }


def completion(request_id: str, model: str, result: GenerationResult) -> dict:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage(result.stats, len(result.token_ids)),
        "spec_decode": result.stats.to_dict(),
    }


def chunk(
    request_id: str, model: str, delta: dict, finish_reason: Optional[str] = None, **extra: Any
) -> dict:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        **extra,
    }


def models_list(model: str) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "specvid"}]}
