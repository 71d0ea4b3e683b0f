"""Can a zoo architecture learn to name an option's letter, with nothing else to learn?

Every zoo target fails multiple choice the same way: teacher-forced on a reasoning that names
the right option's text, it still picks one default letter (`diagnose.choice_letters`). What is
left after the reasoning is a copy: find that text in the prompt's option list and name the
letter two tokens before it. `letter_drill` trains a fresh model of a zoo architecture on that
copy alone: text-only turns made of the grammar's own multiple-choice questions and
reasonings, the loss on the letter only, and held-out accuracy as training goes.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from lab.zoo.diagnose import letter_token_ids
from lab.zoo.loop import mixed_precision
from lab.zoo.recipes import MODELS
from specvid.models.registry import zoo_checkpoint
from specvid.models.tiny import build_tiny_model
from specvid.shapesworld.language import clip_text
from specvid.shapesworld.questions import QA
from specvid.shapesworld.vocabulary import OPTION_LETTERS
from specvid.shapesworld.world import SPLIT_RANGES, split_seeds


def drill_question(seed: int) -> QA:
    """The multiple-choice question of a seed's clip, as `make_clip` draws it (no render)."""
    return next(qa for qa in clip_text(seed).qa if qa.options)


def drill_prompt(qa: QA) -> str:
    """A text-only ChatML turn up to the letter: the question with its options, the reasoning."""
    return f"<|im_start|>user\n{qa.question}<|im_end|>\n<|im_start|>assistant\n{qa.reasoning}\n"


def drill_batch(tokenizer, questions: list[QA]) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Right-padded prompts, each one's last position, and the index of its right letter."""
    rows = [tokenizer(drill_prompt(qa))["input_ids"] for qa in questions]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    last = torch.tensor([len(row) - 1 for row in rows])
    letters = torch.tensor([OPTION_LETTERS.index(qa.letter) for qa in questions])
    return {"input_ids": ids, "attention_mask": mask}, last, letters


def letter_logits(model, batch: dict, last: torch.Tensor, letter_ids: list[int]) -> torch.Tensor:  # [B, 4]
    """Each prompt's next-token logits over the option letters, as they open a line."""
    logits = model(**batch, use_cache=False).logits  # [B, L, vocab]
    return logits[torch.arange(len(last)), last][:, letter_ids].float()


def letter_drill(
    name: str,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    eval_every: int = 100,
    eval_questions: int = 256,
    seed: int = 0,
) -> Iterator[dict]:
    """Train a fresh model of zoo model `name`'s architecture on letter drills alone.

    Drills come from fresh train-split clips every step; the held-out ones from the first
    `eval_questions` eval clips. The loss is the cross-entropy over the four letters, so chance
    is ln 4 = 1.386 and 0.25 accuracy. Yields one record per evaluation: the step, the mean
    training loss since the last one, held-out accuracy and how often each letter was picked.
    """
    zoo_model = MODELS[name]
    shipped_tokenizer = AutoTokenizer.from_pretrained(zoo_checkpoint(name))  # the pair's own, no weights
    model, tokenizer = build_tiny_model(zoo_model.family, zoo_model.size, zoo_model.seed + seed, shipped_tokenizer)
    letter_ids = letter_token_ids(tokenizer)["bare"]
    held_out = drill_batch(tokenizer, [drill_question(s) for s in split_seeds("eval", eval_questions)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    train = SPLIT_RANGES["train"]
    losses = []
    for step in range(1, steps + 1):
        seeds = rng.integers(train.start, train.stop, batch_size)
        batch, last, letters = drill_batch(tokenizer, [drill_question(int(s)) for s in seeds])
        with mixed_precision(True):
            loss = F.cross_entropy(letter_logits(model, batch, last, letter_ids), letters)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            yield {"step": step, "train_loss": float(np.mean(losses)), **_evaluate(model, held_out, letter_ids)}
            losses = []


def _evaluate(model, held_out: tuple[dict, torch.Tensor, torch.Tensor], letter_ids: list[int]) -> dict:
    batch, last, letters = held_out
    model.eval()
    with torch.no_grad(), mixed_precision(True):
        picks = letter_logits(model, batch, last, letter_ids).argmax(-1)
    model.train()
    picked = Counter(OPTION_LETTERS[int(p)] for p in picks)
    return {"held_out_accuracy": float((picks == letters).float().mean()), "picked": dict(sorted(picked.items()))}


def record_line(record: dict) -> str:
    return (
        f"step {record['step']:>5}  loss {record['train_loss']:.3f}  "
        f"held-out {record['held_out_accuracy']:.3f}  picked {record['picked']}"
    )
