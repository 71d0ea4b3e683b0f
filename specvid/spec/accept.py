"""Acceptance rules of speculative decoding: pure functions over tensors.

Terms, used the same way everywhere in SpecVid:

- *draft tokens*: the k tokens the draft proposes for one round, d_1..d_k.
- *accepted tokens*: the longest prefix d_1..d_n (0 <= n <= k) the rule keeps.
- *recovered token*: when d_{n+1} is rejected, the target's own token for that position.
- *bonus token*: when all k are accepted, the target's token for position k+1, which the
  verify pass computed anyway.

A round therefore emits n + 1 tokens: the accepted ones plus one recovered or bonus token.
The mean accepted length tau averages n over rounds (the +1 is not counted).

Every rule sees the target's view of k+1 positions: row i scores the token after d_1..d_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specvid.spec.sampling import sample


@dataclass(frozen=True)
class Verdict:
    """A rule's decision for one round."""

    num_accepted: int  # n
    next_token: int  # the recovered token (n < k) or the bonus token (n == k)


def greedy_accept(
    target_logits: torch.Tensor,  # [k+1, vocab]
    draft_tokens: torch.Tensor,  # [k]
) -> Verdict:
    """Exact match against the target's argmax: output identical to greedy target decoding."""
    target_tokens = target_logits.argmax(-1)  # [k+1]
    k = draft_tokens.numel()
    mismatch = (target_tokens[:k] != draft_tokens).nonzero()
    n = int(mismatch[0]) if mismatch.numel() else k
    return Verdict(n, int(target_tokens[n]))


def rejection_accept(
    target_probs: torch.Tensor,  # [k+1, vocab]
    draft_tokens: torch.Tensor,  # [k]
    draft_probs: torch.Tensor,  # [k, vocab]
    generator: torch.Generator,
) -> Verdict:
    """Speculative rejection sampling: emitted tokens are distributed exactly as the target's.

    d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)); the first rejected position
    is resampled from the residual max(p_i - q_i, 0), renormalised; if all pass, the bonus
    token is sampled from p_{k+1}.
    """
    k = draft_tokens.numel()
    rows = torch.arange(k)
    p = target_probs[rows, draft_tokens]  # [k]
    q = draft_probs[rows, draft_tokens]  # [k]
    u = torch.rand(k, generator=generator)
    # u < p/q, written without a division so q = 0 needs no special case.
    rejected = (u * q >= p).nonzero()
    if not rejected.numel():
        return Verdict(k, int(sample(target_probs[k:], generator)))
    n = int(rejected[0])
    residual = (target_probs[n] - draft_probs[n]).clamp_min(0.0)
    total = residual.sum()
    # p == q on the whole support leaves no residual; then p itself is the right distribution.
    residual = residual / total if total > 0 else target_probs[n]
    return Verdict(n, int(sample(residual[None], generator)))
