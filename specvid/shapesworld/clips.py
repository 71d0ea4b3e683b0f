"""A ShapesWorld clip with its reference text, and its mp4 encoding.

`world` decides and draws the pictures, `language` the words; a clip is both, made from one
seed with a separate random stream for each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specvid.shapesworld.language import describe_clip
from specvid.shapesworld.questions import QA
from specvid.shapesworld.world import (
    TEXT_STREAM,
    ClipSpec,
    clip_spec_for_seed,
    render_clip,
    stream_rng,
)
from specvid.video.decode import encode_video


@dataclass(frozen=True, eq=False)
class Clip:
    """A rendered clip with its reference text."""

    seed: int
    spec: ClipSpec
    frames: np.ndarray  # uint8 [T, H, W, 3]
    caption_prompt: str
    caption: str
    qa: tuple[QA, ...]


def make_clip(seed: int, num_frames: int = 8, size: int = 112) -> Clip:
    """The clip of `seed`: spec, frames, caption prompt, caption and QA pairs."""
    spec = clip_spec_for_seed(seed)
    text = describe_clip(spec, stream_rng(seed, TEXT_STREAM))
    return Clip(
        seed=seed,
        spec=spec,
        frames=render_clip(spec, num_frames=num_frames, size=size),
        caption_prompt=text.caption_prompt,
        caption=text.caption,
        qa=text.qa,
    )


def encode_clip_mp4(clip: Clip, fps: float = 8.0, codec: str = "libx264") -> bytes:
    """The clip's frames as an mp4 file, through the project's one video encoder."""
    return encode_video(clip.frames, fps=fps, codec=codec)
