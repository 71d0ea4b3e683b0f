"""The target's scored prefill (SpecVLM stage I) and the pruned draft prefill's positions."""

from __future__ import annotations

import pytest
import torch

from specvid.decoding.prune import select_video_tokens
from tests.helpers import FAMILIES, random_frames

TOL = 1e-4


def full_eager_attention(adapter, prompt):
    """Attention probabilities of an uncached full forward: one [heads, L, L] per layer."""
    language = adapter.model.model.language_model
    rows, positions = adapter.context_layout(prompt)
    previous = language.config._attn_implementation
    language.config._attn_implementation = "eager"
    try:
        with torch.inference_mode():
            out = adapter.model(
                inputs_embeds=adapter._prompt_embeddings(prompt, None)[None],
                position_ids=adapter._format_positions(positions),
                output_attentions=True,
            )
    finally:
        language.config._attn_implementation = previous
    return [a[0] for a in out.attentions]


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_are_the_text_after_the_video_attending_to_each_video_token(random_models, family):
    adapter = random_models[family][0]
    prompt = adapter.build_prompt(random_frames(3), "Which shape moves left?")
    _, _, scores = adapter.prefill_scored(prompt)
    # Reference: the full attention map, restricted to queries after the last video placeholder.
    last_video = int((prompt.input_ids == adapter.video_token_id).nonzero().max())
    layers = full_eager_attention(adapter, prompt)
    expected = torch.stack(
        [a[:, last_video + 1 :][..., prompt.video_index].float().mean(dim=(0, 1)) for a in layers]
    ).mean(0)
    assert scores.shape == (prompt.num_video_tokens,)
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-4)
    assert (scores >= 0).all() and scores.sum() < 1.0  # a share of each query's unit mass


@pytest.mark.parametrize("family", FAMILIES)
def test_scored_prefill_decodes_like_the_plain_one(random_models, family):
    adapter = random_models[family][0]
    prompt = adapter.build_prompt(random_frames(4), "What colour is the circle?")
    plain, plain_logits = adapter.prefill(prompt)
    scored, scored_logits, _ = adapter.prefill_scored(prompt)
    torch.testing.assert_close(scored_logits, plain_logits, atol=TOL, rtol=0)
    after_scored, after_plain = adapter.extend(scored, [5, 6, 7]), adapter.extend(plain, [5, 6, 7])
    torch.testing.assert_close(after_scored, after_plain, atol=TOL, rtol=0)
    assert adapter.model.model.language_model.config._attn_implementation == "sdpa"  # restored


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_draft_keeps_the_targets_positions(random_models, family):
    target, draft = random_models[family]
    frames = random_frames(5)
    target_prompt = target.build_prompt(frames, "Describe the video.")
    draft_prompt = draft.build_prompt(frames, "Describe the video.")
    keep = select_video_tokens(torch.rand(draft_prompt.num_video_tokens), drop_rate=0.9, pruning="uniform")
    rows, positions = draft.context_layout(draft_prompt, keep)
    _, target_positions = target.context_layout(target_prompt)
    # Kept video tokens sit where the target has them; so does every text token.
    text = draft_prompt.input_ids[rows] != draft.video_token_id
    kept_video = draft_prompt.video_index[keep]
    assert torch.equal(positions[:, ~text][:, : keep.numel()], target_positions[:, kept_video])
    assert torch.equal(positions[:, text], target_positions[:, rows[text]])
    # The pruned prefill is the full prompt with the dropped tokens masked out of attention.
    state, logits = draft.prefill(draft_prompt, keep)
    assert state.length == rows.numel()
    assert state.length + state.position_offset == int(target_positions.max()) + 1
    torch.testing.assert_close(logits, masked_reference(draft, draft_prompt, rows), atol=TOL, rtol=0)


def masked_reference(adapter, prompt, rows):
    """Last logits of a full forward in which only `rows` may be attended to."""
    mask = torch.zeros(len(prompt), dtype=torch.long)
    mask[rows] = 1
    _, positions = adapter.context_layout(prompt)
    with torch.inference_mode():
        out = adapter.model(
            inputs_embeds=adapter._prompt_embeddings(prompt, None)[None],
            position_ids=adapter._format_positions(positions),
            attention_mask=mask[None],
        )
    return out.logits[0, -1].float()


def test_compact_positions_renumber_the_pruned_sequence(random_models):
    draft = random_models["qwen"][1]
    prompt = draft.build_prompt(random_frames(6), "Describe the video.")
    keep = torch.arange(0, prompt.num_video_tokens, 10)
    rows, positions = draft.context_layout(prompt, keep, positions="compact")
    assert torch.equal(positions, torch.arange(rows.numel()).expand(3, -1))
    state, _ = draft.prefill(prompt, keep, positions="compact")
    assert (state.length, state.position_offset) == (rows.numel(), 0)
