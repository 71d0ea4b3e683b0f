"""Real-size costs of speculative decoding, measured with random weights (`specvid bench-cost`).

`specvid bench` times whole methods on the tiny zoo models. Whether speculative decoding pays on
real hardware rests on a handful of costs of the *real-size* models: one target decode step, one
verify block of k+1 tokens, one draft step (over the full or the pruned video context), the
draft's prefill with the full and with the pruned video, and the KV cache each context holds.
None of them depends on what the weights are, so this mode builds the published architectures
from their config.json numbers (the registry below), fills the weights with random values and
times forwards. No checkpoint is needed.

What is built, and what is not:
- the language model (decoder layers, final norm, LM head) at real width, on the target device,
  filled by one random-normal draw (no per-module initialisation, which takes minutes at 32B);
- the vision tower and the token-embedding table stay on the meta device: every forward is fed
  `inputs_embeds` (random video and text embeddings of the right shape), so neither is used; both
  still count in the parameter totals;
- decode and verify run against a synthetic KV cache of the context length (random keys and
  values): the cost of a step depends on the cache's length, not on its values, so the target
  never has to prefill tens of thousands of tokens just to be timed.

`layers` truncates depth, never width, so a CPU can run the real widths. Figures are then also
given scaled to full depth: the part of a forward that does not grow with depth (LM head, final
norm, rotary tables, masks, call overhead) is timed again with the decoder layers removed, and
only the remainder is multiplied by full / built layers. Scaled figures are labelled as such.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Optional, Sequence

import torch
from pydantic import BaseModel, Field

from specvid.errors import InvalidRequestError, TooLargeError

Family = Literal["qwen2_5_vl", "llava_onevision"]
Progress = Callable[[str], None]

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


# ---- timing -------------------------------------------------------------------------------------


def median_seconds(call: Callable[[], object], reset: Callable[[], object], repeats: int, warmup: int,
                   device: torch.device) -> float:
    """Median wall time of `call` over `repeats` runs after `warmup` runs; `reset` runs untimed after each.

    On a GPU the clock is read only after the device has finished (synchronize on both sides).
    """
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        call()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        reset()
    return statistics.median(times)


@dataclass(frozen=True)
class Timing:
    """A measured time and, for a truncated model, the time of its depth-independent part."""

    seconds: float
    fixed_seconds: Optional[float] = None  # same forward with the decoder layers removed

    def full_depth(self, layers: int, full_layers: int) -> float:
        """Seconds at full depth: the per-layer part scaled by full / built layers."""
        if self.fixed_seconds is None or layers >= full_layers:
            return self.seconds
        per_layers = max(self.seconds - self.fixed_seconds, 0.0)
        return self.fixed_seconds + per_layers * full_layers / layers


class Forwards:
    """The forwards being timed, over one built model, called exactly as the adapters call them."""

    def __init__(self, model, family: Family, device: torch.device, dtype: torch.dtype, seed: int):
        self.model, self.family, self.device, self.dtype = model, family, device, dtype
        self.text = model.config.get_text_config()
        self.generator = torch.Generator(device=device).manual_seed(seed + 1)

    def embeddings(self, n: int) -> torch.Tensor:  # [1, n, hidden]
        """Stand-ins for n token or video embeddings (values do not change a forward's cost)."""
        shape = (1, n, self.text.hidden_size)
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=self.dtype)

    def positions(self, start: int, n: int) -> torch.Tensor:
        """Positions start..start+n-1: [3, 1, n] (M-RoPE, all axes equal, as for text) or [1, n]."""
        flat = torch.arange(start, start + n, device=self.device)
        return flat.expand(3, 1, n) if self.family == "qwen2_5_vl" else flat[None]

    def synthetic_cache(self, length: int):
        """A KV cache holding `length` random positions in every layer, as after a prefill."""
        from transformers import DynamicCache

        t = self.text
        cache = DynamicCache(config=t)
        shape = (1, t.num_key_value_heads, length, t.hidden_size // t.num_attention_heads)  # [1, kv, L, d]
        for layer in range(t.num_hidden_layers):
            keys = torch.randn(shape, generator=self.generator, device=self.device, dtype=self.dtype)
            cache.update(keys, torch.randn_like(keys), layer)
        return cache

    @torch.inference_mode()
    def forward(self, embeds: torch.Tensor, start: int, cache, keep: int) -> torch.Tensor:
        out = self.model(
            inputs_embeds=embeds,
            position_ids=self.positions(start, embeds.shape[1]),
            cache=cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        return out.logits  # [1, keep, vocab]


def cache_bytes(cache) -> int:
    """Bytes the keys and values of a cache occupy."""
    layers = [layer for layer in cache.layers if getattr(layer, "keys", None) is not None]
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in layers)


def crop_to(cache, length: int) -> None:
    """Drop entries past `length` (crop takes a negative count in transformers 5)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def block_timer(fwd: Forwards, context: int, n: int, repeats: int, warmup: int,
                kv: dict[int, int]) -> Callable[[], float]:
    """Times one forward of n new tokens after `context` cached ones (n = 1: decode, k+1: verify).

    The synthetic cache lives only while its timer runs, so one context's cache is held at a time;
    the first one records its size in `kv[context]`.
    """
    embeds = fwd.embeddings(n)  # [1, n, hidden]

    def run() -> float:
        cache = fwd.synthetic_cache(context)
        kv.setdefault(context, cache_bytes(cache))
        return median_seconds(
            lambda: fwd.forward(embeds, context, cache, keep=n),
            lambda: crop_to(cache, context),
            repeats, warmup, fwd.device,
        )

    return run


def prefill_timer(
    fwd: Forwards, tokens: int, repeats: int, warmup: int, kv: dict[int, int]
) -> Callable[[], float]:
    """Times a fresh prefill of `tokens` embeddings (video + prompt), keeping the last logits only.

    The first prefill that writes a cache records its size in `kv[tokens]`.
    """
    from transformers import DynamicCache

    embeds = fwd.embeddings(tokens)  # [1, tokens, hidden]
    caches: list = []

    def call() -> None:
        cache = DynamicCache(config=fwd.text)
        fwd.forward(embeds, 0, cache, keep=1)
        caches.append(cache)

    def reset() -> None:
        cache = caches.pop()
        if tokens not in kv and cache.get_seq_length():
            kv[tokens] = cache_bytes(cache)

    return lambda: median_seconds(call, reset, repeats, warmup, fwd.device)


def time_plan(model, plan: dict[str, Callable[[], float]], truncated: bool,
              progress: Progress) -> dict[str, Timing]:
    """Run every timer; when the model is truncated, run them again without decoder layers."""
    seconds = {}
    for key, run in plan.items():
        progress(key)
        seconds[key] = run()
    if not truncated:
        return {key: Timing(s) for key, s in seconds.items()}
    fixed = {}
    with decoder_layers_removed(model):
        for key, run in plan.items():
            progress(f"{key} (depth-independent part)")
            fixed[key] = run()
    return {key: Timing(seconds[key], fixed[key]) for key in plan}


# ---- the run ------------------------------------------------------------------------------------

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CostConfig(BaseModel):
    """One `specvid bench-cost` run."""

    target: str = Field("qwen2.5-vl-32b", description="registry key of the target")
    draft: str = Field("qwen2.5-vl-7b", description="registry key of the draft")
    device: str = Field("cpu", description="torch device, e.g. cpu, cuda, cuda:1")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    layers: Optional[int] = Field(None, ge=1, description="decoder layers built per model; None: all")
    frames: int = Field(64, ge=1, description="video frames in the context")
    prompt_tokens: int = Field(64, ge=1, description="text tokens around the video (system, question)")
    drop_rate: float = Field(0.9, ge=0.0, lt=1.0, description="SpecVLM: share of video tokens dropped")
    draft_tokens: tuple[int, ...] = Field((5, 10), description="k values: verify blocks of k+1 tokens")
    taus: tuple[float, ...] = Field((1.5, 3.28, 5.0, 7.76), description="mean accepted lengths to evaluate")
    repeats: int = Field(3, ge=1, description="timed runs per figure (the median is reported)")
    warmup: int = Field(1, ge=0, description="untimed runs before them")
    memory_limit: Optional[int] = Field(None, ge=0, description="bytes the run may use; None: what is free")
    seed: int = 0


@dataclass(frozen=True)
class Context:
    """Token counts of the two contexts: the target's (and plain SD draft's), and SpecVLM's draft."""

    video: int
    kept: int
    prompt: int

    @property
    def full(self) -> int:
        return self.video + self.prompt

    @property
    def pruned(self) -> int:
        return self.kept + self.prompt


