"""What a `specvid bench-cost` run is asked for and what it measured: plain data, no timing code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import BaseModel, Field

from specvid.bench.real_models import RealModel

Clock = Literal["wall", "gpu-busy"]


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
    clock: Clock = Field("wall", description="wall: wall time; gpu-busy: summed kernel time (GPU only)")
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
