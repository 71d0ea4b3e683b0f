"""A model spec (built-in name, local checkpoint, or Hugging Face id) -> a `VideoLLM` adapter.

Real checkpoints and the project's own models go through the same path: a directory (or hub
id) holding a transformers config, weights and tokenizer. Only the seeded random models of the
test suite are built in memory.
"""

from __future__ import annotations

import os
from typing import Union

import torch
from transformers import AutoConfig, AutoTokenizer

from specvid.config import ModelSpec
from specvid.errors import ModelLoadError
from specvid.models.adapter import VideoLLM
from specvid.models.decoder import column_major_linears
from specvid.models.llava_onevision import LlavaOnevisionAdapter
from specvid.models.qwen2_5_vl import Qwen2_5_VLAdapter
from specvid.models.registry import RANDOM_MODELS, builtin_names, zoo_checkpoint
from specvid.models.tiny import FAMILY_MODELS, build_tiny_model

ADAPTERS: dict[str, type[VideoLLM]] = {
    "qwen2_5_vl": Qwen2_5_VLAdapter,
    "llava_onevision": LlavaOnevisionAdapter,
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(spec: Union[ModelSpec, str]) -> VideoLLM:
    """Load the model a spec names, wrap it in its family's adapter, and ready it for decoding:
    on CPU the language model's weights are stored column-major (`column_major_linears`), and
    the decode forward is compiled if the spec asks."""
    spec = ModelSpec(name=spec) if isinstance(spec, str) else spec
    adapter = _load(spec)
    if adapter.device.type == "cpu":
        column_major_linears(adapter.model.model.language_model)
        column_major_linears(adapter.model.lm_head)
    if spec.compile:
        adapter.compile(spec.draft_loops, spec.sampled_draft_loops)
    return adapter


def _load(spec: ModelSpec) -> VideoLLM:
    if spec.name in RANDOM_MODELS:
        random = RANDOM_MODELS[spec.name]
        model, tokenizer = build_tiny_model(
            random.family, random.size, random.seed, attn_implementation=spec.attn_implementation
        )
        model = model.to(device=spec.device, dtype=DTYPES[spec.dtype])
        return ADAPTERS[random.family](model, tokenizer, name=spec.name)
    return _load_pretrained(spec, _resolve_location(spec.name))


def _resolve_location(name: str) -> str:
    """Zoo names map to the checkpoints shipped in the package; anything else is a path or id."""
    path = zoo_checkpoint(name)
    return str(path) if path is not None else name


def _load_pretrained(spec: ModelSpec, location: str) -> VideoLLM:
    is_local = os.path.isdir(location)
    try:
        config = AutoConfig.from_pretrained(location)
    except Exception as e:  # transformers raises OSError/ValueError/HTTP errors alike
        where = "local directory" if is_local else "Hugging Face id (offline or unknown?)"
        raise ModelLoadError(
            f"cannot load model {spec.name!r} as a {where}: {e}. Built-in names: {builtin_names()}"
        ) from None
    family = config.model_type
    if family not in ADAPTERS:
        raise ModelLoadError(f"model {spec.name!r} is a {family!r}; supported: {sorted(ADAPTERS)}")
    try:
        model = FAMILY_MODELS[family].from_pretrained(
            location,
            dtype=DTYPES[spec.dtype],
            attn_implementation=spec.attn_implementation,
        ).to(spec.device)
        tokenizer = AutoTokenizer.from_pretrained(location)
    except Exception as e:
        raise ModelLoadError(f"cannot load weights or tokenizer of {spec.name!r}: {e}") from None
    return ADAPTERS[family](model, tokenizer, name=spec.name)
