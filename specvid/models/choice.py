"""How a token is chosen from logits, as tensor functions: the decode forward's compiled draft
loop (`decoder.py`) and the speculative core (`decoding/sampling.py`) share them, so a token
drafted in one compiled call is the token a step-by-step draft picks from the same numbers."""

from __future__ import annotations

import torch


def filtered_probs(
    logits: torch.Tensor,  # [n, vocab]
    temperature: float | torch.Tensor,
    top_k: int | torch.Tensor,  # 0 keeps all
    top_p: float | torch.Tensor,  # 1 keeps all
) -> torch.Tensor:
    """Temperature, then top-k, then top-p, as one function of tensors too: the compiled draft
    loop (`models/decoder.py`) takes the knobs as tensors so that one graph serves them all."""  # [n, vocab]
    logits = logits.float() / temperature
    vocab = logits.shape[-1]
    if not isinstance(top_k, int) or 0 < top_k < vocab:  # Python knobs skip what they leave off
        keep = torch.where(torch.as_tensor(top_k) > 0, torch.as_tensor(top_k).clamp(max=vocab), vocab)
        kth = torch.sort(logits, dim=-1, descending=True).values.gather(-1, (keep - 1).expand(*logits.shape[:-1], 1))
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if isinstance(top_p, float | int) and top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    # Drop a token once the mass before it already reaches top_p (the top token always stays).
    nucleus = torch.as_tensor(top_p) < 1.0
    drop_sorted = ((sorted_probs.cumsum(-1) - sorted_probs) >= top_p) & nucleus
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    kept = probs.masked_fill(drop, 0.0)
    return torch.where(nucleus, kept / kept.sum(-1, keepdim=True), probs)


def draw(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The token whose slice of the cumulative distribution holds `uniform` (in [0, 1)): an
    exact draw from probs [vocab] that takes its randomness as an argument, so a compiled loop
    and a step-by-step one draw the same token from the same number. Tokens of zero probability
    own an empty slice and are never drawn."""  # []
    cumulative = probs.cumsum(-1)
    token = torch.searchsorted(cumulative, (uniform * cumulative[-1]).reshape(1), right=True)[0]
    return token.clamp(max=probs.shape[-1] - 1)
