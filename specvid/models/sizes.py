"""The knobs that size a tiny model of either family (no transformers import: cheap to read)."""

from __future__ import annotations

from dataclasses import dataclass

HEAD_DIM = 32


@dataclass(frozen=True)
class TinySize:
    """The knobs that set a tiny model's cost."""

    text_hidden: int = 128
    text_layers: int = 2
    text_kv_heads: int = 2
    vision_hidden: int = 64
    vision_layers: int = 2
    max_positions: int = 4096
    # Random test models use 0.1 rather than the usual 0.02 so their logits are well separated:
    # near-ties would make "speculative output == greedy output" depend on float rounding
    # between block and step forwards. Trained models start from the usual 0.02.
    init_std: float = 0.1
    # RoPE base of the language model. 1e6 is the real families' value; with 32-dim heads and
    # M-RoPE sections [4, 6, 6] it leaves the width axis ~1e-6 rad per token (no spatial
    # position), so the trained zoo models use 100.
    rope_theta: float = 1e6


TARGET_SIZE = TinySize()
DRAFT_SIZE = TinySize(text_hidden=64, text_layers=1, text_kv_heads=1, vision_hidden=32, vision_layers=1)