@dataclass
class Measured:
    """One model's timings and caches."""

    spec: RealModel
    layers: int
    timings: dict[str, Timing]
    kv: dict[int, int]  # context tokens -> measured cache bytes (built depth)

    @property
    def truncated(self) -> bool:
        return self.layers < self.spec.text.layers

    def ms(self, key: str) -> tuple[float, float]:
        """(measured, full depth) milliseconds."""
        t = self.timings[key]
        return t.seconds * 1e3, t.full_depth(self.layers, self.spec.text.layers) * 1e3

    def fixed_ms(self, key: str) -> Optional[float]:
        """Milliseconds of the depth-independent part (None when built at full depth)."""
        fixed = self.timings[key].fixed_seconds
        return None if fixed is None else fixed * 1e3


def context_of(spec: RealModel, cfg: CostConfig) -> Context:
    from specvid.spec.prune import pruning_budget

    grid, extra = spec.video_layout(cfg.frames)
    return Context(grid + extra, pruning_budget(grid, cfg.drop_rate) + extra, cfg.prompt_tokens)


def run_cost(cfg: CostConfig, progress: Progress = lambda message: None) -> dict:
    """Build, time and free the target, then the draft; return {meta, rows}.

    Both memory checks run before anything is built, so a run that cannot fit fails at once.
    """
    target_spec, draft_spec = REGISTRY[cfg.target], REGISTRY[cfg.draft]
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequestError("--device cuda asked for, but torch sees no GPU")
    if draft_spec.family != target_spec.family:
        raise InvalidRequestError("target and draft must share a family (they read the same video tokens)")
    ctx = context_of(target_spec, cfg)
    layers = {role: min(cfg.layers or s.text.layers, s.text.layers)
              for role, s in (("target", target_spec), ("draft", draft_spec))}
    available = cfg.memory_limit if cfg.memory_limit is not None else available_memory(device)
    where = f"{device} (--memory-limit)" if cfg.memory_limit is not None else str(device)
    block = max(cfg.draft_tokens) + 1
    estimates = {
        "target": check_fits(target_spec, layers["target"], dtype, ctx.full, block, available, where),
        "draft": check_fits(draft_spec, layers["draft"], dtype, ctx.full, ctx.full, available, where),
    }
    target = _measure_target(target_spec, layers["target"], ctx, cfg, device, dtype, progress)
    draft = _measure_draft(draft_spec, layers["draft"], ctx, cfg, device, dtype, progress)
    rows = cost_rows(target, draft, ctx, cfg) + speedup_rows(target, draft, cfg)
    meta = _meta(cfg, device, ctx, target, draft, estimates)
    return {"meta": meta, "rows": rows}


