"""Vision hand-over: a draft with the target's vision tower takes the target's tower output and
projects it itself; the embeddings, and so every token, are those of its own encoding."""

from __future__ import annotations

import pytest
import torch

from specvid.engine import LocalEngine
from specvid.models.loader import load_model
from tests.helpers import FAMILIES, random_frames, random_video


@pytest.fixture(scope="module")
def zoo_pairs():
    return {f: (load_model(f"{f}-tiny"), load_model(f"{f}-tiny-draft")) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_projected_target_tower_output_is_the_drafts_own_encoding(zoo_pairs, family):
    target, draft = zoo_pairs[family]
    assert target.tower_fingerprint == draft.tower_fingerprint  # distilled drafts keep the target's tower
    frames = random_frames(4)
    target_prompt, draft_prompt = target.build_prompt(frames, "What moves?", 4.0), draft.build_prompt(frames, "What moves?", 4.0)
    embeddings, tower = target.encode_video(target_prompt)
    assert torch.equal(embeddings, target.video_embeddings(target_prompt))  # the target's own input is unchanged
    assert torch.equal(draft.project_features(tower, draft_prompt), draft.video_embeddings(draft_prompt))


@pytest.mark.parametrize("family", FAMILIES)
def test_towers_that_differ_are_never_shared(random_models, zoo_pairs, family):
    random_target, random_draft = random_models[family]
    assert random_target.tower_fingerprint != random_draft.tower_fingerprint
    assert not LocalEngine(random_target, random_draft).shares_vision
    _, tower = random_target.encode_video(random_target.build_prompt(random_frames(1), "hi", 4.0))
    zoo_draft = zoo_pairs[family][1]
    with pytest.raises(ValueError, match="another vision tower"):
        zoo_draft.project_features(tower, zoo_draft.build_prompt(random_frames(1), "hi", 4.0))


@pytest.mark.parametrize("method", ["sd", "specvlm"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_shared_tower_changes_no_token_and_encodes_the_video_once(zoo_pairs, family, method):
    target, draft = zoo_pairs[family]
    shared, own = LocalEngine(target, draft), LocalEngine(target, draft)
    own.shares_vision = False  # the draft encodes the video itself, as with a tower of its own
    assert shared.shares_vision
    encodes = []
    handle = draft.model.model.get_video_features.__func__
    draft.model.model.get_video_features = lambda *a, **k: encodes.append(1) or handle(draft.model.model, *a, **k)
    try:
        for seed in range(3):
            request = {"video": "unused", "prompt": "Describe the video.", "sampling": {"max_tokens": 24},
                       "decoding": {"method": method, "num_draft_tokens": 4, "draft_length": "fixed"}}
            video = random_video(seed)
            ar = shared.generate({**request, "decoding": {"method": "ar"}}, video)
            before = len(encodes)
            handed = shared.generate(request, video)
            assert len(encodes) == before, "the draft encoded the video again"
            alone = own.generate(request, video)
            assert len(encodes) == before + 1
            assert handed.token_ids == alone.token_ids == ar.token_ids
            assert handed.stats.rounds_by_accepted == alone.stats.rounds_by_accepted  # the same drafts
            assert handed.stats.vision_shared and not alone.stats.vision_shared
            if method == "specvlm":
                assert handed.stats.draft_video_tokens < handed.stats.video_tokens  # pruning still picks
    finally:
        del draft.model.model.get_video_features
