"""How each of the zoo's shipped models is made: architecture, seed, steps and recipe settings.

Each pair is a target and a much cheaper draft of the same family, sharing one tokenizer but
each with its own vision tower, as real pairs do (Qwen2.5-VL-32B/7B, LLaVA-OV-72B/7B). The
product knows the pairs by name only (`specvid.models.registry`); training exports into the
checkpoint directories it loads from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from specvid.models.registry import ZOO_ROOT
from specvid.models.sizes import TinySize


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str
    size: TinySize
    seed: int
    train_steps: int
    settings: tuple[str, ...] = ()  # `train.with_overrides` assignments this model's recipe adds


@dataclass(frozen=True)
class ZooPair:
    name: str
    target: ZooModel
    draft: ZooModel


# Sizes chosen so a target decode step costs >= 5x a draft step on a 2-core CPU (c <= 0.2),
# see docs/zoo.md for the measured figures.
_TRAIN = TinySize(init_std=0.02, rope_theta=100.0)  # see lab/zoo/HISTORY.md for both choices
_TARGET = replace(_TRAIN, text_hidden=384, text_layers=4, text_kv_heads=2, vision_hidden=128, vision_layers=2)
_DRAFT = replace(_TRAIN, text_hidden=64, text_layers=1, text_kv_heads=1, vision_hidden=64, vision_layers=1)
# The shipped drafts (zoo v2) are distilled from their targets (`lab/zoo/distill.py`): the
# target's tower (128 wide, 2 layers), a two-layer 128-wide language model. `_DRAFT` and the
# `train --models draft` recipe are the first zoo's drafts, kept for comparison.
DISTILLED_DRAFT = replace(_TRAIN, text_hidden=128, text_layers=2, text_kv_heads=2, vision_hidden=128, vision_layers=2)
# Language steps and TrainConfig settings of each shipped draft (lab/zoo/HISTORY.md, "Distilled
# drafts"): llava-tiny's draft learns from sibling turns, each answer computed as served.
DISTILLED: dict[str, tuple[int, tuple[str, ...]]] = {
    "qwen-tiny": (1500, ()),
    "llava-tiny": (2400, ("sibling_turns=true",)),
}

# Both targets are trained with sibling turns and the word-aligned probe (lab/zoo/HISTORY.md: QA 0.71 ->
# 0.79 for qwen-tiny); qwen-tiny's adds reasoned answers and contrast turns (fact F1 0.87 ->
# 0.91, yes/no 0.54 -> 0.70, language stage ~45% longer), llava-tiny's a third of its steps
# on 16-frame clips (its 1-D positions put answers further out there; 16-frame F1 0.52 ->
# 0.71). The drafts keep the plain recipe.
_SIBLINGS = ("sibling_turns=true", "word_aligned_probe=true")
_DECIDED = ("reasoned_answers=true", "contrast_turns=true")
_RECIPES = {"qwen-tiny": _SIBLINGS + _DECIDED, "llava-tiny": _SIBLINGS + ("frame_cycle=8,8,16",)}

PAIRS: dict[str, ZooPair] = {
    pair: ZooPair(
        pair,
        ZooModel(pair, family, _TARGET, seed=10, train_steps=2400, settings=_RECIPES.get(pair, ())),
        ZooModel(f"{pair}-draft", family, _DRAFT, seed=20, train_steps=1500),
    )
    for pair, family in (("qwen-tiny", "qwen2_5_vl"), ("llava-tiny", "llava_onevision"))
}

MODELS: dict[str, ZooModel] = {m.name: m for p in PAIRS.values() for m in (p.target, p.draft)}


def checkpoint_dir(name: str) -> Path:
    """Where a zoo model's checkpoint ships (training exports there by default)."""
    return ZOO_ROOT / name
