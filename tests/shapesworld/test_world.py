"""ShapesWorld generation: determinism, splits, frames that show what the spec says."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from specvid.config import VideoLimits, VideoSampling
from specvid.shapesworld.clips import encode_clip_mp4, make_clip
from specvid.shapesworld.world import (
    APPEAR_TIMES,
    BACKGROUNDS,
    SHAPE_COLOURS,
    ClipSpec,
    ShapeTrack,
    clip_spec_for_seed,
    frame_times,
    render_clip,
    split_of,
    split_seeds,
)
from specvid.video.decode import decode_video

SEEDS = range(200)


def colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    return np.all(frame == np.array(SHAPE_COLOURS[colour], dtype=np.uint8), axis=-1)


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def one_shape(motion: str, appear: float = 0.0, vanish=None) -> ClipSpec:
    track = ShapeTrack("red", "square", 0.18, (0.5, 0.5), motion, appear, vanish)
    return ClipSpec(background="gray", tracks=(track,))


def test_same_seed_same_clip():
    a, b = make_clip(7), make_clip(7)
    assert a.spec == b.spec
    assert np.array_equal(a.frames, b.frames)
    assert (a.caption_prompt, a.caption, a.qa) == (b.caption_prompt, b.caption, b.qa)


def test_different_seeds_differ():
    specs = [clip_spec_for_seed(seed) for seed in range(50)]
    assert len(set(specs)) == 50
    assert len({make_clip(seed).caption for seed in range(20)}) == 20


def test_splits_are_disjoint_and_labelled():
    train, evaluation = split_seeds("train", 1000), split_seeds("eval", 1000)
    assert not set(train) & set(evaluation)
    assert split_of(train[0]) == "train" and split_of(evaluation[-1]) == "eval"
    assert split_seeds("eval", 3, start=5)[0] == evaluation[5]
    with pytest.raises(ValueError):
        split_seeds("test", 1)
    with pytest.raises(ValueError):
        split_seeds("eval", 10**9)


def test_frames_shape_and_dtype():
    clip = make_clip(3)
    assert clip.frames.shape == (8, 112, 112, 3) and clip.frames.dtype == np.uint8
    assert render_clip(clip.spec, num_frames=16, size=224).shape == (16, 224, 224, 3)
    assert render_clip(clip.spec, num_frames=1).shape == (1, 112, 112, 3)


def test_specs_are_varied_and_valid():
    specs = [clip_spec_for_seed(seed) for seed in SEEDS]
    counts = Counter(spec.count for spec in specs)
    assert set(counts) == {1, 2, 3} and min(counts.values()) > 40
    assert {t.motion for s in specs for t in s.tracks} >= {"left", "appear", "disappear", "stay"}
    for spec in specs:
        assert spec.background in BACKGROUNDS
        assert len({t.color for t in spec.tracks}) == spec.count
        assert len({t.kind for t in spec.tracks}) == spec.count
        times = [t.appear_time for t in spec.tracks]
        assert times == sorted(times)


def test_every_visible_shape_is_drawn_big_and_unoccluded():
    # Colours are distinct and shapes never touch, so exact-colour pixels count each shape.
    for seed in range(40):
        spec = clip_spec_for_seed(seed)
        frames = render_clip(spec)
        palette = {BACKGROUNDS[spec.background]} | {SHAPE_COLOURS[t.color] for t in spec.tracks}
        used = {tuple(int(c) for c in row) for row in np.unique(frames.reshape(-1, 3), axis=0)}
        assert used <= palette  # flat colours only: nothing blends or tints
        for frame, t in zip(frames, frame_times(len(frames))):
            for track in spec.tracks:
                mask = colour_mask(frame, track.color)
                if track.visible(float(t)):
                    ys, xs = np.nonzero(mask)
                    # Even at its smallest a shape spans a whole 14 px patch each way.
                    assert np.ptp(xs) >= 14 and np.ptp(ys) >= 14, (seed, track, t)
                    assert mask.sum() >= 120, (seed, track, t)
                else:
                    assert not mask.any(), (seed, track, t)


def test_static_square_pixels():
    frame = render_clip(one_shape("stay"), num_frames=1)[0]
    assert tuple(frame[56, 56]) == SHAPE_COLOURS["red"]
    assert tuple(frame[2, 2]) == BACKGROUNDS["gray"]


@pytest.mark.parametrize(
    "motion, axis, sign", [("left", 0, -1), ("right", 0, 1), ("up", 1, -1), ("down", 1, 1)]
)
def test_moving_shapes_move_the_right_way(motion, axis, sign):
    spec = ClipSpec("black", (ShapeTrack("blue", "circle", 0.15, (0.5, 0.5), motion),))
    positions = [centroid(colour_mask(f, "blue"))[axis] for f in render_clip(spec)]
    steps = np.diff(positions) * sign
    assert np.all(steps > 0)


def test_grow_shrink_appear_disappear():
    areas = {
        motion: [int(colour_mask(f, "red").sum()) for f in render_clip(one_shape(motion))]
        for motion in ("grow", "shrink")
    }
    assert np.all(np.diff(areas["grow"]) >= 0) and areas["grow"][-1] > 2 * areas["grow"][0]
    assert np.all(np.diff(areas["shrink"]) <= 0) and areas["shrink"][0] > 2 * areas["shrink"][-1]
    appear = [colour_mask(f, "red").any() for f in render_clip(one_shape("appear", appear=0.45))]
    assert appear == [False] * 4 + [True] * 4
    vanish = [colour_mask(f, "red").any() for f in render_clip(one_shape("disappear", vanish=0.5))]
    assert vanish == [True] * 4 + [False] * 4


@pytest.mark.parametrize("num_frames", [8, 16, 32])
def test_appearance_times_land_on_distinct_frames(num_frames):
    # Otherwise "which shape appears first" would not be visible in the frames.
    times = frame_times(num_frames)
    first_frames = [int(np.argmax(times >= t)) for t in APPEAR_TIMES]
    assert 0 < first_frames[0] < first_frames[1] < first_frames[2] < num_frames - 1


def test_order_facts_only_without_ties():
    first = ShapeTrack("red", "circle", 0.15, (0.3, 0.3), "left")
    second = ShapeTrack("blue", "square", 0.15, (0.7, 0.7), "appear", appear_time=0.45)
    third = ShapeTrack("green", "star", 0.15, (0.3, 0.7), "stay")
    assert ClipSpec("black", (first, second)).facts() >= {
        ("order", "red circle", "first"),
        ("order", "blue square", "last"),
    }
    tied = ClipSpec("black", (first, third, second))
    assert tied.first() is None and tied.last() == second
    assert ClipSpec("black", (first,)).first() is None


def test_mp4_round_trip():
    clip = make_clip(11)
    data = encode_clip_mp4(clip)
    assert data[4:8] == b"ftyp"
    decoded = decode_video(data, VideoSampling(num_frames=8), VideoLimits()).frames
    assert decoded.shape == clip.frames.shape
    # Lossy (yuv420p, x264) but close.
    assert np.abs(decoded.astype(int) - clip.frames.astype(int)).mean() < 8
