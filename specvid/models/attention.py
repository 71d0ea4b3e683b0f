"""Attention probabilities onto video keys, summed over a model's language layers as they run.

SpecVLM's stage I scores video tokens by the attention the text after the video pays them;
LVSpec's attention relevance asks how much each new token looks at the video. Both read the
probabilities one layer at a time: through forward hooks on the attention modules during a
prefill, and from the decode-time forward itself (`decoder.py`) for new tokens.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn


class VideoAttention:
    """A running sum over layers of attention probabilities onto the video keys.

    `per_query=False` (SpecVLM stage I) keeps one figure per video key: the probability mean
    over heads and queries. `per_query=True` (LVSpec's attention relevance) keeps one figure per
    query: its total probability on the video keys, averaged over heads.
    """

    def __init__(self, video_keys: Optional[torch.Tensor], per_query: bool = False):
        self.video_keys = video_keys  # [N] key positions
        self.per_query = per_query
        self.total: Optional[torch.Tensor] = None  # [N] or [queries], float64
        self.layers = 0

    def hook(self, module, args, output) -> None:
        """A forward hook on an attention module that returns its probabilities."""
        weights = output[1]  # [1, heads, queries, keys]
        if weights is None:
            raise RuntimeError(f"{type(module).__name__} returned no attention probabilities")
        self.add(weights[0])

    def add(self, probs: torch.Tensor) -> None:
        """Count one layer's probabilities [heads, queries, keys]."""
        on_video = probs[..., self.video_keys.to(probs.device)].float()  # [heads, queries, N]
        layer = on_video.sum(-1).mean(0) if self.per_query else on_video.mean(dim=(0, 1))
        layer = layer.double().cpu()
        self.total = layer if self.total is None else self.total + layer
        self.layers += 1

    def mean(self) -> torch.Tensor:
        """Mean over layers and heads; over every tensor-parallel rank's heads too."""
        total = self.total / self.layers
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Each rank of a tensor-parallel group holds an equal share of the heads.
            on_gpu = torch.distributed.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
            reduced = total.cuda() if on_gpu else total
            torch.distributed.all_reduce(reduced)
            total = reduced.cpu() / torch.distributed.get_world_size()
        return total.float()


@contextmanager
def recording(language_model: nn.Module, recorded: VideoAttention, lock: threading.RLock) -> Iterator[None]:
    """Count every language layer's attention probabilities into `recorded` while open.

    Switches the language model to eager attention for the duration (the only transformers
    kernel that yields probabilities), holding `lock` (the model's forward lock) so no other
    thread's forward sees the switch. Does nothing when `recorded` has no video keys.
    """
    if recorded.video_keys is None:
        yield
        return
    with lock:
        previous = language_model.config._attn_implementation
        language_model.config._attn_implementation = "eager"
        handles = [layer.self_attn.register_forward_hook(recorded.hook) for layer in language_model.layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            language_model.config._attn_implementation = previous
