"""The option-letter drill: text-only multiple-choice turns that train a fresh zoo architecture."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch

from lab.zoo.diagnose import letter_token_ids
from lab.zoo.letter_drill import (
    drill_batch,
    drill_prompt,
    drill_question,
    letter_drill,
    letter_logits,
)
from specvid.models.loader import load_model
from specvid.shapesworld.language import clip_text
from specvid.shapesworld.vocabulary import OPTION_LETTERS
from specvid.shapesworld.world import split_seeds


def test_a_drill_is_the_clips_own_choice_question_up_to_its_letter():
    seed = split_seeds("eval", 1)[0]
    qa = drill_question(seed)
    assert qa in clip_text(seed).qa and qa.options
    prompt = drill_prompt(qa)
    listing = "\n".join(f"{letter}. {text}" for letter, text in zip(OPTION_LETTERS, qa.options))
    assert listing in prompt
    # The reasoning names the right option's text; what follows it is the letter alone.
    assert prompt.endswith(f"<|im_start|>assistant\n{qa.reasoning}\n")
    assert qa.options[OPTION_LETTERS.index(qa.letter)] in qa.reasoning


def test_drill_batches_point_at_each_prompts_last_token_and_right_letter():
    tokenizer = load_model("qwen-tiny-draft").tokenizer
    questions = [drill_question(s) for s in split_seeds("eval", 4)]
    batch, last, letters = drill_batch(tokenizer, questions)
    for i, qa in enumerate(questions):
        ids = batch["input_ids"][i, : last[i] + 1].tolist()
        assert tokenizer.decode(ids) == drill_prompt(qa)
        assert batch["attention_mask"][i].sum() == last[i] + 1
        assert OPTION_LETTERS[letters[i]] == qa.letter
    bare = letter_token_ids(tokenizer)["bare"]
    assert [tokenizer.decode([t]) for t in bare] == list(OPTION_LETTERS)


def test_letter_logits_of_a_padded_batch_match_each_prompt_alone():
    adapter = load_model("qwen-tiny-draft")
    model, tokenizer = adapter.model.eval(), adapter.tokenizer
    questions = [drill_question(s) for s in split_seeds("eval", 6)]
    batch, last, _ = drill_batch(tokenizer, questions)
    assert len(set(last.tolist())) > 1  # prompts of several lengths, so some rows are padded
    letter_ids = letter_token_ids(tokenizer)["bare"]
    with torch.no_grad():
        together = letter_logits(model, batch, last, letter_ids)
        for i, qa in enumerate(questions):
            alone_batch, alone_last, _ = drill_batch(tokenizer, [qa])
            torch.testing.assert_close(together[i], letter_logits(model, alone_batch, alone_last, letter_ids)[0])


def test_a_drill_run_yields_a_record_per_evaluation():
    drill = letter_drill("qwen-tiny-draft", steps=6, batch_size=4, eval_every=3, eval_questions=16)
    records = list(drill)
    assert [r["step"] for r in records] == [3, 6]
    for record in records:
        assert math.isfinite(record["train_loss"])
        assert 0.0 <= record["held_out_accuracy"] <= 1.0
        assert sum(record["picked"].values()) == 16
        assert set(record["picked"]) <= set(OPTION_LETTERS)


def test_zoo_letter_drill_cli_writes_its_records(tmp_path):
    out = tmp_path / "drill.json"
    args = ["letter-drill", "--model", "qwen-tiny-draft", "--steps", "4", "--batch-size", "4"]
    args += ["--eval-every", "2", "--eval-questions", "8", "--json", str(out)]
    result = subprocess.run([sys.executable, "-m", "lab.zoo", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("held-out") == 2
    written = json.loads(out.read_text())
    assert written["model"] == "qwen-tiny-draft" and [r["step"] for r in written["records"]] == [2, 4]


def test_zoo_letter_drill_refuses_a_model_outside_the_zoo():
    args = ["letter-drill", "--model", "/some/checkpoint", "--steps", "1"]
    result = subprocess.run([sys.executable, "-m", "lab.zoo", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "zoo model name" in result.stderr and "Traceback" not in result.stderr
