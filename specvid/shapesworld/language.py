"""The ShapesWorld language: a clip's reference text (caption grammar here, QA pairs from
`questions.py`, words and filler phrasings from `vocabulary.py`).

Every sentence is built from two kinds of words:

- *anchors* state a visual fact — a colour, a shape kind, a motion, a count, an order
  (first / last), the background colour, a yes / no, or a multiple-choice option letter. They
  are exact: the grammar writes them only from the clip's spec, and only where they mean that
  fact.
- *fillers* are everything else. Each filler slot (opener, verb, adverb, connective, answer
  form) is drawn at random among equivalent phrasings, so a model trained on this text is
  uncertain about fillers and certain about anchors — the split LVSpec's loose verification
  relies on.

No anchor word is ever used as a filler (no "at first", "right away", "shows up"), so marking
anchors is a word lookup; `specvid.shapesworld.anchors` does it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from specvid.shapesworld.questions import QA, qa_pairs
from specvid.shapesworld.vocabulary import (
    COUNT_WORDS,
    Picker,
    capitalise,
    motion_phrase,
    with_article,
)
from specvid.shapesworld.world import (
    TEXT_STREAM,
    ClipSpec,
    clip_spec_for_seed,
    stream_rng,
)

CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the video in detail.",
    "Describe what happens in this video.",
    "Give a detailed description of the clip.",
    "What happens in the video? Describe it in detail.",
    "Write a detailed caption for this video.",
)
# Scene sentence: {shapes} is e.g. "two shapes", {be} agrees with it, {where} places the
# background (or is empty when the background gets its own sentence).
SCENE_TEMPLATES: tuple[str, ...] = (
    "In this video, there {be} {shapes}{where}.",
    "In the clip, there {be} {shapes}{where}.",
    "Here, we see {shapes}{where}.",
    "The clip shows {shapes}{where}.",
    "This video shows {shapes}{where}.",
    "We can see {shapes}{where}.",
)
SHAPE_ADJECTIVES: tuple[str, ...] = ("", "coloured ", "colored ", "simple ")
WHERE_PHRASES: tuple[str, ...] = (
    " on a {bg} background",
    " against a {bg} background",
    " in front of a {bg} background",
)
BACKGROUND_SENTENCES: tuple[str, ...] = (
    "The background is {bg}.",
    "The background is plain {bg}.",
    "Everything happens on a {bg} background.",
)
# Shape sentences never begin with the article "A", which would read like an option letter.
SHAPE_TEMPLATES: tuple[str, ...] = (
    "The {name} {verb}.",
    "There is {a_name} that {verb}.",
    "We see {a_name} that {verb}.",
)
LATER_SHAPE_TEMPLATES: tuple[str, ...] = SHAPE_TEMPLATES + (
    "Also, the {name} {verb}.",
    "In addition, {a_name} {verb}.",
    "Another shape, {a_name}, {verb}.",
)
FIRST_CLAUSES: tuple[str, ...] = (
    "the {name} is the first shape to be seen",
    "the {name} comes first",
    "the first shape to show is the {name}",
)
LAST_CLAUSES: tuple[str, ...] = (
    "the {name} is the last shape to be seen",
    "the {name} comes last",
    "the last shape to show is the {name}",
)


@dataclass(frozen=True)
class ClipText:
    """All reference text of one clip."""

    caption_prompt: str
    caption: str
    qa: tuple[QA, ...]


def _shapes_phrase(count: int, pick: Picker) -> str:
    noun = "shape" if count == 1 else "shapes"
    return f"{COUNT_WORDS[count]} {pick.one(SHAPE_ADJECTIVES)}{noun}"


def _caption_text(spec: ClipSpec, pick: Picker) -> str:
    """A detailed caption stating every fact of `spec.facts()` exactly once in substance."""
    background_inline = bool(pick.rng.random() < 0.6)
    where = pick.one(WHERE_PHRASES).format(bg=spec.background) if background_inline else ""
    scene = pick.one(SCENE_TEMPLATES).format(
        be="is" if spec.count == 1 else "are", shapes=_shapes_phrase(spec.count, pick), where=where
    )
    sentences = [scene]
    for index, track in enumerate(spec.tracks):
        templates = SHAPE_TEMPLATES if index == 0 else LATER_SHAPE_TEMPLATES
        sentence = pick.one(templates).format(
            name=track.name, a_name=with_article(track.name), verb=motion_phrase(track.motion, pick)
        )
        sentences.append(sentence)
    order = _order_sentence(spec, pick)
    if order:
        sentences.append(order)
    if not background_inline:
        sentence = pick.one(BACKGROUND_SENTENCES).format(bg=spec.background)
        # The separate background sentence goes right after the scene or at the very end.
        if pick.rng.random() < 0.5:
            sentences.insert(1, sentence)
        else:
            sentences.append(sentence)
    return " ".join(sentences)


def _order_sentence(spec: ClipSpec, pick: Picker) -> str:
    first, last = spec.first(), spec.last()
    clauses = []
    if first is not None:
        clauses.append(pick.one(FIRST_CLAUSES).format(name=first.name))
    if last is not None:
        clauses.append(pick.one(LAST_CLAUSES).format(name=last.name))
    if not clauses:
        return ""
    if len(clauses) == 2 and pick.rng.random() < 0.5:
        return f"{capitalise(clauses[0])}, and {clauses[1]}."
    return " ".join(f"{capitalise(clause)}." for clause in clauses)


def describe_clip(spec: ClipSpec, rng: np.random.Generator) -> ClipText:
    """All reference text for `spec`; the fillers are drawn from `rng`."""
    pick = Picker(rng)
    return ClipText(
        caption_prompt=pick.one(CAPTION_PROMPTS),
        caption=_caption_text(spec, pick),
        qa=qa_pairs(spec, pick),
    )


def clip_text(seed: int) -> ClipText:
    """The reference text of a seed's clip without rendering it (same text as `make_clip`)."""
    return describe_clip(clip_spec_for_seed(seed), stream_rng(seed, TEXT_STREAM))


def build_corpus(seeds: Iterable[int]) -> list[str]:
    """Every prompt and reference answer of the given clips, for tokenizer training."""
    corpus = list(CAPTION_PROMPTS)
    for seed in seeds:
        text = clip_text(seed)
        corpus += [text.caption_prompt, text.caption]
        for qa in text.qa:
            corpus += [qa.question, qa.answer]
    return corpus
