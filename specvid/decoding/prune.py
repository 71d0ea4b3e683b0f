"""SpecVLM's staged video-token pruning for the draft: pure functions over a score vector.

Terms, for a video of N tokens in (t, h, w) order:
- *scores*: one non-negative number per video token, the attention that the target's text
  after the video pays to it (see `VideoLLM.prefill_scored`).
- *budget*: how many tokens the draft keeps, `round(N * (1 - drop_rate))`, at least 1.
- *stage I* (verifier-guided): the smallest set of top-scored tokens whose score mass reaches
  a fraction `mass` of the total, cut to the budget.
- *stage II* (uniform): the rest of the budget, spread evenly over the tokens stage I left, in
  (t, h, w) order, so every part of the video keeps some presence in the draft's context.

The kept indices are returned sorted, so the draft's context keeps the video's order.
"""

from __future__ import annotations

from typing import Literal

import torch

Pruning = Literal["staged", "uniform", "none"]


def pruning_budget(num_tokens: int, drop_rate: float) -> int:
    """How many of `num_tokens` video tokens the draft keeps at `drop_rate`."""
    if num_tokens < 1:
        raise ValueError("a video has at least one token")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must lie in [0, 1), got {drop_rate}")
    kept = round(num_tokens * (1.0 - drop_rate), 9)  # 65 * (1 - 0.9) is 6.4999... in floats
    return max(1, min(num_tokens, int(kept + 0.5)))


def select_video_tokens(
    scores: torch.Tensor,  # [N]
    drop_rate: float,
    mass: float = 0.5,
    pruning: Pruning = "staged",
) -> torch.Tensor:  # [kept], sorted indices into the N video tokens
    """The video tokens the draft keeps.

    `pruning`: "staged" runs stage I then stage II; "uniform" is stage II alone (no scores
    needed); "none" keeps every token.
    """
    num_tokens = scores.numel()
    if pruning == "none":
        return torch.arange(num_tokens)
    if not 0.0 <= mass <= 1.0:
        raise ValueError(f"mass must lie in [0, 1], got {mass}")
    budget = pruning_budget(num_tokens, drop_rate)
    chosen = stage_one(scores, mass, budget) if pruning == "staged" else torch.empty(0, dtype=torch.long)
    rest = _complement(chosen, num_tokens)
    filled = rest[evenly_spaced(rest.numel(), budget - chosen.numel())]
    return torch.cat([chosen, filled]).sort().values


def stage_one(scores: torch.Tensor, mass: float, budget: int) -> torch.Tensor:  # [<= budget]
    """The fewest top-scored tokens whose share of the total score reaches `mass`, capped at budget.

    Ties go to the earlier token, so the result does not depend on the sort's stability.
    """
    if mass == 0.0:
        return torch.empty(0, dtype=torch.long)
    scores = scores.double().clamp_min(0.0)
    total = float(scores.sum())
    if total <= 0.0:  # no signal at all: leave everything to stage II
        return torch.empty(0, dtype=torch.long)
    # Sort by (score desc, index asc): a stable sort of the negated scores.
    order = torch.sort(-scores, stable=True).indices
    cumulative = torch.cumsum(scores[order], dim=0) / total
    # First position where the running share reaches `mass` (a tiny slack absorbs rounding).
    needed = int(torch.searchsorted(cumulative, torch.tensor([mass - 1e-12], dtype=torch.float64))) + 1
    return order[: min(needed, budget, scores.numel())]


def evenly_spaced(length: int, count: int) -> torch.Tensor:  # [count]
    """`count` distinct indices into range(length), one at the centre of each of `count` equal strides."""
    if count <= 0 or length <= 0:
        return torch.empty(0, dtype=torch.long)
    count = min(count, length)
    return ((torch.arange(count, dtype=torch.float64) + 0.5) * length / count).floor().long()


def _complement(chosen: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Indices of range(num_tokens) not in `chosen`, ascending."""
    keep = torch.ones(num_tokens, dtype=torch.bool)
    keep[chosen] = False
    return keep.nonzero().flatten()
