"""The vision stage: per-token labels on hand-placed shapes, and the features stage two records."""

from __future__ import annotations

import math

import pytest
import torch

from specvid.models.loader import load_model
from specvid.zoo.shapesworld import MOTIONS, ClipSpec, ShapeTrack, make_clip, split_seeds
from specvid.zoo.supervision import BACKGROUND_NAMES, COLOURS, KINDS, recorded_video_features, token_labels
from specvid.zoo.train import collate


def test_labels_follow_a_moving_shape_and_mark_empty_cells():
    # A red circle starting in the top-left cell of a 4x4 grid and moving right by 0.3.
    track = ShapeTrack(color="red", kind="circle", radius=0.1, start=(0.125, 0.125), motion="right")
    spec = ClipSpec(background="gray", tracks=(track,))
    labels = token_labels(spec, grid=(2, 4, 4), num_frames=8).reshape(2, 4, 4, 4)
    shape = [1 + COLOURS.index("red"), 1 + KINDS.index("circle"), 1 + MOTIONS.index("right")]
    assert labels[0, 0, 0, :3].tolist() == shape  # early half of the clip: still in the first cell
    assert labels[1, 0, 1, :3].tolist() == shape  # late half: moved one cell right
    assert labels[1, 3, 3, :3].tolist() == [0, 0, 0]  # far corner: no shape
    assert (labels[..., 3] == BACKGROUND_NAMES.index("gray")).all()


def test_a_shape_that_has_not_appeared_yet_is_not_labelled():
    track = ShapeTrack(
        color="blue", kind="square", radius=0.2, start=(0.5, 0.5), motion="appear", appear_time=0.65
    )
    labels = token_labels(ClipSpec(background="black", tracks=(track,)), grid=(2, 4, 4), num_frames=8)
    early, late = labels.reshape(2, 16, 4)
    assert (early[:, :3] == 0).all()
    assert (late[:, 0] == 1 + COLOURS.index("blue")).any()


@pytest.mark.parametrize("name", ["random-qwen-draft", "random-llava-draft"])
def test_recorded_features_are_the_grids_the_forward_reads(name):
    # Stage two puts the probe loss on what the forward recorded; it must be each clip's grid.
    adapter = load_model(name)
    clips = [make_clip(seed, num_frames=4, size=56) for seed in split_seeds("train", 2)]
    prompts = [adapter.build_prompt(clip.frames, "Describe.") for clip in clips]
    rows = [{"input_ids": p.input_ids.tolist(), "labels": [-100] * len(p), "vision": p.vision_inputs}
            for p in prompts]
    batch = collate(rows, adapter.tokenizer.pad_token_id, adapter.video_token_id, adapter.family)
    with torch.no_grad(), recorded_video_features(adapter.model) as grids:
        adapter.model(**batch, use_cache=False)
    assert len(grids) == len(clips)
    for grid, prompt in zip(grids, prompts):
        n = math.prod(prompt.video_grid)
        torch.testing.assert_close(grid[:n], adapter.video_features(prompt).detach())
    assert "get_video_features" not in vars(adapter.model.model)  # the recorder is gone afterwards
