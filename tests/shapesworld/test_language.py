"""The ShapesWorld grammar: exact anchors, varied fillers, anchor marking, corpus size."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from specvid.shapesworld import language, questions
from specvid.shapesworld.anchors import (
    anchor_spans,
    anchor_words,
    find_option_letters,
    is_anchor_word,
    token_anchor_mask,
)
from specvid.shapesworld.clips import make_clip
from specvid.shapesworld.language import (
    CAPTION_PROMPTS,
    LAST_CLAUSES,
    build_corpus,
    clip_text,
)
from specvid.shapesworld.questions import reasoned_answer
from specvid.shapesworld.scorer import answer_values, parse_facts, score_answer
from specvid.shapesworld.vocabulary import (
    MOTION_PHRASES,
    MOTION_WORDS,
    OPTION_LETTERS,
    POST_PHRASES,
    PRE_ADVERBS,
    Picker,
)
from specvid.shapesworld.world import clip_spec_for_seed, split_seeds

SEEDS = range(300)
WORD = re.compile(r"[A-Za-z]+")


def anchors_in(text: str) -> list[str]:
    return [text[a:b] for a, b in anchor_spans(text)]


def test_caption_states_exactly_the_spec_facts():
    for seed in SEEDS:
        assert parse_facts(clip_text(seed).caption) == clip_spec_for_seed(seed).facts(), seed


def test_reference_answers_match_the_spec():
    for seed in SEEDS:
        spec, text = clip_spec_for_seed(seed), clip_text(seed)
        names = {track.name for track in spec.tracks}
        for qa in text.qa:
            assert score_answer(qa.answer, qa), (seed, qa)
            if qa.kind == "exists":
                assert (qa.fact[1] in names) == (qa.value == "yes")
            else:
                assert qa.fact in spec.facts(), (seed, qa)


def test_a_reasoning_states_the_fact_its_decision_rests_on():
    for seed in SEEDS:
        spec, text = clip_spec_for_seed(seed), clip_text(seed)
        colour_of = {track.kind: track.color for track in spec.tracks}
        for qa in text.qa:
            assert bool(qa.reasoning) == (qa.kind == "exists" or bool(qa.options)), qa
            if qa.kind == "exists":
                colour, kind = qa.fact[1].split()
                if kind in colour_of:
                    assert qa.reasoning == f"The {kind} is {colour_of[kind]}."
                    assert (colour_of[kind] == colour) == (qa.value == "yes")
                else:
                    assert qa.reasoning == f"There is no {kind}." and qa.value == "no"
            elif qa.options:
                # The right option's text, word for word, so the letter is found by matching it.
                assert qa.options[OPTION_LETTERS.index(qa.letter)] in qa.reasoning
                assert answer_values(qa.reasoning, qa.kind) == {qa.value}
                assert not find_option_letters(qa.reasoning)
            if qa.reasoning:
                assert reasoned_answer(qa) == f"{qa.reasoning}\n{qa.answer}"
                assert score_answer(reasoned_answer(qa), qa), qa
            else:
                assert reasoned_answer(qa) == qa.answer


def test_contrast_questions_differ_only_in_what_the_question_says():
    options_differ = 0
    for seed in SEEDS:
        spec = clip_spec_for_seed(seed)
        pick = Picker(np.random.default_rng(seed))
        present, absent, first, second = questions.contrast_questions(spec, pick)
        assert (present.kind, present.value, absent.kind, absent.value) == ("exists", "yes", "exists", "no")
        (colour, kind), (near_colour, near_kind) = present.fact[1].split(), absent.fact[1].split()
        assert (colour == near_colour) != (kind == near_kind)  # a near miss shares one of the two
        assert first.options and second.options and first.value == second.value
        assert first.question.split("\n")[0] == second.question.split("\n")[0]
        assert first.reasoning == second.reasoning
        options_differ += first.options != second.options
        for qa in (present, absent, first, second):
            assert score_answer(reasoned_answer(qa), qa) and score_answer(qa.answer, qa), (seed, qa)
    assert options_differ >= 0.9 * len(SEEDS)  # a count question has only 4 values to order


def test_make_clip_uses_the_same_text_as_clip_text():
    clip, text = make_clip(5), clip_text(5)
    assert clip.caption_prompt == text.caption_prompt
    assert (clip.caption, clip.qa) == (text.caption, text.qa)


def test_multiple_choice_format():
    choices = [qa for seed in SEEDS for qa in clip_text(seed).qa if qa.options]
    assert len(choices) == len(SEEDS)
    assert {qa.kind for qa in choices} == {"color", "shape", "motion", "count", "background"}
    assert {qa.letter for qa in choices} == set(OPTION_LETTERS)
    for qa in choices:
        lines = qa.question.split("\n")
        assert [line[:3] for line in lines[1:5]] == ["A. ", "B. ", "C. ", "D. "]
        assert len(set(qa.options)) == 4
        assert find_option_letters(qa.answer) == [qa.letter]


def test_the_same_fact_is_phrased_in_several_ways():
    phrasings: dict[str, set[str]] = defaultdict(set)
    for seed in SEEDS:
        spec, text = clip_spec_for_seed(seed), clip_text(seed)
        for sentence in text.caption.split(". "):
            for track in spec.tracks:
                if track.name in sentence and "first" not in sentence and "last" not in sentence:
                    phrasings[track.motion].add(sentence.replace(track.name, "X").rstrip("."))
        for qa in text.qa:
            if qa.kind == "count" and not qa.options:
                phrasings[f"count {qa.value}"].add(qa.answer)
        phrasings["scene"].add(" ".join(text.caption.split()[:3]))
    for fact, variants in phrasings.items():
        assert len(variants) >= 2, (fact, variants)
    assert len(phrasings["left"]) >= 10 and len(phrasings["scene"]) >= 5


# Template tables whose own words are all fillers (the facts come in through placeholders).
FILLER_TABLES = (
    "CAPTION_PROMPTS", "SCENE_TEMPLATES", "SHAPE_ADJECTIVES", "WHERE_PHRASES",
    "BACKGROUND_SENTENCES", "LATER_SHAPE_TEMPLATES", "MC_INSTRUCTIONS", "MC_ANSWERS",
    "COLOUR_QUESTIONS", "COLOUR_ANSWERS", "KIND_QUESTIONS", "KIND_ANSWERS", "MOTION_QUESTIONS",
    "DIRECTION_QUESTIONS", "MOTION_ANSWERS", "COUNT_QUESTIONS", "COUNT_ANSWERS",
    "BACKGROUND_QUESTIONS", "BACKGROUND_ANSWERS", "ORDER_QUESTIONS", "ORDER_ANSWERS",
    "EXISTS_QUESTIONS",
)  # fmt: skip


def test_fillers_never_contain_anchor_words():
    tables = [next(getattr(m, name) for m in (language, questions) if hasattr(m, name)) for name in FILLER_TABLES]
    for table in tables + [*PRE_ADVERBS.values(), *POST_PHRASES.values()]:
        for template in table:
            words = WORD.findall(re.sub(r"\{\w+\}", "", template))
            assert not [w for w in words if is_anchor_word(w)], template
    for clause in LAST_CLAUSES:
        assert anchors_in(clause.format(name="x")) == ["last"]


def test_each_motion_phrase_names_its_motion_only():
    for motion, phrases in MOTION_PHRASES.items():
        for phrase in phrases:
            meant = {MOTION_WORDS[w] for w in WORD.findall(phrase) if w in MOTION_WORDS}
            assert meant == {motion}, phrase
            assert all(MOTION_WORDS.get(w) == motion for w in anchors_in(phrase))


def test_anchor_spans_of_a_sentence():
    text = "Here, an orange star slowly slides left. There are two shapes on a navy background."
    assert anchors_in(text) == ["orange", "star", "left", "two", "navy"]
    assert text[slice(*anchor_spans(text)[0])] == "orange"


def test_option_letters_are_anchors_and_the_article_is_not():
    question = "What colour is the star?\nA. red\nB. blue\nC. green\nD. white\nSelect one."
    # "one" is an anchor word wherever it stands; the grammar never uses it as a pronoun.
    expected = ["star", "A", "red", "B", "blue", "C", "green", "D", "white", "one"]
    assert anchors_in(question) == expected
    assert anchors_in("A red circle does not move.") == ["red", "circle", "not"]
    assert anchors_in("B") == ["B"] and anchors_in("The answer is C.") == ["C"]
    assert anchors_in("No, there are 3 shapes.") == ["No", "3"]
    assert find_option_letters("B. blue") == ["B"] and find_option_letters("A blue star.") == []


def test_token_anchor_mask():
    text = "The red circle grows."
    offsets = [(0, 3), (3, 7), (7, 14), (14, 20), (20, 21), (0, 0)]
    assert token_anchor_mask(text, offsets) == [False, True, True, True, False, False]


def test_anchor_word_set():
    words = anchor_words()
    assert {"red", "navy", "circle", "left", "rises", "two", "first", "yes", "not", "A"} <= words
    assert not {"the", "moves", "slowly", "background", "a"} & words


def test_corpus_is_small_deterministic_and_covers_all_anchors():
    seeds = split_seeds("train", 400)
    corpus = build_corpus(seeds)
    assert corpus == build_corpus(seeds)
    words = {w.lower() for line in corpus for w in WORD.findall(line)}
    assert 100 <= len(words) <= 300
    assert {w.lower() for w in anchor_words()} <= words
    assert set(CAPTION_PROMPTS) <= set(corpus)
