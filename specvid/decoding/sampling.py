"""From logits to a probability distribution and a token, identically for draft and target.

Lossless speculative sampling needs the draft's q and the target's p to be the distributions
each side actually samples from, so both apply the same temperature / top-k / top-p here.
"""

from __future__ import annotations

from typing import Optional

import torch

from specvid.config import SamplingParams
from specvid.models.choice import draw, filtered_probs

__all__ = ["choose_token", "draw", "filtered_probs", "logits_to_probs", "make_generator", "sample"]


def make_generator(seed: Optional[int], salt: int = 0) -> torch.Generator:
    """A private random stream; `salt` separates streams of the same request (draft vs target)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed((seed * 1_000_003 + salt) % (2**63))
    return generator


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Logits [n, vocab] -> the sampling distribution [n, vocab] (temperature > 0)."""
    return filtered_probs(logits, params.temperature, params.top_k, params.top_p)


def sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of probs [n, vocab] -> [n]."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def choose_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator):
    """The next token from one row of logits [vocab], and its distribution (None when greedy)."""
    if params.greedy:
        return int(torch.argmax(logits)), None
    probs = logits_to_probs(logits[None], params)  # [1, vocab]
    return int(sample(probs, generator)), probs[0]
