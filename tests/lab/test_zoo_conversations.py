"""Stage two's training conversations: which turns a clip gives, in what order, and how a row
of sibling turns encodes them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lab.zoo.rows import (
    PAD_SEGMENT,
    collate,
    encode_conversation,
    encode_siblings,
    sibling_attention_mask,
)
from lab.zoo.train import TrainConfig, example_turns, training_frames, turn_rank
from specvid.models.loader import load_model
from specvid.shapesworld.language import describe_clip
from specvid.shapesworld.world import clip_spec_for_seed, split_seeds

SEEDS = split_seeds("train", 40)


def _ranks(seed: int, cfg: TrainConfig) -> list[int]:
    """The rank of each question turn (the caption, when drawn, is not a question)."""
    rng = np.random.default_rng(seed)
    turns = example_turns(seed, rng, cfg)
    # The same draw again, to map each prompt back to its QA.
    text = describe_clip(clip_spec_for_seed(seed), np.random.default_rng(seed))
    by_prompt = {qa.question: qa for qa in text.qa}
    return [turn_rank(by_prompt[prompt]) for prompt, _ in turns if prompt in by_prompt]


def test_lookups_come_before_the_turns_that_name_shapes_in_full():
    cfg = TrainConfig(lookups_first=True, caption_share=0.0)
    ranks = [_ranks(seed, cfg) for seed in SEEDS]
    assert all(r == sorted(r) for r in ranks)
    # Ordering is the only change: the drawn questions are those of the unordered recipe.
    unordered = [_ranks(seed, replace(cfg, lookups_first=False)) for seed in SEEDS]
    assert [sorted(r) for r in unordered] == ranks
    assert any(r != sorted(r) for r in unordered)  # without it, lookups often come late


def test_a_multiple_choice_question_ranks_last_whatever_it_asks():
    spec = clip_spec_for_seed(SEEDS[0])
    qa = describe_clip(spec, np.random.default_rng(0)).qa
    choice = next(q for q in qa if q.options)
    colour = next(q for q in qa if q.kind == "color" and not q.options)
    motion = next(q for q in qa if q.kind == "motion")
    assert turn_rank(colour) < turn_rank(motion) <= turn_rank(choice)


@pytest.mark.parametrize("lookups_first", [True, False])
def test_a_caption_opens_the_conversation_and_replaces_two_questions(lookups_first):
    cfg = TrainConfig(lookups_first=lookups_first, caption_share=1.0)
    seed = SEEDS[1]
    turns = example_turns(seed, np.random.default_rng(seed), cfg)
    text = describe_clip(clip_spec_for_seed(seed), np.random.default_rng(seed))
    assert turns[0][0] == text.caption_prompt
    assert len(turns) == 1 + min(cfg.turns, len(text.qa)) - 2


def test_reasoned_answers_change_only_the_answers_that_have_a_reasoning():
    cfg = TrainConfig(caption_share=0.0)
    changed = 0
    for seed in SEEDS[:10]:
        plain = example_turns(seed, np.random.default_rng(seed), cfg)
        reasoned = example_turns(seed, np.random.default_rng(seed), replace(cfg, reasoned_answers=True))
        text = describe_clip(clip_spec_for_seed(seed), np.random.default_rng(seed))
        reasoning = {qa.question: qa.reasoning for qa in text.qa}
        assert [p for p, _ in reasoned] == [p for p, _ in plain]
        for (prompt, answer), (_, plain_answer) in zip(reasoned, plain, strict=True):
            expected = f"{reasoning[prompt]}\n{plain_answer}" if reasoning[prompt] else plain_answer
            assert answer == expected
            changed += answer != plain_answer
    assert changed >= 10  # about two of a clip's six drawn questions have a reasoning


def test_without_reasoned_yes_no_only_multiple_choice_states_its_reasoning():
    cfg = TrainConfig(caption_share=0.0, reasoned_answers=True, contrast_turns=True)
    for seed in SEEDS[:10]:
        both = example_turns(seed, np.random.default_rng(seed), cfg)
        choices = example_turns(seed, np.random.default_rng(seed), replace(cfg, reasoned_yes_no=False))
        plain = example_turns(seed, np.random.default_rng(seed), replace(cfg, reasoned_answers=False))
        assert [p for p, _ in choices] == [p for p, _ in both]
        for (prompt, answer), reasoned, unreasoned in zip(choices, both, plain, strict=True):
            is_choice = "\nA. " in prompt
            assert answer == (reasoned[1] if is_choice else unreasoned[1])
        assert any(r != u for r, u in zip(both[-4:-2], plain[-4:-2]))  # the yes/no pair had reasonings


def test_an_inventory_reasoning_lists_every_shape_of_the_clip_in_yes_no_answers_only():
    from specvid.shapesworld.questions import inventory
    from specvid.shapesworld.scorer import answer_values

    cfg = TrainConfig(caption_share=0.0, reasoned_answers=True, contrast_turns=True)
    for seed in SEEDS[:10]:
        spec = clip_spec_for_seed(seed)
        colours = example_turns(seed, np.random.default_rng(seed), cfg)
        listed = example_turns(seed, np.random.default_rng(seed), replace(cfg, yes_no_inventory=True))
        yes_no = colours[-4:-2]  # the contrast pair: a shape of the clip and a near miss of it
        for (prompt, answer), (_, before) in zip(listed, colours, strict=True):
            if (prompt, before) in yes_no:
                sentence, decision = answer.split("\n")
                assert sentence == inventory(spec) and decision == before.split("\n")[1]
            else:
                assert answer == before
        # The sentence names every shape, each with its own colour, and nothing else.
        assert answer_values(inventory(spec), "shape") == {t.kind for t in spec.tracks}
        assert all(f" {t.name}" in inventory(spec) for t in spec.tracks)
    assert inventory(clip_spec_for_seed(SEEDS[0])).startswith("The clip shows a")


def test_contrast_turns_replace_the_drawn_yes_no_and_choice_questions():
    cfg = TrainConfig(caption_share=0.0, contrast_turns=True)
    for seed in SEEDS[:10]:
        turns = example_turns(seed, np.random.default_rng(seed), cfg)
        plain = example_turns(seed, np.random.default_rng(seed), replace(cfg, contrast_turns=False))
        text = describe_clip(clip_spec_for_seed(seed), np.random.default_rng(seed))
        decided = {qa.question for qa in text.qa if qa.kind == "exists" or qa.options}
        kept = [turn for turn in plain if turn[0] not in decided]
        assert turns[: len(kept)] == kept
        added = turns[len(kept) :]
        assert len(added) == 4 and [a for _, a in added[:2]] != [a for _, a in added[2:]]
        assert "\nA. " in added[2][0] and "\nA. " in added[3][0]


def test_a_caption_replaces_drawn_questions_never_a_contrast_pair():
    cfg = TrainConfig(caption_share=1.0, contrast_turns=True)
    for seed in SEEDS[:10]:
        turns = example_turns(seed, np.random.default_rng(seed), cfg)
        without = example_turns(seed, np.random.default_rng(seed), replace(cfg, caption_share=0.0))
        caption = describe_clip(clip_spec_for_seed(seed), np.random.default_rng(seed)).caption
        assert turns[0][1] == caption
        assert turns[-4:] == without[-4:]  # all four contrast turns, as drawn without a caption
        assert len(turns) - 1 - 4 <= cfg.turns - 2


def test_a_sibling_sees_the_prefix_and_itself_only():
    segments = torch.tensor([[0, 0, 1, 1, 2, 2, PAD_SEGMENT]])
    mask = sibling_attention_mask(segments)[0, 0]  # [L, L], True = attend
    assert mask[3].tolist() == [True, True, True, True, False, False, False]
    assert mask[5].tolist() == [True, True, False, False, True, True, False]  # not turn 1
    assert mask[6].tolist() == [True, True, False, False, False, False, False]  # padding: prefix
    assert not mask.triu(1).any()  # causal


def _answer_logits(adapter, rows: list[dict]) -> list[torch.Tensor]:
    """Logits at every labelled position of each row, from one batched forward."""
    batch = collate(rows, adapter.tokenizer.pad_token_id, adapter.video_token_id, adapter.family)
    with torch.no_grad():
        logits = adapter.model(**batch, use_cache=False).logits
    labelled = batch["labels"] != -100
    return [logits[i, labelled[i]] for i in range(len(rows))]


@pytest.mark.parametrize("name", ["qwen-tiny-draft", "llava-tiny-draft"])
def test_sibling_turns_are_computed_as_single_questions_asked_after_the_video(name):
    # The oracle: in a row of siblings every answer gets the logits it would get as the only
    # question of a conversation, the layout served requests have.
    adapter = load_model(name)
    seed = SEEDS[2]
    frames = training_frames(seed, num_frames=8, size=112)
    turns = example_turns(seed, np.random.default_rng(seed), TrainConfig(caption_share=1.0))
    assert len(turns) >= 3
    siblings = [encode_siblings(adapter, frames, turns), encode_siblings(adapter, frames, turns[1:3])]
    got = _answer_logits(adapter, siblings)  # two rows of different lengths: padding too
    for row, logits, row_turns in zip(siblings, got, [turns, turns[1:3]]):
        singles = _answer_logits(adapter, [encode_conversation(adapter, frames, [t]) for t in row_turns])
        torch.testing.assert_close(logits, torch.cat(singles), atol=1e-4, rtol=1e-4)
        assert len(set(row["segments"])) == 1 + len(row_turns)
    # Packed one after another, the later answers see the earlier turns: a different computation.
    packed = _answer_logits(adapter, [encode_conversation(adapter, frames, turns)])[0]
    assert not torch.allclose(packed, got[0], atol=1e-3)


def test_settings_apply_by_name_with_their_field_types():
    from lab.zoo.train import with_overrides

    cfg = with_overrides(TrainConfig(), ["sibling_turns=true", "lr=3e-4", "vision.steps=800", "turns = 9"])
    assert (cfg.sibling_turns, cfg.lr, cfg.vision.steps, cfg.turns) == (True, 3e-4, 800, 9)
    assert cfg.vision.batch_size == TrainConfig().vision.batch_size  # the rest stays
    with pytest.raises(ValueError, match="takes a bool"):
        with_overrides(TrainConfig(), ["sibling_turns=maybe"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        with_overrides(TrainConfig(), ["sibling_turns"])
    with pytest.raises(ValueError, match="has no settings of its own"):
        with_overrides(TrainConfig(), ["lr.steps=1"])
    assert with_overrides(TrainConfig(), ["frame_cycle=8, 8,16"]).frame_cycle == (8, 8, 16)
    for bad in ("8,sixteen", "8,0", ""):
        with pytest.raises(ValueError, match="'frame_cycle' takes a comma-separated list of positive ints"):
            with_overrides(TrainConfig(), [f"frame_cycle={bad}"])


def test_a_frame_cycle_sets_each_steps_frame_count_and_its_labels():
    from lab.zoo.recipes import MODELS
    from lab.zoo.train import frames_at, language_batch

    assert [frames_at(s, TrainConfig(num_frames=4)) for s in range(3)] == [4, 4, 4]
    cfg = TrainConfig(frame_cycle=(8, 16), batch_size=2, turns=2, caption_share=0.0)
    assert [frames_at(s, cfg) for s in range(5)] == [8, 16, 8, 16, 8]
    adapter = load_model("llava-tiny-draft")
    for step, frames in ((0, 8), (1, 16)):
        rows, batch, labels = language_batch(adapter, MODELS["llava-tiny-draft"], cfg, SEEDS, step)
        assert [row["video_grid"][0] for row in rows] == [frames, frames]
        assert labels.shape[0] == sum(int(np.prod(row["video_grid"])) for row in rows)


def test_every_zoo_models_recipe_settings_are_valid():
    from lab.zoo.recipes import MODELS
    from lab.zoo.train import with_overrides

    recipes = {name: with_overrides(TrainConfig(), list(m.settings)) for name, m in MODELS.items()}
    for target in ("qwen-tiny", "llava-tiny"):
        assert recipes[target].sibling_turns and recipes[target].word_aligned_probe
    assert recipes["llava-tiny"].frame_cycle == (8, 8, 16)
    for draft in ("qwen-tiny-draft", "llava-tiny-draft"):
        assert recipes[draft] == TrainConfig()  # the drafts keep the default recipe


def test_answer_tokens_mark_the_anchors_and_never_the_closing_token():
    from lab.zoo.rows import answer_tokens

    tokenizer = load_model("qwen-tiny-draft").tokenizer
    ids, anchors = answer_tokens(tokenizer, "The circle is blue.\nB")
    assert len(ids) == len(anchors) and ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert not anchors[-1]
    assert [tokenizer.decode([i]).strip() for i, a in zip(ids, anchors) if a] == ["circle", "blue", "B"]


@pytest.mark.parametrize("sibling_turns", [False, True])
def test_label_weights_put_the_anchor_weight_on_anchor_labels_only(sibling_turns):
    from lab.zoo.rows import label_weights

    adapter = load_model("qwen-tiny-draft")
    seed = SEEDS[1]
    turns = example_turns(seed, np.random.default_rng(seed), TrainConfig(caption_share=0.0))
    encode = encode_siblings if sibling_turns else encode_conversation
    rows = [encode(adapter, training_frames(seed, num_frames=8, size=112), turns[:k]) for k in (3, 1)]
    width = max(len(r["input_ids"]) for r in rows)
    weights = label_weights(rows, width, anchor_weight=4.0)  # [2, width]
    for row, w in zip(rows, weights):
        labelled = torch.tensor(row["labels"]) != -100
        anchors = torch.tensor(row["anchors"])
        n = len(row["input_ids"])
        assert anchors.any() and (anchors & labelled).sum() == anchors.sum()  # anchors are answer tokens
        assert w[:n][anchors].eq(4.0).all() and w[:n][labelled & ~anchors].eq(1.0).all()
        assert w[:n][~labelled].eq(0.0).all() and w[n:].eq(0.0).all()  # prompt and padding


def test_the_weighted_loss_with_unit_weights_is_the_models_own_loss():
    from lab.zoo.rows import label_weights
    from lab.zoo.train import weighted_next_token_loss, without_labels

    adapter = load_model("qwen-tiny-draft")
    seed = SEEDS[3]
    turns = example_turns(seed, np.random.default_rng(seed), TrainConfig(caption_share=0.0))
    frames = training_frames(seed, num_frames=8, size=112)
    rows = [encode_siblings(adapter, frames, turns), encode_siblings(adapter, frames, turns[:2])]
    batch = collate(rows, adapter.tokenizer.pad_token_id, adapter.video_token_id, adapter.family)
    with torch.no_grad():
        own = adapter.model(**batch, use_cache=False).loss
        logits = adapter.model(**without_labels(batch), use_cache=False).logits
    width = batch["labels"].shape[1]
    unit = weighted_next_token_loss(logits, batch["labels"], label_weights(rows, width, 1.0))
    torch.testing.assert_close(unit, own, atol=1e-5, rtol=1e-5)
    # Weighted up, the anchors' mean loss pulls the total towards itself.
    only_anchors = torch.zeros_like(batch["labels"], dtype=torch.float)
    for i, row in enumerate(rows):
        only_anchors[i, : len(row["anchors"])] = torch.tensor(row["anchors"], dtype=torch.float)
    anchor_mean = weighted_next_token_loss(logits, batch["labels"], only_anchors)
    heavy = weighted_next_token_loss(logits, batch["labels"], label_weights(rows, width, 50.0))
    assert abs(heavy - anchor_mean) < abs(unit - anchor_mean)
