"""The real-size models of `specvid bench-cost`: published architectures, built with random weights.

The registry holds the config.json numbers of Qwen2.5-VL-7B/32B/72B and LLaVA-OneVision-7B/72B.
`build_model` builds one at real width (and, with `layers`, truncated depth): the language model
on the target device, filled by one random-normal draw (no per-module initialisation, which takes
minutes at 32B); the vision tower and the token-embedding table stay on the meta device, since
every timed forward is fed `inputs_embeds`; both still count in the parameter totals.
`check_fits` refuses a model that would not fit the device before anything is allocated.
"""


from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Literal, Optional, Sequence

import torch

from specvid.errors import InvalidRequestError, TooLargeError

Family = Literal["qwen2_5_vl", "llava_onevision"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# ---- the registry: published architecture numbers ----------------------------------------------


@dataclass(frozen=True)
class TextDims:
    """The language model's shape, as in the checkpoint's config.json (text part)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    max_positions: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer: q/k/v with bias, o, SwiGLU MLP, two RMSNorms."""
        kv = self.kv_heads * self.head_dim
        attention = (self.hidden * self.hidden + self.hidden) + 2 * (self.hidden * kv + kv) + self.hidden**2
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def head_params(self) -> int:
        """Final norm and the (untied) LM head: the depth-independent weights a forward reads."""
        return self.hidden + self.vocab * self.hidden

    def kv_bytes_per_token(self, layers: int, itemsize: int) -> int:
        """Keys and values of every layer for one context token."""
        return 2 * layers * self.kv_heads * self.head_dim * itemsize


@dataclass(frozen=True)
class RealModel:
    """One published Video-LLM: where its numbers come from and how it lays out video tokens."""

    key: str
    title: str
    hf_id: str  # the checkpoint whose config.json the numbers are taken from
    family: Family
    nominal_params: float  # published total, vision tower included
    text: TextDims
    vision: dict = field(repr=False)  # the family's vision-config kwargs, at real size
    frame_px: int  # square frame side fed to the vision tower

    def video_layout(self, frames: int) -> tuple[int, int]:
        """(grid tokens, extra tokens) of `frames` frames in the language context, as the adapters lay
        them out; only grid tokens are ever pruned.

        Qwen2.5-VL: pairs of frames (temporal patch 2) of 14-px patches, 2x2 merge, no extras.
        LLaVA-OneVision: one SigLIP image per frame, 2x2 bilinear pooling (rounded up), plus one
        newline token after the last frame.
        """
        side = self.frame_px // self.vision["patch_size"]
        if self.family == "qwen2_5_vl":
            return math.ceil(frames / 2) * (side // 2) ** 2, 0
        return frames * math.ceil(side / 2) ** 2, 1

    def video_tokens(self, frames: int) -> int:
        """All video placeholders of `frames` frames."""
        return sum(self.video_layout(frames))


def _qwen_vision(intermediate: int) -> dict:
    # Qwen2.5-VL vision tower: the same 32-block windowed ViT at every size (MLP width differs).
    return dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=intermediate,
        num_heads=16,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
    )


# SigLIP so400m/14 at 384 px, last layer dropped (the llava-hf configs keep 26 of its 27 layers).
_SIGLIP = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=26,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    vision_use_head=False,
)

# Qwen2.5-VL frames at 448 x 448 give 128 tokens per frame (256 per pair of frames); the family
# takes any multiple of 28 px. LLaVA-OneVision always sees 384 px: 196 tokens per frame.
QWEN_FRAME_PX = 448

