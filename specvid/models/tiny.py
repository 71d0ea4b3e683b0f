"""Small configurations of both seed families, built from the real transformers classes.

Used for the seeded random models of the test suite (`random-qwen`, `random-llava` and their
`-draft` partners) and as the architecture of the zoo's trained pairs. Sizes follow what is
known to run on a small CPU: heads of 32 dims, M-RoPE sections summing to half a head.
"""

from __future__ import annotations

import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

from specvid.models.sizes import HEAD_DIM, TinySize
from specvid.models.tokenizer import build_tokenizer


def _text_dims(size: TinySize, tokenizer: PreTrainedTokenizerBase) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=size.init_std,
        hidden_size=size.text_hidden,
        intermediate_size=size.text_hidden * 2,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_hidden // HEAD_DIM,
        num_key_value_heads=size.text_kv_heads,
        max_position_embeddings=size.max_positions,
    )


def qwen_config(tokenizer: PreTrainedTokenizerBase, size: TinySize) -> Qwen2_5_VLConfig:
    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        **_text_dims(size, tokenizer),
        # 3-D M-RoPE: temporal / height / width sections of a 32-dim head (sum = 16).
        rope_parameters={"rope_type": "default", "rope_theta": size.rope_theta, "mrope_section": [4, 6, 6]},
    )
    vision = dict(
        depth=size.vision_layers,
        hidden_size=size.vision_hidden,
        intermediate_size=size.vision_hidden * 2,
        num_heads=max(1, size.vision_hidden // HEAD_DIM),
        out_hidden_size=size.text_hidden,
        fullatt_block_indexes=[size.vision_layers - 1],
        window_size=112,
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        initializer_range=size.init_std,
    )


def llava_config(tokenizer: PreTrainedTokenizerBase, size: TinySize, image_size: int = 112) -> LlavaOnevisionConfig:
    ids = tokenizer.convert_tokens_to_ids
    text = dict(model_type="qwen2", **_text_dims(size, tokenizer), rope_theta=size.rope_theta)
    vision = dict(
        model_type="siglip_vision_model",
        image_size=image_size,
        patch_size=14,
        hidden_size=size.vision_hidden,
        intermediate_size=size.vision_hidden * 2,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=max(1, size.vision_hidden // HEAD_DIM),
    )
    return LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[image_size, image_size]],
        initializer_range=size.init_std,
    )


FAMILY_CONFIGS = {"qwen2_5_vl": qwen_config, "llava_onevision": llava_config}
FAMILY_MODELS = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "llava_onevision": LlavaOnevisionForConditionalGeneration,
}


def build_tiny_model(
    family: str,
    size: TinySize,
    seed: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    attn_implementation: str = "sdpa",
):
    """A freshly initialised tiny model of `family` and its tokenizer, deterministic in `seed`."""
    tokenizer = tokenizer or build_tokenizer(family)
    config = FAMILY_CONFIGS[family](tokenizer, size)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FAMILY_MODELS[family](config)
    model.generation_config.eos_token_id = sorted(
        {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")}
    )
    return model.eval(), tokenizer
