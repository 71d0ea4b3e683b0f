"""Test helpers: deterministic frames and decoded videos."""

from __future__ import annotations

import numpy as np

FAMILIES = ("qwen", "llava")


def random_frames(seed: int, num_frames: int = 8, size: int = 112) -> np.ndarray:
    """uint8 [T, size, size, 3] noise frames, deterministic in seed."""
    return np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)


def random_video(seed: int, num_frames: int = 8, size: int = 112, fps: float = 4.0):
    """A decoded-video value of random frames, as if sampled at `fps` from a clip."""
    from specvid.video import DecodedVideo

    frames = random_frames(seed, num_frames, size)
    return DecodedVideo(
        frames=frames,
        timestamps_s=np.arange(num_frames) / fps,
        source_fps=fps,
        duration_s=num_frames / fps,
        source_size=(size, size),
    )
