"""Frames to the normalised pixel tensors both families' vision towers read."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# CLIP normalisation, shared by both families' vision towers.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalised_frames(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 frames [T,H,W,3] -> CLIP-normalised float [T,3,height,width] (bicubic if resized)."""
    if not frames.flags.writeable:  # e.g. frames read from Ray's object store
        frames = frames.copy()
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    if tuple(video.shape[2:]) != (height, width):
        video = F.interpolate(video, size=(height, width), mode="bicubic", align_corners=False)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (video - mean) / std
