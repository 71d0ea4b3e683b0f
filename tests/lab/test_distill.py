"""Distilled drafts: the tower copy and the distillation loss."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lab.zoo.distill import copy_tower, distillation_loss
from lab.zoo.supervision import IGNORE
from specvid.models.sizes import TinySize
from specvid.models.tiny import build_tiny_model


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_the_draft_gets_the_target_tower_frozen_and_keeps_its_own_language_model(family):
    target, tokenizer = build_tiny_model(family, TinySize(text_hidden=128, vision_hidden=64), seed=1)
    draft, _ = build_tiny_model(family, replace(TinySize(text_hidden=64, text_layers=1, text_kv_heads=1),
                                                vision_hidden=64), seed=2, tokenizer=tokenizer)
    assert copy_tower(target, draft, family) > 0
    source, copied = target.state_dict(), dict(draft.named_parameters())
    tower = [name for name in copied if not copied[name].requires_grad]
    assert tower and all(torch.equal(copied[name], source[name]) for name in tower)
    language = draft.model.language_model.layers[0].mlp.up_proj.weight
    assert language.requires_grad and language.shape[1] == 64


def test_the_distillation_loss_is_zero_at_the_teacher_and_counts_labelled_positions_only():
    teacher = torch.randn(2, 5, 11)
    labels = torch.full((2, 5), IGNORE)
    labels[0, 3] = 4  # position 2 predicts it
    assert distillation_loss(teacher.clone(), teacher, labels).item() == pytest.approx(0.0, abs=1e-6)
    student = teacher.clone()
    student[1] += torch.randn(5, 11)  # unlabelled row: no effect
    assert distillation_loss(student, teacher, labels).item() == pytest.approx(0.0, abs=1e-6)
    student[0, 2] += torch.randn(11)
    assert distillation_loss(student, teacher, labels).item() > 0
