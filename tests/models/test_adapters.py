"""Adapters against the transformers reference forward, for both families."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specvid.errors import InvalidRequestError
from specvid.models.qwen2_5_vl import patchify
from tests.helpers import FAMILIES, random_frames

TOL = 1e-4


def reference_logits(adapter, prompt, extra_tokens):
    """A full, uncached forward of prompt + tokens through the model's own code path."""
    ids = torch.cat([prompt.input_ids, torch.tensor(extra_tokens, dtype=torch.long)])[None]
    inputs = dict(input_ids=ids, pixel_values_videos=prompt.vision_inputs["pixel_values_videos"])
    if adapter.family == "qwen2_5_vl":
        inputs.update(
            video_grid_thw=prompt.vision_inputs["video_grid_thw"],
            second_per_grid_ts=prompt.vision_inputs["second_per_grid_ts"],
            mm_token_type_ids=(ids == adapter.video_token_id).int() * 2,
        )
    with torch.inference_mode():
        return adapter.model(**inputs).logits[0].float()  # [L + n, vocab]


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_and_block_extend_match_full_forward(random_models, family):
    adapter = random_models[family][0]
    prompt = adapter.build_prompt(random_frames(0), "Which shape moves left?", fps=4.0)
    state, first = adapter.prefill(prompt)
    tokens = [5, 17, 99, 42, 7, 64]
    block = adapter.extend(state, tokens)  # [6, vocab]
    ref = reference_logits(adapter, prompt, tokens)
    assert torch.allclose(first, ref[len(prompt) - 1], atol=TOL)
    assert torch.allclose(block, ref[len(prompt) :], atol=TOL)
    assert state.length == len(prompt) + len(tokens)


@pytest.mark.parametrize("family", FAMILIES)
def test_crop_then_correction_matches_recompute(random_models, family):
    adapter = random_models[family][0]
    prompt = adapter.build_prompt(random_frames(1), "What colour is the circle?")
    state, _ = adapter.prefill(prompt)
    adapter.extend(state, [11, 12, 13, 14, 15])
    adapter.crop(state, len(prompt) + 2)  # reject the last three
    corrected = adapter.extend(state, [99, 100])
    ref = reference_logits(adapter, prompt, [11, 12, 99, 100])
    assert torch.allclose(corrected, ref[-2:], atol=TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_stepwise_equals_block(random_models, family):
    adapter = random_models[family][0]
    prompt = adapter.build_prompt(random_frames(2), "How many shapes?")
    a, _ = adapter.prefill(prompt)
    b, _ = adapter.prefill(prompt)
    tokens = [3, 1, 4, 1, 5]
    step = torch.cat([adapter.extend(a, [t]) for t in tokens])
    block = adapter.extend(b, tokens)
    assert torch.allclose(step, block, atol=TOL)


def test_qwen_video_tokens_have_3d_positions(random_models):
    adapter = random_models["qwen"][0]
    prompt = adapter.build_prompt(random_frames(0, num_frames=8), "Describe.", fps=2.0)
    positions = adapter.prompt_positions(prompt)  # [3, L]
    t, h, w = prompt.video_grid
    video_pos = positions[:, prompt.video_index].reshape(3, t, h, w)
    # Height and width axes vary across the grid; M-RoPE is active, not 1-D.
    assert video_pos[1].unique().numel() == h and video_pos[2].unique().numel() == w
    assert video_pos[0].unique().numel() == t
    state, _ = adapter.prefill(prompt)
    # Text after the video continues from the largest position + 1 (rope delta < 0).
    assert state.position_offset + state.length == int(positions.max()) + 1
    assert state.position_offset < 0


def test_qwen_grid_and_token_count(random_models):
    adapter = random_models["qwen"][0]
    prompt = adapter.build_prompt(random_frames(0, num_frames=7, size=112), "Describe.")
    # 7 frames pad to 8 (pairs of frames), 112 px / 14 = 8 patches, merged 2x2 -> 4.
    assert prompt.video_grid == (4, 4, 4)
    assert prompt.num_video_tokens == 64
    assert prompt.vision_inputs["video_grid_thw"].tolist() == [[4, 8, 8]]


def test_qwen_frame_size_rounds_to_merge_factor(random_models):
    adapter = random_models["qwen"][0]
    assert adapter.frame_size(112, 112) == (112, 112)
    assert adapter.frame_size(100, 60) == (112, 56)
    assert adapter.frame_size(5, 5) == (28, 28)


def test_llava_grid_and_newline(random_models):
    adapter = random_models["llava"][0]
    prompt = adapter.build_prompt(random_frames(0, num_frames=8), "Describe.")
    assert prompt.video_grid == (8, 4, 4)
    placeholders = int((prompt.input_ids == adapter.video_token_id).sum())
    assert placeholders == 8 * 16 + 1  # grid tokens plus one newline
    assert prompt.num_video_tokens == 128  # the newline is not a prunable grid token
    assert adapter.frame_size(320, 240) == (112, 112)


def test_patchify_keeps_merge_groups_contiguous():
    # Encode each pixel's (frame, row, column) so the patch order can be read back.
    frames, size, patch, merge = 4, 56, 14, 2
    t = torch.arange(frames).view(frames, 1, 1, 1).expand(frames, 3, size, size)
    y = torch.arange(size).view(1, 1, size, 1).expand(frames, 3, size, size)
    x = torch.arange(size).view(1, 1, 1, size).expand(frames, 3, size, size)
    video = (t * 10_000 + y * 100 + x).float()
    flat, grid = patchify(video, patch, merge, temporal=2)
    assert grid == (2, 4, 4)
    first = flat[:, 0].long()  # channel 0, first frame of the pair, top-left pixel
    rows, cols, ts = (first // 100) % 100, first % 100, first // 10_000
    # The first four patches form the top-left 2x2 merge group of the first frame pair.
    assert ts[:4].tolist() == [0, 0, 0, 0]
    assert rows[:4].tolist() == [0, 0, 14, 14] and cols[:4].tolist() == [0, 14, 0, 14]
    # The next group moves right by two patches.
    assert rows[4:8].tolist() == [0, 0, 14, 14] and cols[4:8].tolist() == [28, 42, 28, 42]
    # The second frame pair starts after all 16 patches of the first.
    assert ts[16] == 2


def test_bad_frames_are_rejected(random_models):
    adapter = random_models["qwen"][0]
    with pytest.raises(InvalidRequestError):
        adapter.build_prompt(np.zeros((8, 112, 112), dtype=np.uint8), "x")
    with pytest.raises(InvalidRequestError):
        adapter.build_prompt(random_frames(0), "sneaky <|video_pad|> token")


def test_crop_into_prompt_is_refused(random_models):
    adapter = random_models["qwen"][0]
    prompt = adapter.build_prompt(random_frames(0), "x")
    state, _ = adapter.prefill(prompt)
    with pytest.raises(ValueError):
        adapter.crop(state, len(prompt) - 1)
