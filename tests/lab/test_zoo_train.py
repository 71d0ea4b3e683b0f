"""The recipes make the registry's pairs; the train -> export -> load path on a few steps."""

from __future__ import annotations

import pytest

from lab.zoo.recipes import PAIRS
from lab.zoo.supervision import VisionStageConfig
from lab.zoo.train import TrainConfig, train_model
from specvid.bench.card import clip_video
from specvid.engine import LocalEngine
from specvid.models.loader import load_model
from specvid.models.registry import ZOO_PAIRS
from specvid.shapesworld.clips import make_clip
from specvid.shapesworld.world import split_seeds


def test_the_recipes_make_exactly_the_registry_pairs():
    assert {name: (p.target.name, p.draft.name) for name, p in PAIRS.items()} == ZOO_PAIRS


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_a_few_training_steps_export_a_loadable_checkpoint(tmp_path, pair):
    draft = PAIRS[pair].draft
    vision = VisionStageConfig(slab_steps=2, slab_batch_size=2, steps=1, batch_size=2)
    cfg = TrainConfig(steps=3, batch_size=2, warmup=1, save_every=2, train_clips=4, vision=vision)
    losses = []

    def record(stage, step, total, loss):
        losses.append((stage, step, total))
        assert loss > 0

    out = train_model(draft, cfg, tmp_path / "work", record, tmp_path / "ckpt")
    assert losses == [("vision", s, 3) for s in (1, 2, 3)] + [("language", s, 3) for s in (1, 2, 3)]
    assert (tmp_path / "work" / draft.name / "state.pt").is_file()  # resumable state
    model = load_model(str(out))  # the same loader path as any local checkpoint
    assert model.family == draft.family
    clip = make_clip(split_seeds("eval", 1)[0])
    request = {"video": "in-memory", "prompt": clip.caption_prompt, "sampling": {"max_tokens": 4, "ignore_eos": True}}
    result = LocalEngine(model, model).generate({**request, "decoding": {"method": "sd"}}, clip_video(clip))
    assert len(result.token_ids) == 4
    # Resuming a finished run trains nothing more.
    resumed = []
    train_model(draft, cfg, tmp_path / "work", lambda *step: resumed.append(step), tmp_path / "ckpt")
    assert resumed == []
