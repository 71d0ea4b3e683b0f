"""Acceptance rules of speculative decoding: pure functions over tensors.

Terms, used the same way everywhere in SpecVid:

- *draft tokens*: the k tokens the draft proposes for one round, d_1..d_k.
- *accepted tokens*: the longest prefix d_1..d_n (0 <= n <= k) the rule keeps.
- *recovered token*: when d_{n+1} is rejected, the target's own token for that position.
- *bonus token*: when all k are accepted, the target's token for position k+1, which the
  verify pass computed anyway.

A round therefore emits n + 1 tokens: the accepted ones plus one recovered or bonus token.
The mean accepted length tau averages n over rounds (the +1 is not counted).

Loose verification (LVSpec) adds two ways to accept a draft token the target would not have
chosen:

- *loose accept*: a mismatch at a position that is not strict (a filler) is accepted, when
  the target finds the draft token plausible enough (`filler_ratio`);
- *shift rescue*: a mismatch at a strict position is accepted when the token is merely out of
  place: the target's token sits among the nearby draft tokens, or the draft token is one the
  target wanted at a recent loosely accepted position; and the target ranks it in its top-k.

Every rule sees the target's view of k+1 positions: row i scores the token after d_1..d_i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from specvid.decoding.sampling import sample


@dataclass(frozen=True)
class Verdict:
    """A rule's decision for one round."""

    num_accepted: int  # n
    next_token: int  # the recovered token (n < k) or the bonus token (n == k)
    loose: int = 0  # accepted mismatches at non-strict positions
    rescued: int = 0  # accepted mismatches at strict positions, by the shift rule
    # (absolute position, target's token) at each loosely accepted position, for later rescues
    wishes: tuple[tuple[int, int], ...] = field(default=())
    compute_s: float = 0.0  # the target's time for the batch that verified it (set by the worker)
    batch: tuple[int, int] = (0, 0)  # that batch's (requests, longest block of tokens)


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


def anchor_mask(scores: torch.Tensor, lam: float) -> torch.Tensor:  # scores: [k]
    """The most relevant ceil((1 - lam) * k) positions: the block's visual anchors.

    Ties go to the earlier position, so the mask is deterministic.
    """  # [k] bool
    k = scores.numel()
    count = min(k, math.ceil((1.0 - lam) * k - 1e-9))
    order = torch.sort(-scores.float(), stable=True).indices
    mask = torch.zeros(k, dtype=torch.bool)
    mask[order[:count]] = True
    return mask


def loose_accept(
    target_logits: torch.Tensor,  # [k+1, vocab]
    draft_tokens: torch.Tensor,  # [k]
    strict: torch.Tensor,  # [k] bool
    *,
    start: int,  # absolute position of the first drafted token in the generated sequence
    shift_window: int,
    shift_top_k: int,
    filler_ratio: float = 0.0,
    wishes: Sequence[tuple[int, int]] = (),  # from earlier rounds: (position, wanted token)
    context: Sequence[int] = (),  # committed tokens before the block, for the repetition guard
) -> Verdict:
    """Greedy loose verification; with no loose positions and shift_window 0, `greedy_accept`.

    Walking the block left to right, position i (draft d_i, target t_i) is accepted when
    d_i == t_i; else when it is not strict and the target gives d_i at least `filler_ratio` times
    the probability of t_i (loose accept; 0 accepts every filler mismatch); else when the shift
    rule rescues it:
    d_i is in the target's top-k at i and either t_i equals a draft token within shift_window
    positions of i (the draft wrote it early or late), or d_i equals what the target wanted at
    a loosely accepted position at most shift_window positions before i. No mismatch is
    accepted if it would repeat the tokens just before it (`_repeats`): loose accepts must not
    start a loop the target would never have written. The first position that fails ends the
    accepted prefix; the target's token there is the recovered token.
    """
    target_tokens = target_logits.argmax(-1)  # [k+1]
    drafts = [int(t) for t in draft_tokens]
    k = len(drafts)
    history = list(context)
    all_wishes = list(wishes)
    loose = rescued = 0
    n = k
    for i in range(k):
        d, t = drafts[i], int(target_tokens[i])
        if d != t:
            if _repeats(history + [d]):
                n = i
                break
            if not strict[i] and _plausible(target_logits[i], d, t, filler_ratio):
                loose += 1
                all_wishes.append((start + i, t))
            elif _shift_rescues(i, drafts, t, target_logits[i], start, all_wishes, shift_window, shift_top_k):
                rescued += 1
            else:
                n = i
                break
        history.append(d)
    # Keep the wishes the next round (starting at start + n + 1) can still reach.
    recent = tuple(w for w in all_wishes if w[0] >= start + n + 1 - shift_window)
    return Verdict(n, int(target_tokens[n]), loose, rescued, recent if shift_window else ())


def _plausible(target_row: torch.Tensor, draft: int, target_token: int, ratio: float) -> bool:  # [vocab]
    """p(draft) >= ratio * p(target_token) under the target's row (temperature 1)."""
    if ratio <= 0.0:
        return True
    # The softmax's normaliser cancels in the ratio: compare logits.
    return float(target_row[draft] - target_row[target_token]) >= math.log(ratio)


def _shift_rescues(
    i: int,
    drafts: list[int],
    target_token: int,
    target_row: torch.Tensor,  # [vocab]
    start: int,
    wishes: Sequence[tuple[int, int]],
    window: int,
    top_k: int,
) -> bool:
    """Whether the anchor mismatch at block position i is a right token slightly out of place."""
    if window == 0:
        return False
    draft = drafts[i]
    if draft not in target_row.topk(min(top_k, target_row.numel())).indices.tolist():
        return False
    nearby = drafts[max(0, i - window) : i] + drafts[i + 1 : i + 1 + window]
    position = start + i
    wanted_recently = any(token == draft and 0 < position - at <= window for at, token in wishes)
    return target_token in nearby or wanted_recently


def _repeats(tokens: list[int], longest: int = 4) -> bool:
    """Whether `tokens` ends with a span of 1..longest tokens written twice in a row."""
    for span in range(1, longest + 1):
        if len(tokens) >= 2 * span and tokens[-span:] == tokens[-2 * span : -span]:
            return True
    return False
