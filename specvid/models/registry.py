"""Named models and pairs that need no download: what `--target qwen-tiny` means.

Two kinds of name exist besides a checkpoint directory or a Hugging Face id:

- *random* models, built in memory from a seed (the test suite's pairs: they know nothing);
- *zoo* models, trained on ShapesWorld by the recipes in `lab/zoo` and shipped as ordinary
  transformers checkpoints under `specvid/models/zoo/<name>/`.

A pair is a target and the draft made for it; `pair_names("qwen-tiny")` gives both names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from specvid.errors import InvalidRequestError, ModelLoadError
from specvid.models.sizes import DRAFT_SIZE, TARGET_SIZE, TinySize

ZOO_ROOT = Path(__file__).parent / "zoo"


@dataclass(frozen=True)
class RandomModel:
    family: str
    size: TinySize
    seed: int


# A target and a differently seeded, smaller draft per family.
RANDOM_MODELS: dict[str, RandomModel] = {
    "random-qwen": RandomModel("qwen2_5_vl", TARGET_SIZE, 0),
    "random-qwen-draft": RandomModel("qwen2_5_vl", DRAFT_SIZE, 1),
    "random-llava": RandomModel("llava_onevision", TARGET_SIZE, 0),
    "random-llava-draft": RandomModel("llava_onevision", DRAFT_SIZE, 1),
}

# pair -> (target, draft); the zoo's pairs share a tokenizer within each pair.
ZOO_PAIRS: dict[str, tuple[str, str]] = {
    "qwen-tiny": ("qwen-tiny", "qwen-tiny-draft"),
    "llava-tiny": ("llava-tiny", "llava-tiny-draft"),
}
PAIRS: dict[str, tuple[str, str]] = {
    **ZOO_PAIRS,
    "random-qwen": ("random-qwen", "random-qwen-draft"),
    "random-llava": ("random-llava", "random-llava-draft"),
}
ZOO_MODELS: tuple[str, ...] = tuple(name for pair in ZOO_PAIRS.values() for name in pair)

# What `make run`, `specvid generate` and `specvid bench` use when no model is named.
DEFAULT_PAIR = "qwen-tiny"


def builtin_names() -> list[str]:
    return sorted(RANDOM_MODELS) + sorted(ZOO_MODELS)


def pair_names(pair: str) -> tuple[str, str]:
    """(target, draft) model names of a named pair; an unknown pair is a clear error."""
    if pair not in PAIRS:
        raise InvalidRequestError(f"unknown pair {pair!r}; known: {', '.join(sorted(PAIRS))}")
    return PAIRS[pair]


def zoo_checkpoint(name: str) -> Optional[Path]:
    """The checkpoint directory of a zoo model name, or None if `name` is not a zoo model.

    A zoo name whose checkpoint is missing is an error, not a fall-through to the model hub.
    """
    if name not in ZOO_MODELS:
        return None
    path = ZOO_ROOT / name
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"zoo model {name!r} has no checkpoint at {path}; train it with `python -m lab.zoo train`")
    return path
