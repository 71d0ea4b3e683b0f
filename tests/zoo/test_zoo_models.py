"""Zoo model names, and the train -> export -> load path on a few steps."""

from __future__ import annotations

import pytest

from specvid.engine import LocalEngine
from specvid.errors import ModelLoadError
from specvid.models.loader import builtin_names, load_model
from specvid.zoo.evaluate import clip_video
from specvid.zoo.models import PAIRS, checkpoint_dir
from specvid.zoo.scorer import score_caption
from specvid.zoo.shapesworld import make_clip, split_seeds
from specvid.zoo.supervision import VisionStageConfig
from specvid.zoo.train import TrainConfig, train_model


def test_zoo_names_are_listed():
    names = builtin_names()
    for pair in PAIRS.values():
        assert pair.target.name in names and pair.draft.name in names


def shipped(name: str) -> bool:
    return (checkpoint_dir(name) / "config.json").is_file()


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_an_untrained_zoo_name_is_a_clear_error_not_a_hub_lookup(pair, tmp_path, monkeypatch):
    import specvid.zoo.models as zoo_models

    monkeypatch.setattr(zoo_models, "CHECKPOINT_ROOT", tmp_path)  # a checkout without checkpoints
    with pytest.raises(ModelLoadError, match="specvid zoo train"):
        load_model(PAIRS[pair].target.name)


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_a_shipped_pair_captions_above_a_floor_and_sd_is_exact(pair):
    """The trained target names real facts of a held-out clip; the pair's sd output is ar's."""
    target, draft = PAIRS[pair].target.name, PAIRS[pair].draft.name
    if not (shipped(target) and shipped(draft)):
        pytest.skip(f"{pair} is not shipped in this checkout")
    engine = LocalEngine(load_model(target), load_model(draft))
    scores = []
    for seed in split_seeds("eval", 3):
        clip = make_clip(seed)
        video = clip_video(clip)
        request = {"video": "in-memory", "prompt": clip.caption_prompt, "sampling": {"max_tokens": 80}}
        ar = engine.generate({**request, "spec": {"method": "ar"}}, video)
        sd = engine.generate({**request, "spec": {"method": "sd", "num_draft_tokens": 5}}, video)
        assert sd.token_ids == ar.token_ids
        scores.append(score_caption(ar.text, clip).f1)
    # A random model scores 0; over 200 clips the shipped qwen-tiny averages 0.91, llava-tiny 0.75.
    assert sum(scores) / len(scores) > 0.3, scores


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
    result = LocalEngine(model, model).generate({**request, "spec": {"method": "sd"}}, clip_video(clip))
    assert len(result.token_ids) == 4
    # Resuming a finished run trains nothing more.
    resumed = []
    train_model(draft, cfg, tmp_path / "work", lambda *step: resumed.append(step), tmp_path / "ckpt")
    assert resumed == []
