"""The vision stage: per-token labels on hand-placed shapes, and the features stage two records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lab.zoo.rows import collate
from lab.zoo.supervision import (
    BACKGROUND_NAMES,
    CLASS_WORDS,
    CLASSES,
    COLOURS,
    IGNORE,
    KINDS,
    MOTION_COLUMN,
    TokenProbe,
    class_token_ids,
    probe_for,
    recorded_video_features,
    slab_example,
    token_labels,
)
from specvid.models.loader import load_model
from specvid.shapesworld.clips import make_clip
from specvid.shapesworld.world import (
    MOTIONS,
    ClipSpec,
    ShapeTrack,
    clip_spec_for_seed,
    frame_times,
    split_seeds,
)


def test_labels_follow_a_moving_shape_and_mark_empty_cells():
    # A red circle starting in the top-left cell of a 4x4 grid and moving right by 0.3.
    track = ShapeTrack(color="red", kind="circle", radius=0.1, start=(0.125, 0.125), motion="right")
    spec = ClipSpec(background="gray", tracks=(track,))
    labels = token_labels(spec, grid=(2, 4, 4), times=frame_times(8)).reshape(2, 4, 4, 4)
    shape = [1 + COLOURS.index("red"), 1 + KINDS.index("circle"), 1 + MOTIONS.index("right")]
    assert labels[0, 0, 0, :3].tolist() == shape  # early half of the clip: still in the first cell
    assert labels[1, 0, 1, :3].tolist() == shape  # late half: moved one cell right
    assert labels[1, 3, 3, :3].tolist() == [0, 0, 0]  # far corner: no shape
    assert (labels[..., 3] == BACKGROUND_NAMES.index("gray")).all()


def test_a_shape_that_has_not_appeared_yet_is_not_labelled():
    track = ShapeTrack(
        color="blue", kind="square", radius=0.2, start=(0.5, 0.5), motion="appear", appear_time=0.65
    )
    labels = token_labels(ClipSpec(background="black", tracks=(track,)), grid=(2, 4, 4), times=frame_times(8))
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


def test_a_slab_is_consecutive_frames_of_the_clip_labelled_without_motion():
    # A clip where something moves, so each temporal row looks different.
    motions = {n: [t.motion for t in clip_spec_for_seed(n).tracks] for n in split_seeds("train", 50)}
    seed = next(n for n, m in motions.items() if "left" in m)
    frames, labels_of = slab_example(seed, np.random.default_rng(0), slab_frames=2, num_frames=8, size=56)
    clip = make_clip(seed, num_frames=8, size=56)
    starts = [i for i in range(0, 8, 2) if np.array_equal(clip.frames[i : i + 2], frames)]
    assert len(starts) == 1  # exactly one temporal row of the clip
    labels = labels_of((1, 2, 2))
    assert (labels[:, MOTION_COLUMN] == IGNORE).all()
    assert (labels[:, 3] == BACKGROUND_NAMES.index(clip.spec.background)).all()
    # The probe leaves the unasked column out rather than averaging over nothing.
    probe = TokenProbe(hidden=8, seed=0)
    loss = probe.loss(torch.randn(len(labels), 8), labels)
    assert torch.isfinite(loss)


@pytest.fixture(scope="module")
def zoo_draft():
    return load_model("qwen-tiny-draft")  # a shipped model: the zoo tokenizer, 0.7 MB of weights


def test_every_probe_class_has_one_word_token_in_the_zoo_tokenizer(zoo_draft):
    ids = class_token_ids(zoo_draft.tokenizer)
    words = [w for column in CLASS_WORDS for w in column]
    assert len(ids) == sum(CLASSES) == len(words)
    assert [int(i) < 0 for i in ids] == [w is None for w in words]  # only "no shape" has no word
    assert len(set(ids[ids >= 0].tolist())) == len(ids[ids >= 0])  # distinct words, distinct tokens


def test_a_word_aligned_probe_reads_a_class_along_its_words_embedding(zoo_draft):
    tokenizer = zoo_draft.tokenizer
    words = torch.randn(len(tokenizer), 16, requires_grad=True)
    probe = TokenProbe(hidden=16, seed=0, token_ids=class_token_ids(tokenizer), word_norm_sq=1.0)
    red = tokenizer(" red", add_special_tokens=False)["input_ids"][0]
    feature = 5 * words[red].detach()[None]  # a token that "looks like" the word red
    colour_logits = probe.logits(feature, words)[0, : CLASSES[0]]
    assert colour_logits.argmax() == 1 + COLOURS.index("red")
    # The words are the probe's fixed target: its loss trains the features, never the vocabulary.
    labels = torch.tensor([[1 + COLOURS.index("red"), 0, 0, 0]])
    features = feature.clone().requires_grad_(True)
    probe.loss(features, labels, words).backward()
    assert words.grad is None and features.grad is not None
    with pytest.raises(ValueError, match="input embeddings"):
        probe.logits(feature)


def test_probe_for_scales_word_logits_to_the_embeddings_norm(zoo_draft):
    adapter, tokenizer = zoo_draft, zoo_draft.tokenizer
    probe = probe_for(adapter.model, tokenizer, seed=0, word_aligned=True)
    words = adapter.model.get_input_embeddings().weight
    red = class_token_ids(tokenizer)[1]
    with torch.no_grad():
        logit = probe.logits(words[red][None], words)[0, 1]
    # A feature equal to a word's embedding gives a logit near 1 whatever the embeddings' scale.
    assert 0.3 < float(logit) < 3.0
    assert not probe_for(adapter.model, tokenizer, seed=0, word_aligned=False).word_aligned


def test_a_tokenizer_that_splits_a_class_word_is_refused():
    with pytest.raises(ValueError, match="tokens; the zoo tokenizer keeps anchors whole"):
        # The random test models use a byte-level BPE without the zoo's merges.
        class_token_ids(load_model("random-qwen-draft").tokenizer)