def _measure_target(spec, layers, ctx: Context, cfg: CostConfig, device, dtype, progress) -> Measured:
    """Target: a decode step and verify blocks of k+1 tokens, after the full video context."""
    say = _prefixed(progress, f"target {spec.title}")
    say(f"building {layers} of {spec.text.layers} layers")
    model = build_model(spec, layers, device, dtype, cfg.seed)
    fwd = Forwards(model, spec.family, device, dtype, cfg.seed)
    kv: dict[int, int] = {}
    plan = {"decode": block_timer(fwd, ctx.full, 1, cfg.repeats, cfg.warmup, kv)}
    for k in cfg.draft_tokens:
        plan[f"verify k={k}"] = block_timer(fwd, ctx.full, k + 1, cfg.repeats, cfg.warmup, kv)
    timings = time_plan(model, plan, layers < spec.text.layers, say)
    del model, fwd, plan
    _release(device)
    return Measured(spec, layers, timings, kv)


def _measure_draft(spec, layers, ctx: Context, cfg: CostConfig, device, dtype, progress) -> Measured:
    """Draft: decode steps over the full and the pruned context, and both prefills."""
    say = _prefixed(progress, f"draft {spec.title}")
    say(f"building {layers} of {spec.text.layers} layers")
    model = build_model(spec, layers, device, dtype, cfg.seed + 7)
    fwd = Forwards(model, spec.family, device, dtype, cfg.seed + 7)
    decode_kv: dict[int, int] = {}
    kv: dict[int, int] = {}  # from real prefills: the figures reported
    plan = {}
    for label, length in (("full", ctx.full), ("pruned", ctx.pruned)):
        plan[f"decode {label}"] = block_timer(fwd, length, 1, cfg.repeats, cfg.warmup, decode_kv)
    for label, length in (("full", ctx.full), ("pruned", ctx.pruned)):
        plan[f"prefill {label}"] = prefill_timer(fwd, length, cfg.repeats, cfg.warmup, kv)
    timings = time_plan(model, plan, layers < spec.text.layers, say)
    del model, fwd, plan
    _release(device)
    return Measured(spec, layers, timings, kv)


def _prefixed(progress: Progress, prefix: str) -> Progress:
    return lambda message: progress(f"{prefix}: {message}")


