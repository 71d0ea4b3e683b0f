"""Zoo model names, and the train -> export -> load path on a few steps."""

from __future__ import annotations

import pytest

from specvid.engine import LocalEngine
from specvid.errors import ModelLoadError
from specvid.models.loader import builtin_names, load_model
from specvid.zoo.evaluate import clip_video
from specvid.zoo.models import PAIRS, checkpoint_dir
from specvid.zoo.shapesworld import make_clip, split_seeds
from specvid.zoo.train import TrainConfig, train_model


def test_zoo_names_are_listed():
    names = builtin_names()
    for pair in PAIRS.values():
        assert pair.target.name in names and pair.draft.name in names


def test_an_untrained_zoo_name_is_a_clear_error_not_a_hub_lookup():
    name = PAIRS["qwen-tiny"].target.name
    if (checkpoint_dir(name) / "config.json").is_file():
        pytest.skip("this checkout ships the checkpoint")
    with pytest.raises(ModelLoadError, match="specvid zoo train"):
        load_model(name)


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_a_few_training_steps_export_a_loadable_checkpoint(tmp_path, pair):
    draft = PAIRS[pair].draft
    cfg = TrainConfig(steps=3, batch_size=2, warmup=1, save_every=2, train_clips=4)
    losses = []
    out = train_model(draft, cfg, tmp_path / "work", lambda s, loss: losses.append(loss), tmp_path / "ckpt")
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert (tmp_path / "work" / draft.name / "state.pt").is_file()  # resumable state
    model = load_model(str(out))  # the same loader path as any local checkpoint
    assert model.family == draft.family
    clip = make_clip(split_seeds("eval", 1)[0])
    request = {"video": "in-memory", "prompt": clip.caption_prompt, "sampling": {"max_tokens": 4}}
    result = LocalEngine(model, model).generate({**request, "spec": {"method": "sd"}}, clip_video(clip))
    assert 0 < len(result.token_ids) <= 4
    # Resuming a finished run trains nothing more.
    resumed = []
    train_model(draft, cfg, tmp_path / "work", lambda s, loss: resumed.append(loss), tmp_path / "ckpt")
    assert resumed == []
