"""Stage two's training conversations: which turns a clip gives, and in what order."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from specvid.zoo.language import describe_clip
from specvid.zoo.shapesworld import clip_spec_for_seed, split_seeds
from specvid.zoo.train import TrainConfig, example_turns, turn_rank

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
