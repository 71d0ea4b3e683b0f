"""LLaVA-OneVision: SigLIP frames at a fixed square size, 2x2 bilinear pooling, 1-D positions.

A video of T frames becomes T x ceil(h/2) x ceil(w/2) tokens (h = w = image_size / patch_size)
followed by one learned newline embedding; the newline sits outside the (t, h, w) grid.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from specvid.models.adapter import VideoLLM, VideoPrompt
from specvid.models.pixels import normalised_frames
from specvid.models.vision_share import tower_parameters


class LlavaOnevisionAdapter(VideoLLM):
    family = "llava_onevision"

    @property
    def _vision(self):
        return self.model.config.vision_config

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        # The vision tower takes one fixed square size, whatever was asked for.
        return self._vision.image_size, self._vision.image_size

    @property
    def _grid_side(self) -> int:
        return math.ceil(self._vision.image_size // self._vision.patch_size / 2)

    def video_placeholders(self, num_frames: int, width: int, height: int) -> int:
        return num_frames * self._grid_side**2 + 1  # the grid, then the newline

    def _vision_inputs(self, frames: np.ndarray, fps: float):
        size = self._vision.image_size
        video = normalised_frames(frames, size, size)[None]  # [1, T, 3, S, S]
        grid = (int(frames.shape[0]), self._grid_side, self._grid_side)
        return {"pixel_values_videos": video.to(self.dtype)}, grid, math.prod(grid) + 1

    def _encode_video(self, vision_inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.model.config
        out = self.model.model.get_video_features(
            vision_inputs["pixel_values_videos"].to(self.device),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        )
        return out.pooler_output[0], self._selected(out.hidden_states)  # [T*h*w + 1, hidden], [T, patches, d]

    def _selected(self, hidden_states) -> torch.Tensor:
        """The tower layer(s) the projector reads, as transformers selects them."""
        cfg = self.model.config
        layers = cfg.vision_feature_layer
        selected = (hidden_states[layers] if isinstance(layers, int)
                    else torch.cat([hidden_states[i] for i in layers], dim=-1))
        return selected[:, 1:] if cfg.vision_feature_select_strategy == "default" else selected

    def _project(self, tower_output: torch.Tensor, vision_inputs: dict) -> torch.Tensor:
        model = self.model.model
        # As transformers' get_video_features goes on from the tower: project, pool, newline.
        video = model.apply_pooling(model.multi_modal_projector(tower_output.to(self.dtype)))
        video = video.reshape(1, tower_output.shape[0] * video.shape[1], -1)
        return torch.cat((video, model.image_newline[None, None, :].to(video)), dim=1)[0]

    def _tower(self) -> dict[str, torch.Tensor]:
        return tower_parameters(self.model.model.vision_tower)

    def _prompt_text(self, prompt: str, num_placeholders: int) -> str:
        return (
            f"<|im_start|>user\n{'<video>' * num_placeholders}\n{prompt}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )

    def prompt_positions(self, prompt: VideoPrompt) -> torch.Tensor:
        return torch.arange(len(prompt), dtype=torch.long)[None]  # [1, L]