REGISTRY: dict[str, RealModel] = {
    m.key: m
    for m in (
        RealModel(
            "qwen2.5-vl-7b", "Qwen2.5-VL-7B", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", 8.29e9,
            TextDims(3584, 18944, 28, 28, 4, 152064, 128000), _qwen_vision(3420), QWEN_FRAME_PX,
        ),
        RealModel(
            "qwen2.5-vl-32b", "Qwen2.5-VL-32B", "Qwen/Qwen2.5-VL-32B-Instruct", "qwen2_5_vl", 33.5e9,
            TextDims(5120, 27648, 64, 40, 8, 152064, 128000), _qwen_vision(3456), QWEN_FRAME_PX,
        ),
        RealModel(
            "qwen2.5-vl-72b", "Qwen2.5-VL-72B", "Qwen/Qwen2.5-VL-72B-Instruct", "qwen2_5_vl", 73.4e9,
            TextDims(8192, 29568, 80, 64, 8, 152064, 128000), _qwen_vision(3456), QWEN_FRAME_PX,
        ),
        RealModel(
            "llava-ov-7b", "LLaVA-OneVision-7B", "llava-hf/llava-onevision-qwen2-7b-ov-hf", "llava_onevision",
            8.03e9, TextDims(3584, 18944, 28, 28, 4, 152128, 32768), _SIGLIP, 384,
        ),
        RealModel(
            "llava-ov-72b", "LLaVA-OneVision-72B", "llava-hf/llava-onevision-qwen2-72b-ov-hf",
            "llava_onevision", 73.2e9, TextDims(8192, 29568, 80, 64, 8, 152128, 32768), _SIGLIP, 384,
        ),
    )
}

# --pair: the target / draft pairs of the papers this project follows.
PAIRS: dict[str, tuple[str, str]] = {
    "qwen": ("qwen2.5-vl-32b", "qwen2.5-vl-7b"),
    "llava": ("llava-ov-72b", "llava-ov-7b"),
}


def resolve_pair(pair: Optional[str], target: Optional[str], draft: Optional[str]) -> tuple[str, str]:
    """Registry keys of (target, draft): `--target/--draft` override the members of `--pair`."""
    if pair is not None and pair not in PAIRS:
        raise InvalidRequestError(f"unknown pair {pair!r}; known: {', '.join(sorted(PAIRS))}")
    default_target, default_draft = PAIRS[pair or "qwen"]
    chosen = (target or default_target, draft or default_draft)
    for name in chosen:
        if name not in REGISTRY:
            raise InvalidRequestError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    return chosen


# ---- building a model with random weights -------------------------------------------------------


def build_config(spec: RealModel, layers: int):
    """The family's transformers config at real width, with `layers` decoder layers."""
    from transformers import LlavaOnevisionConfig, Qwen2_5_VLConfig

    t = spec.text
    text = dict(
        hidden_size=t.hidden,
        intermediate_size=t.intermediate,
        num_hidden_layers=layers,
        num_attention_heads=t.heads,
        num_key_value_heads=t.kv_heads,
        vocab_size=t.vocab,
        max_position_embeddings=t.max_positions,
    )
    if spec.family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}
        config = Qwen2_5_VLConfig(
            text_config=text,
            vision_config={**spec.vision, "out_hidden_size": t.hidden},
            image_token_id=151655,
            video_token_id=151656,
            vision_start_token_id=151652,
            vision_end_token_id=151653,
            tie_word_embeddings=False,
        )
    else:
        config = LlavaOnevisionConfig(
            text_config={"model_type": "qwen2", **text, "rope_theta": 1e6},
            vision_config={"model_type": "siglip_vision_model", **spec.vision},
            image_token_index=151646,
            video_token_index=151647,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            tie_word_embeddings=False,
        )
    config._attn_implementation = "sdpa"
    return config


def build_skeleton(spec: RealModel, layers: int):
    """The whole model with every parameter on the meta device (no memory, no init time).

    Buffers (the rotary frequency tables) stay real, on the CPU: they are computed in the
    constructors and a meta copy could not be moved to a device later.
    """
    from accelerate import init_empty_weights

    from specvid.models.tiny import FAMILY_MODELS

    with init_empty_weights(include_buffers=False):
        model = FAMILY_MODELS[spec.family](build_config(spec, layers))
    return model.eval()


def parameter_counts(model) -> tuple[int, int]:
    """(parameters outside the decoder layers, parameters per decoder layer) of a built model."""
    layers = model.model.language_model.layers
    in_layers = sum(p.numel() for p in layers.parameters())
    total = sum(p.numel() for p in model.parameters())
    return total - in_layers, in_layers // max(1, len(layers))


def full_depth_parameters(model, full_layers: int) -> int:
    """The parameter count of `model` had it been built with `full_layers` decoder layers."""
    fixed, per_layer = parameter_counts(model)
    return fixed + full_layers * per_layer


