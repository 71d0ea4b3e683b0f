"""The decode forward over a static cache slot: growth, and compiled against eager."""

from __future__ import annotations

import pytest
import torch

from specvid.config import ModelSpec
from specvid.engine import LocalEngine
from specvid.models.decoder import (
    SLOT_ROWS,
    column_major_linears,
    row_major_linears,
    slot_rows,
)
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


def test_cpu_models_load_with_column_major_linears_and_peers_can_borrow_the_usual_layout(random_models):
    adapter = random_models["qwen"][0]
    q_proj = adapter.model.model.language_model.layers[0].self_attn.q_proj
    out_features, in_features = q_proj.weight.shape
    assert q_proj.weight.stride() == (1, out_features)  # the transpose of a contiguous [in, out]
    values = q_proj.weight.detach().clone()
    prompt = adapter.build_prompt(random_frames(6), "What is red?")
    state, _ = adapter.prefill(prompt)
    column = adapter.extend(state, [9, 10, 11])
    adapter.crop(state, len(prompt))
    with row_major_linears(adapter.model):
        assert q_proj.weight.is_contiguous() and torch.equal(q_proj.weight, values)
        row = adapter.extend(state, [9, 10, 11])
    assert q_proj.weight.stride() == (1, out_features) and torch.equal(q_proj.weight, values)
    assert torch.allclose(column, row, atol=TOL)
    assert column_major_linears(adapter.model.model.language_model) == 0  # already laid out


def test_a_failed_compilation_leaves_the_forward_eager(random_models, monkeypatch, caplog):
    adapter = load_model("random-llava-draft")

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: broken)
    assert adapter.compile() == 0.0
    assert not adapter.decoder.compiled
    assert "decoding runs eagerly" in caplog.text
    prompt = adapter.build_prompt(random_frames(7), "Any shapes?")
    state, _ = adapter.prefill(prompt)
    assert adapter.extend(state, [4, 5]).shape[0] == 2
