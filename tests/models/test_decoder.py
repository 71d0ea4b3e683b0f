"""The decode forward over a static cache slot: growth, and compiled against eager."""

from __future__ import annotations

import pytest
import torch

from specvid.config import ModelSpec
from specvid.engine import LocalEngine
from specvid.models.decoder import SLOT_ROWS, slot_rows
from specvid.models.loader import load_model
from tests.helpers import FAMILIES, random_frames, random_video

TOL = 1e-4


def test_slot_rows_round_up_to_whole_blocks():
    assert slot_rows(1) == SLOT_ROWS
    assert slot_rows(SLOT_ROWS) == SLOT_ROWS
    assert slot_rows(SLOT_ROWS + 1) == 2 * SLOT_ROWS


@pytest.mark.parametrize("family", FAMILIES)
def test_a_full_slot_grows_and_keeps_its_rows(random_models, family):
    adapter = random_models[family][1]
    prompt = adapter.build_prompt(random_frames(3), "What moves?")
    tight, _ = adapter.prefill(prompt)  # no reserve: the slot ends within SLOT_ROWS of the prompt
    roomy, _ = adapter.prefill(prompt, reserve=2 * SLOT_ROWS)
    rows = tight.slot.max_len
    tokens = [(7 * i) % 200 + 3 for i in range(rows - len(prompt) + 5)]  # 5 past the end
    grown = torch.cat([adapter.extend(tight, tokens[:-8]), adapter.extend(tight, tokens[-8:])])
    expected = adapter.extend(roomy, tokens)
    assert tight.slot.max_len > rows
    assert torch.allclose(grown, expected, atol=TOL)


def test_crop_keeps_the_slot_and_masks_stale_rows(random_models):
    adapter = random_models["qwen"][0]
    prompt = adapter.build_prompt(random_frames(4), "Which colour?")
    state, _ = adapter.prefill(prompt)
    clean, _ = adapter.prefill(prompt)
    slot = state.slot
    adapter.extend(state, [21, 22, 23, 24])
    adapter.crop(state, len(prompt) + 1)
    assert state.slot is slot and state.length == len(prompt) + 1
    # Rows 2-3 still hold 23, 24: the next token must not see them.
    after = adapter.extend(state, [40])
    expected = adapter.extend(clean, [21, 40])[-1:]
    assert torch.allclose(after, expected, atol=TOL)


def test_compiled_decoding_equals_eager(random_models):
    """One compiled pair (the M-RoPE family): the same logits, and the same tokens for ar and sd."""
    eager_target, eager_draft = random_models["qwen"]
    target, draft = (load_model(ModelSpec(name=name, compile=True)) for name in ("random-qwen", "random-qwen-draft"))
    assert target.decoder.compiled and draft.decoder.compiled

    prompt = target.build_prompt(random_frames(5), "Describe the motion.")
    tokens = [5, 17, 99, 42, 7, 64]
    compiled_state, _ = target.prefill(prompt)
    eager_state, _ = eager_target.prefill(prompt)
    steps = [target.extend(compiled_state, [t]) for t in tokens[:2]]
    block = target.extend(compiled_state, tokens[2:])
    expected = eager_target.extend(eager_state, tokens)
    assert torch.allclose(torch.cat([*steps, block]), expected, atol=TOL)

    video = random_video(5)
    compiled, eager = LocalEngine(target, draft), LocalEngine(eager_target, eager_draft)
    for method in ("ar", "sd"):
        request = {"video": "unused", "prompt": "Describe the motion.", "decoding": {"method": method},
                   "sampling": {"max_tokens": 24, "ignore_eos": True}}
        assert compiled.generate(request, video=video).token_ids == eager.generate(request, video=video).token_ids
