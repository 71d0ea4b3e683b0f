"""Why a zoo target answers wrong: in its vision tower, or in its language model.

The model card's per-kind accuracies (docs/zoo.md) say *which* questions fail; these measurements say where:

- `feature_probe`: a linear read-out fitted on the target's frozen video features. If it
  recovers each token's colour and kind, the facts are in the tokens the language model reads,
  and a wrong answer is the language model's.
- `colour_lookups`: asked the colour of a shape named by its kind, does the target give that
  shape's colour, the colour of another shape of the clip (a binding error: it found a shape,
  not the one asked), or a colour the clip does not hold (a perception error)?
- `choice_letters`: teacher-forced on a multiple-choice reference answer up to its option
  letter, is the right letter the most likely? With the answer's reasoning before the letter,
  what is left is copying the letter that precedes the option text in the prompt.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from lab.zoo.rows import IGNORE, collate, encode_conversation
from lab.zoo.supervision import token_labels
from specvid.bench.card import ask, clip_video
from specvid.engine import LocalEngine
from specvid.models.adapter import VideoLLM
from specvid.shapesworld.clips import make_clip
from specvid.shapesworld.questions import QA, reasoned_answer
from specvid.shapesworld.scorer import answer_values
from specvid.shapesworld.vocabulary import OPTION_LETTERS
from specvid.shapesworld.world import ClipSpec, frame_times

LABEL_COLUMNS = {"colour": 0, "kind": 1, "motion": 2}  # columns of `token_labels`


def feature_probe(adapter: VideoLLM, train_seeds: Iterable[int], eval_seeds: Iterable[int]) -> dict:
    """Held-out accuracy of linear read-outs of colour, kind and motion, on tokens that hold a shape."""
    train_x, train_y = _video_features(adapter, train_seeds)
    eval_x, eval_y = _video_features(adapter, eval_seeds)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6  # standardise with the train split only
    train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
    accuracy = {}
    for name, column in LABEL_COLUMNS.items():
        fit, held_out = train_y[:, column] > 0, eval_y[:, column] > 0  # 0 = no shape under the token
        weight, bias = _fit_linear(train_x[fit], train_y[fit, column], int(train_y[:, column].max()) + 1)
        predicted = (eval_x[held_out] @ weight + bias).argmax(-1)
        accuracy[name] = float((predicted == eval_y[held_out, column]).float().mean())
    return {"accuracy": accuracy, "shape_tokens": int((eval_y[:, 0] > 0).sum())}


def _video_features(adapter: VideoLLM, seeds: Iterable[int]) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = [], []
    for seed in seeds:
        clip = make_clip(seed)
        frames = clip_video(clip).frames
        prompt = adapter.build_prompt(frames, "")
        with torch.no_grad():
            grid_features = adapter.video_features(prompt)  # [t*h*w (+ extras), hidden]
        tokens = int(np.prod(prompt.video_grid))
        features.append(grid_features[:tokens].float())
        labels.append(token_labels(clip.spec, prompt.video_grid, frame_times(len(frames))))
    return torch.cat(features), torch.cat(labels)  # [n, hidden], [n, 4]


def _fit_linear(x: torch.Tensor, y: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with a small L2 penalty, by L-BFGS."""
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


COLOUR_LOOKUP = "What color is the {kind}?"  # a question form of the grammar (`COLOUR_QUESTIONS`)


def lookup_outcome(answer: str, spec: ClipSpec, kind: str) -> str:
    """What an answer to "what colour is the <kind>?" gave: see `colour_lookups`."""
    said = answer_values(answer, "color")
    if len(said) != 1:
        return "no single colour"
    (colour,) = said
    asked = next(t for t in spec.tracks if t.kind == kind)
    if colour == asked.color:
        return "right"
    return "another shape's" if colour in {t.color for t in spec.tracks} else "not in the clip"


def colour_lookups(engine: LocalEngine, seeds: Iterable[int], max_tokens: int = 24) -> dict:
    """Outcomes of asking every shape's colour by its kind, by the number of shapes in the clip."""
    outcomes: dict[str, Counter] = {}
    for seed in seeds:
        clip = make_clip(seed)
        video = clip_video(clip)
        for track in clip.spec.tracks:
            answer = ask(engine, video, COLOUR_LOOKUP.format(kind=track.kind), "ar", 1, max_tokens).text
            outcomes.setdefault(str(clip.spec.count), Counter())[lookup_outcome(answer, clip.spec, track.kind)] += 1
    return {shapes: dict(counts) for shapes, counts in sorted(outcomes.items())}


def choice_letters(adapter: VideoLLM, seeds: Iterable[int], reasoned: bool = True) -> dict:
    """Teacher-forced option-letter accuracy on each clip's multiple-choice question."""
    letter_ids = letter_token_ids(adapter.tokenizer)
    right, picked = 0, Counter()
    for seed in seeds:
        clip = make_clip(seed)
        frames = clip_video(clip).frames
        for qa in (qa for qa in clip.qa if qa.options):
            row = encode_conversation(adapter, frames, [(qa.question, reference_answer(qa, reasoned))])
            position, spelling = letter_position(row, letter_ids)
            batch = collate([row], adapter.tokenizer.pad_token_id, adapter.video_token_id, adapter.family)
            with torch.no_grad():
                logits = adapter.model(**batch, use_cache=False).logits[0, position - 1]  # predicts the letter
            choice = OPTION_LETTERS[int(logits[letter_ids[spelling]].argmax())]
            right += choice == qa.letter
            picked[choice] += 1
    total = sum(picked.values())
    return {"accuracy": right / total if total else None, "questions": total, "picked": dict(sorted(picked.items()))}


def reference_answer(qa: QA, reasoned: bool) -> str:
    return reasoned_answer(qa) if reasoned else qa.answer


def letter_token_ids(tokenizer) -> dict[str, list[int]]:
    """Token ids of the option letters, as they open a line ("B") and after a space (" B")."""
    spellings = {"bare": "{}", "spaced": " {}"}
    ids = {}
    for name, form in spellings.items():
        tokens = [tokenizer(form.format(letter), add_special_tokens=False)["input_ids"] for letter in OPTION_LETTERS]
        if any(len(t) != 1 for t in tokens):
            raise ValueError(f"option letters must be single tokens ({name}: {tokens})")
        ids[name] = [t[0] for t in tokens]
    return ids


def letter_position(row: dict, letter_ids: dict[str, list[int]]) -> tuple[int, str]:
    """The index of the option letter in a row's answer, and which spelling it has."""
    for index in range(len(row["input_ids"]) - 1, -1, -1):
        token = row["input_ids"][index]
        if row["labels"][index] == IGNORE:
            continue
        for spelling, ids in letter_ids.items():
            if token in ids:
                return index, spelling
    raise ValueError("the answer holds no option letter")
