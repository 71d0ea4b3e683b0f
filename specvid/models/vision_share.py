"""Vision hand-over: a draft whose vision tower is the target's takes the target's tower output
instead of encoding the video a second time.

The zoo's drafts are made the way real families are (the target's vision tower and weights, a
smaller language model), so both towers compute the same features; only the projection into
each language model differs (Qwen2.5-VL's merger output layer, LLaVA-OneVision's projector and
newline). The target's prefill keeps the tower's output (`TowerFeatures`, no extra compute);
the draft projects it with its own projection (`VideoLLM.project_features`).

Whether two models share a tower is checked, never assumed: `tower_fingerprint` is a digest of
the tower's weights, equal only when every tensor is equal; the two workers compare digests
(in the served topology they live in different processes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TowerFeatures:
    """The vision tower's output for one prompt's video, before any model's own projection."""

    features: torch.Tensor  # family-specific layout (e.g. [frames, patches, hidden] for LLaVA-OneVision)
    fingerprint: str  # the tower that computed them (`tower_fingerprint`)


def tower_fingerprint(tower: dict[str, torch.Tensor]) -> str:
    """A digest of a tower's parameters (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name in sorted(tower):
        tensor = tower[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def tower_parameters(module: nn.Module, skip_prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """A module's parameters and buffers, less those under `skip_prefixes` (the projection)."""
    named = dict(module.named_parameters())
    named.update(dict(module.named_buffers()))
    return {name: t for name, t in named.items() if not name.startswith(skip_prefixes)}
