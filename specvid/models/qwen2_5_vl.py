"""Qwen2.5-VL: 14-pixel patches, pairs of frames per temporal patch, 2x2 token merge, 3-D M-RoPE.

Video preprocessing is our own (the transformers video processor needs torchvision, which has
no CPU build): normalise with the CLIP mean/std, then patchify exactly as the reference
processor does, so real checkpoints see the inputs they were trained on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers.vision_utils import get_vision_window_index

from specvid.models.adapter import VideoLLM, VideoPrompt
from specvid.models.pixels import normalised_frames
from specvid.models.vision_share import tower_parameters

SYSTEM_PROMPT = "You are a helpful assistant."


class Qwen2_5_VLAdapter(VideoLLM):
    family = "qwen2_5_vl"
    _position_rows = 3

    @property
    def _vision(self):
        return self.model.config.vision_config

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    @property
    def _factor(self) -> int:
        return self._vision.patch_size * self._vision.spatial_merge_size

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        # Round to the nearest multiple of patch x merge (28 px for real checkpoints).
        f = self._factor
        return max(f, round(width / f) * f), max(f, round(height / f) * f)

    def video_placeholders(self, num_frames: int, width: int, height: int) -> int:
        temporal = math.ceil(num_frames / self._vision.temporal_patch_size)
        return temporal * (height // self._factor) * (width // self._factor)

    def _vision_inputs(self, frames: np.ndarray, fps: float):
        v = self._vision
        width, height = self.frame_size(frames.shape[2], frames.shape[1])
        video = normalised_frames(frames, height, width)  # [T, 3, H, W]
        if pad := -video.shape[0] % v.temporal_patch_size:
            # An odd frame count repeats the last frame, as the reference processor does.
            video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
        patches, grid_thw = patchify(video, v.patch_size, v.spatial_merge_size, v.temporal_patch_size)
        merge = v.spatial_merge_size
        grid = (grid_thw[0], grid_thw[1] // merge, grid_thw[2] // merge)
        inputs = {
            "pixel_values_videos": patches.to(self.dtype),
            "video_grid_thw": torch.tensor([grid_thw], dtype=torch.long),
            "second_per_grid_ts": torch.tensor([v.temporal_patch_size / fps], dtype=torch.float),
        }
        return inputs, grid, math.prod(grid)

    def _encode_video(self, vision_inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.model.get_video_features(
            vision_inputs["pixel_values_videos"].to(self.device),
            vision_inputs["video_grid_thw"].to(self.device),
        )
        # last_hidden_state: the blocks' output, in window order, before the merger.
        return torch.cat(out.pooler_output, dim=0), out.last_hidden_state

    def _project(self, tower_output: torch.Tensor, vision_inputs: dict) -> torch.Tensor:
        visual = self.model.model.visual
        window_index, _ = get_vision_window_index(
            vision_inputs["video_grid_thw"].to(self.device), spatial_merge_size=visual.spatial_merge_size,
            window_size=visual.window_size, patch_size=visual.patch_size,
        )
        # As the tower's own forward ends: merge, then back from window order.
        return visual.merger(tower_output.to(visual.dtype))[torch.argsort(window_index)]

    def _tower(self) -> dict[str, torch.Tensor]:
        return tower_parameters(self.model.model.visual, skip_prefixes=("merger.",))

    def _prompt_text(self, prompt: str, num_placeholders: int) -> str:
        return (
            f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n<|vision_start|>{'<|video_pad|>' * num_placeholders}<|vision_end|>"
            f"{prompt}<|im_end|>\n<|im_start|>assistant\n"
        )

    def prompt_positions(self, prompt: VideoPrompt) -> torch.Tensor:
        ids = prompt.input_ids[None]
        # Token types (0 text, 2 video) drive the 3-D layout; without them transformers
        # silently falls back to 1-D positions.
        token_types = (ids == self.video_token_id).int() * 2
        positions, _ = self.model.model.get_rope_index(
            ids,
            mm_token_type_ids=token_types,
            video_grid_thw=prompt.vision_inputs["video_grid_thw"],
            second_per_grid_ts=prompt.vision_inputs["second_per_grid_ts"],
        )
        return positions[:, 0]  # [3, L]

    def _format_positions(self, positions: torch.Tensor) -> torch.Tensor:
        return positions[:, None]  # [3, 1, n]


def patchify(video: torch.Tensor, patch: int, merge: int, temporal: int):
    """[T, C, H, W] -> (flat patches [t*h*w, C*temporal*patch*patch], (t, h, w) in patches).

    Patches are ordered so each 2x2 merge group is contiguous, as the vision tower expects.
    """
    frames, channels, height, width = video.shape
    gt, gh, gw = frames // temporal, height // patch, width // patch
    x = video.reshape(gt, temporal, channels, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, channels * temporal * patch * patch), (gt, gh, gw)
