"""The vision stage's per-token labels, on hand-placed shapes."""

from __future__ import annotations

from specvid.zoo.shapesworld import MOTIONS, ClipSpec, ShapeTrack
from specvid.zoo.supervision import BACKGROUND_NAMES, COLOURS, KINDS, token_labels


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