def _release(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- rows ---------------------------------------------------------------------------------------


def ideal_speedup(tau: float, k: int, c: float, verify_steps: float = 1.0) -> float:
    """Decode speedup of one round over plain decoding (docs/bench.md): (1 + τ) / (k c + v).

    A round emits τ + 1 tokens for k draft steps (each c target steps) and one verify forward
    (v target steps; v = 1 in the ideal formula, the measured verify / decode ratio otherwise).
    """
    return (1.0 + tau) / (k * c + verify_steps)


def _row(quantity: str, m: Measured, role: str, tokens: Optional[int], context: Optional[int],
         value: float, full_depth: float, unit: str, timing: Optional[str] = None) -> dict:
    """A cost row; `timing` names the timed forward behind a time row (its depth-independent part
    is reported too, so the scaling can be checked)."""
    return {
        "kind": "cost",
        "quantity": quantity,
        "model": role,
        "name": m.spec.title,
        "layers": m.layers,
        "full_layers": m.spec.text.layers,
        "tokens": tokens,
        "context": context,
        "value": value,
        "full_depth": full_depth,
        "scaled": m.truncated,
        "unit": unit,
        "depth_independent_ms": m.fixed_ms(timing) if timing else None,
    }


def cost_rows(target: Measured, draft: Measured, ctx: Context, cfg: CostConfig) -> list[dict]:
    """One row per figure: value at the built depth and at full depth (scaled when truncated)."""
    rows = []
    step = target.ms("decode")
    rows.append(_row("decode step", target, "target", 1, ctx.full, *step, "ms", "decode"))
    for k in cfg.draft_tokens:
        verify = target.ms(f"verify k={k}")
        rows.append(_row(f"verify block, k={k}", target, "target", k + 1, ctx.full, *verify, "ms",
                         f"verify k={k}"))
        rows.append(_row(f"verify / decode step, k={k}", target, "target", k + 1, ctx.full,
                         *_ratios(verify, step), "x"))
    for label, length in (("full", ctx.full), ("pruned", ctx.pruned)):
        step_ms = draft.ms(f"decode {label}")
        rows.append(_row(f"decode step, {label} context", draft, "draft", 1, length, *step_ms, "ms",
                         f"decode {label}"))
    for label, length in (("full", ctx.full), ("pruned", ctx.pruned)):
        prefill_ms = draft.ms(f"prefill {label}")
        rows.append(_row(f"prefill, {label} video", draft, "draft", length, 0, *prefill_ms, "ms",
                         f"prefill {label}"))
    rows.append(_row("prefill full / pruned", draft, "draft", None, None,
                     *_ratios(draft.ms("prefill full"), draft.ms("prefill pruned")), "x"))
    for label, length in (("full", ctx.full), ("pruned", ctx.pruned)):
        c = _ratios(draft.ms(f"decode {label}"), step)
        rows.append(_row(f"c = draft step / target step, {label} context", draft, "pair", 1, length, *c, "x"))
    rows += _kv_rows(target, draft, ctx, cfg)
    return rows


def _kv_rows(target: Measured, draft: Measured, ctx: Context, cfg: CostConfig) -> list[dict]:
    """KV bytes per token and whole caches: measured at the built depth, exact at full depth."""
    itemsize = DTYPES[cfg.dtype].itemsize
    rows = []
    for role, m in (("target", target), ("draft", draft)):
        measured = m.kv[ctx.full] / ctx.full
        exact = m.spec.text.kv_bytes_per_token(m.spec.text.layers, itemsize)
        rows.append(_row("KV per token", m, role, None, None, measured / 2**10, exact / 2**10, "KiB"))
    caches = [("target", target, ctx.full, "full"), ("draft", draft, ctx.full, "full"),
              ("draft", draft, ctx.pruned, "pruned")]
    for role, m, length, label in caches:
        exact = length * m.spec.text.kv_bytes_per_token(m.spec.text.layers, itemsize)
        measured = m.kv.get(length, 0)
        mib = (measured / 2**20, exact / 2**20)
        rows.append(_row(f"KV cache, {label} context", m, role, None, length, *mib, "MiB"))
    return rows


def _ratios(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] / b[0], a[1] / b[1]


def speedup_rows(target: Measured, draft: Measured, cfg: CostConfig) -> list[dict]:
    """The ideal-speedup formula at each k and τ <= k, for a full-context and a pruned-context draft."""
    step = target.ms("decode")
    rows = []
    for k in cfg.draft_tokens:
        verify = _ratios(target.ms(f"verify k={k}"), step)
        for tau in (t for t in cfg.taus if t <= k):
            for label in ("full", "pruned"):
                c = _ratios(draft.ms(f"decode {label}"), step)
                rows.append({
                    "kind": "speedup",
                    "k": k,
                    "tau": tau,
                    "draft_context": label,
                    "c": c[0],
                    "c_full_depth": c[1],
                    "verify_steps": verify[0],
                    "verify_steps_full_depth": verify[1],
                    "ideal": ideal_speedup(tau, k, c[0]),
                    "ideal_full_depth": ideal_speedup(tau, k, c[1]),
                    "with_verify": ideal_speedup(tau, k, c[0], verify[0]),
                    "with_verify_full_depth": ideal_speedup(tau, k, c[1], verify[1]),
                })
    return rows


def _meta(cfg: CostConfig, device: torch.device, ctx: Context, target: Measured, draft: Measured,
          estimates: dict[str, MemoryEstimate]) -> dict:
    import transformers

    def model_meta(m: Measured, role: str) -> dict:
        skeleton = build_skeleton(m.spec, 1)
        return {
            "key": m.spec.key,
            "title": m.spec.title,
            "config_from": m.spec.hf_id,
            "layers": m.layers,
            "full_layers": m.spec.text.layers,
            "parameters_full_depth": full_depth_parameters(skeleton, m.spec.text.layers),
            "nominal_parameters": m.spec.nominal_params,
            "estimated_bytes": estimates[role].total,
        }

    return {
        "device": device_name(device),
        "device_type": device.type,
        "dtype": cfg.dtype,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "frames": cfg.frames,
        "video_tokens": ctx.video,
        "kept_video_tokens": ctx.kept,
        "drop_rate": cfg.drop_rate,
        "prompt_tokens": ctx.prompt,
        "context_full": ctx.full,
        "context_pruned": ctx.pruned,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "target": model_meta(target, "target"),
        "draft": model_meta(draft, "draft"),
        "weights": "random N(0, 0.02); vision tower and token embeddings not materialised (inputs_embeds)",
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return f"{names[0]} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


# ---- terminal output ----------------------------------------------------------------------------

COST_COLUMNS = (
    ("quantity", lambda r: r["quantity"]),
    ("model", lambda r: r["model"]),
    ("layers", lambda r: f"{r['layers']}/{r['full_layers']}"),
    ("tokens", lambda r: _int(r["tokens"])),
    ("context", lambda r: _int(r["context"])),
    ("built depth", lambda r: _figure(r["value"])),
    ("full depth", lambda r: _figure(r["full_depth"]) + ("*" if r["scaled"] and r["unit"] == "ms" else "")),
    ("unit", lambda r: r["unit"]),
)

SPEEDUP_COLUMNS = (
    ("k", lambda r: str(r["k"])),
    ("tau", lambda r: f"{r['tau']:.2f}"),
    ("draft context", lambda r: r["draft_context"]),
    ("c", lambda r: f"{r['c_full_depth']:.3f}"),
    ("ideal x", lambda r: f"{r['ideal_full_depth']:.2f}"),
    ("verify steps", lambda r: f"{r['verify_steps_full_depth']:.2f}"),
    ("x with measured verify", lambda r: f"{r['with_verify_full_depth']:.2f}"),
)


def format_columns(rows: Sequence[dict], columns) -> str:
    """A plain-text table: first column left-aligned, figures right-aligned (as `specvid bench`)."""
    cells = [[header for header, _ in columns]] + [[cell(r) for _, cell in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """The header, the cost table and the speedup table of a `run_cost` result."""
    meta, rows = report["meta"], report["rows"]
    t, d = meta["target"], meta["draft"]
    scaled = t["layers"] < t["full_layers"] or d["layers"] < d["full_layers"]
    header = [
        f"{t['title']} target / {d['title']} draft on {meta['device']}, {meta['dtype']}, random weights",
        f"built depth: target {t['layers']} of {t['full_layers']} layers, draft {d['layers']} of "
        f"{d['full_layers']}; {meta['frames']} frames = {meta['video_tokens']} video tokens "
        f"(draft keeps {meta['kept_video_tokens']}) + {meta['prompt_tokens']} prompt tokens; "
        f"median of {meta['repeats']} runs",
    ]
    if scaled:
        header.append("* scaled: depth-independent part + per-layer part x full / built layers")
    speedups = [r for r in rows if r["kind"] == "speedup"]
    return "\n".join([
        *header,
        "",
        format_columns([r for r in rows if r["kind"] == "cost"], COST_COLUMNS),
        "",
        "Ideal decode speedup (1 + tau) / (k c + v) from the full-depth figures; v = 1 ('ideal x') "
        "or the measured verify / decode ratio:",
        format_columns(speedups, SPEEDUP_COLUMNS),
    ])


def _int(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def _figure(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