def fill_random(
    modules: Sequence[torch.nn.Module], device: torch.device, dtype: torch.dtype, seed: int
) -> int:
    """Give every (meta) parameter of `modules` real storage on `device`, filled in one draw.

    Matrices get N(0, 0.02) like a fresh checkpoint; 1-D weights (norm scales) 1 and biases 0, so
    activations keep a sane scale through any depth. All parameters are views of one flat tensor:
    one allocation and one random kernel instead of thousands. Returns the element count.
    """
    slots = [
        (m, name, p)
        for module in modules
        for m in module.modules()
        for name, p in m._parameters.items()
        if p is not None
    ]
    total = sum(p.numel() for _, _, p in slots)
    generator = torch.Generator(device=device).manual_seed(seed)
    flat = torch.empty(total, dtype=dtype, device=device).normal_(0.0, 0.02, generator=generator)  # [total]
    offset = 0
    for module, name, p in slots:
        view = flat[offset : offset + p.numel()].view(p.shape)
        if p.ndim == 1:
            view.fill_(1.0 if name == "weight" else 0.0)
        module._parameters[name] = torch.nn.Parameter(view, requires_grad=False)
        offset += p.numel()
    return total


def build_model(spec: RealModel, layers: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A real-width model of `spec` with `layers` decoder layers: language model on `device`, random.

    The vision tower and token embeddings stay on meta (forwards take `inputs_embeds`).
    """
    model = build_skeleton(spec, layers)
    language = model.model.language_model
    fill_random([language.layers, language.norm, model.lm_head], device, dtype, seed)
    for module in language.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.device.type != "meta":
                module._buffers[name] = buffer.to(device)
    return model


@contextmanager
def decoder_layers_removed(model) -> Iterator[None]:
    """Run the model as if it had no decoder layers: what is left is the depth-independent part."""
    language = model.model.language_model
    layers = language.layers
    language.layers = torch.nn.ModuleList()
    try:
        yield
    finally:
        language.layers = layers


# ---- memory: fail early and clearly instead of an out-of-memory traceback ------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Device bytes one model needs while being timed."""

    weights: int  # decoder layers + final norm + LM head
    kv: int  # the largest KV cache it holds (full video context)
    activations: int  # the largest forward's transient tensors
    overhead: int = 2**30  # GPU library workspaces, allocator slack, one flat weight block

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.activations + self.overhead


def estimate_memory(spec: RealModel, layers: int, itemsize: int, context: int, block: int) -> MemoryEstimate:
    """Bytes for `layers` layers of `spec`, a `context`-token cache and a `block`-token forward.

    Activations: a block's hidden states, the MLP's three intermediate tensors and q/k/v/o, and
    the logits of up to 11 positions, with some slack; attention runs through SDPA, which never
    materialises the block x context score matrix.
    """
    t = spec.text
    weights = (layers * t.layer_params + t.head_params) * itemsize
    kv = context * t.kv_bytes_per_token(layers, itemsize)
    activations = block * (3 * t.intermediate + 8 * t.hidden) * itemsize + 2 * 11 * t.vocab * 4
    return MemoryEstimate(weights, kv, activations)


def largest_depth(spec: RealModel, itemsize: int, context: int, block: int, available: int) -> int:
    """The most decoder layers of `spec` that fit in `available` bytes (0 if not even one)."""
    zero = estimate_memory(spec, 0, itemsize, context, block).total
    per_layer = estimate_memory(spec, 1, itemsize, context, block).total - zero
    return max(0, (available - zero) // per_layer)


def check_fits(spec: RealModel, layers: int, dtype: torch.dtype, context: int, block: int,
               available: int, where: str) -> MemoryEstimate:
    """Raise a one-line `TooLargeError` naming the bytes and a `--layers` that fits, if it does not fit."""
    itemsize = dtype.itemsize
    need = estimate_memory(spec, layers, itemsize, context, block)
    if need.total <= available:
        return need
    fits = largest_depth(spec, itemsize, context, block, available)
    advice = (
        f"pass --layers {fits} or fewer (figures are then scaled to full depth)"
        if fits
        else "it does not fit even with one layer: use fewer --frames or a larger device"
    )
    raise TooLargeError(
        f"{spec.title} with {layers} layers needs about {_gib(need.total)} GiB in {_dtype_name(dtype)} "
        f"(weights {_gib(need.weights)} + KV {_gib(need.kv)} + activations {_gib(need.activations)} "
        f"+ overhead {_gib(need.overhead)}), "
        f"more than the {_gib(available)} GiB available on {where}; {advice}"
    )


def available_memory(device: torch.device) -> int:
    """Bytes free for this run: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


