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

import statistics
import time
from typing import Callable

import torch

from specvid.bench.cost_report import _meta, cost_rows, speedup_rows
from specvid.bench.cost_types import Clock, Context, CostConfig, Measured, Timing
from specvid.bench.real_models import (
    DTYPES,
    REGISTRY,
    Family,
    RealModel,
    available_memory,
    build_model,
    check_fits,
    decoder_layers_removed,
)
from specvid.errors import InvalidRequestError

Progress = Callable[[str], None]

# ---- timing -------------------------------------------------------------------------------------



def median_seconds(call: Callable[[], object], reset: Callable[[], object], repeats: int, warmup: int,
                   device: torch.device, clock: Clock = "wall") -> float:
    """Median time of `call` over `repeats` runs after `warmup` runs; `reset` runs untimed after each.

    `wall`: wall time; on a GPU the clock is read only after the device has finished (synchronize
    on both sides), so it includes the host's kernel-launch gaps. `gpu-busy`: the summed duration
    of the kernels the call ran (the profiler's device trace), i.e. the time left once launch
    overhead is gone, as with CUDA graphs in a serving engine.
    """
    measure = _gpu_busy_seconds if clock == "gpu-busy" else _wall_seconds
    times = []
    for i in range(warmup + repeats):
        seconds = measure(call, device)
        if i >= warmup:
            times.append(seconds)
        reset()
    return statistics.median(times)


def _wall_seconds(call: Callable[[], object], device: torch.device) -> float:
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    call()
    sync()
    return time.perf_counter() - start


def _gpu_busy_seconds(call: Callable[[], object], device: torch.device) -> float:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize(device)
    return device_busy_seconds(prof.events())


def device_busy_seconds(events) -> float:
    """Seconds of device work in a profiler trace: the self device time of every device event.

    Kernels of one stream never overlap, so their sum is the time the device was busy.
    """
    return sum(getattr(e, "self_device_time_total", 0) for e in events
               if e.device_type != torch.autograd.DeviceType.CPU) / 1e6


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


def block_timer(fwd: Forwards, context: int, n: int, cfg: "CostConfig",
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
            cfg.repeats, cfg.warmup, fwd.device, cfg.clock,
        )

    return run


def prefill_timer(fwd: Forwards, tokens: int, cfg: "CostConfig", kv: dict[int, int]) -> Callable[[], float]:
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

    return lambda: median_seconds(call, reset, cfg.repeats, cfg.warmup, fwd.device, cfg.clock)


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



def context_of(spec: RealModel, cfg: CostConfig) -> Context:
    from specvid.decoding.prune import pruning_budget

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
    if cfg.clock == "gpu-busy" and device.type != "cuda":
        raise InvalidRequestError("--clock gpu-busy reads the GPU's kernel trace; it needs --device cuda")
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
    plan = {"decode": block_timer(fwd, ctx.full, 1, cfg, kv)}
    for k in cfg.draft_tokens:
        plan[f"verify k={k}"] = block_timer(fwd, ctx.full, k + 1, cfg, kv)
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
        plan[f"decode {label}"] = block_timer(fwd, length, 1, cfg, decode_kv)
    for label, length in (("full", ctx.full), ("pruned", ctx.pruned)):
        plan[f"prefill {label}"] = prefill_timer(fwd, length, cfg, kv)
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


