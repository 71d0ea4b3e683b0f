"""The zoo's byte-level BPE: deterministic, lossless, families' special tokens intact."""

from __future__ import annotations

import re

import pytest
from transformers import AutoTokenizer

from lab.zoo.tokenizer import train_zoo_tokenizer, zoo_tokenizer
from specvid.models.tokenizer import FAMILY_SPECIAL_TOKENS
from specvid.shapesworld.anchors import anchor_spans, token_anchor_mask
from specvid.shapesworld.language import build_corpus, clip_text
from specvid.shapesworld.questions import inventory
from specvid.shapesworld.world import clip_spec_for_seed, split_seeds

CLIPS = 300  # enough text to saturate the merges


@pytest.fixture(scope="module")
def merges():
    return train_zoo_tokenizer(vocab_size=800, seed=0, num_clips=CLIPS)


@pytest.fixture(scope="module")
def eval_corpus():
    return build_corpus(split_seeds("eval", 40))


def test_training_is_deterministic(merges):
    assert train_zoo_tokenizer(vocab_size=800, seed=0, num_clips=CLIPS) == merges
    assert all(isinstance(m, tuple) and len(m) == 2 for m in merges)
    assert len(train_zoo_tokenizer(vocab_size=300, seed=0, num_clips=CLIPS)) == 300 - 256


@pytest.mark.parametrize("family", sorted(FAMILY_SPECIAL_TOKENS))
def test_round_trip_and_special_tokens(merges, eval_corpus, family):
    tokenizer = zoo_tokenizer(family, merges)
    assert 600 <= len(tokenizer) <= 1000
    for text in eval_corpus:
        ids = tokenizer(text).input_ids
        assert tokenizer.decode(ids) == text
        assert len(ids) <= 2 * len(text.split())  # merges actually compress
    for special in FAMILY_SPECIAL_TOKENS[family]:
        ids = tokenizer(f"x{special}y").input_ids
        assert len(tokenizer(special).input_ids) == 1
        assert tokenizer.convert_tokens_to_ids(special) in ids


def test_save_and_reload(merges, eval_corpus, tmp_path):
    tokenizer = zoo_tokenizer("qwen2_5_vl", merges)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\n" + eval_corpus[1] + "<|im_end|>"
    assert reloaded(text).input_ids == tokenizer(text).input_ids
    assert reloaded.eos_token == "<|im_end|>" and len(reloaded) == len(tokenizer)


def test_every_anchor_is_one_token(merges, eval_corpus):
    # So "is this token an anchor" never splits a fact across tokens.
    tokenizer = zoo_tokenizer("llava_onevision", merges)
    for text in eval_corpus:
        offsets = tokenizer(text, return_offsets_mapping=True).offset_mapping
        for a, b in anchor_spans(text):
            covering = [(s, e) for s, e in offsets if s < b and a < e]
            assert len(covering) == 1, (text[a:b], text)


def test_token_level_anchor_flags(merges):
    tokenizer = zoo_tokenizer("qwen2_5_vl", merges)
    text = "The red circle slowly slides left."
    encoding = tokenizer(text, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoding.input_ids)
    flags = token_anchor_mask(text, encoding.offset_mapping)
    assert [t for t, f in zip(tokens, flags) if f] == ["Ġred", "Ġcircle", "Ġleft"]


def test_reasonings_use_only_words_the_corpus_already_has(merges):
    # Reasoned answers are a training option over the same tokenizer: each word stays one token.
    tokenizer = zoo_tokenizer("qwen2_5_vl", merges)
    seeds = split_seeds("eval", 60)
    reasonings = [qa.reasoning for seed in seeds for qa in clip_text(seed).qa]
    reasonings += [inventory(clip_spec_for_seed(seed)) for seed in seeds]
    for text in filter(None, reasonings):
        words = re.findall(r" ?[A-Za-z]+|[^ A-Za-z]+", text + "\n")
        assert [len(tokenizer.tokenize(word)) for word in words] == [1] * len(words), text
