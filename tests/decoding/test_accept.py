"""Table-driven tests of the pure acceptance rules."""

from __future__ import annotations

import pytest
import torch

from specvid.decoding.accept import greedy_accept


def one_hot_logits(tokens: list[int], vocab: int = 10) -> torch.Tensor:
    logits = torch.zeros(len(tokens), vocab)
    logits[torch.arange(len(tokens)), torch.tensor(tokens)] = 5.0
    return logits


@pytest.mark.parametrize(
    "target, drafts, accepted, next_token",
    [
        ([1, 2, 3, 4], [1, 2, 3], 3, 4),  # all accepted, bonus token
        ([1, 2, 3, 4], [1, 9, 3], 1, 2),  # first mismatch at position 2: recovered token 2
        ([1, 2, 3, 4], [9, 2, 3], 0, 1),  # rejected at once
        ([1, 2, 3, 4], [1, 2, 9], 2, 3),  # last draft wrong
        ([7], [], 0, 7),  # no drafts: a plain autoregressive step
    ],
)
def test_greedy_accept(target, drafts, accepted, next_token):
    verdict = greedy_accept(one_hot_logits(target), torch.tensor(drafts, dtype=torch.long))
    assert (verdict.num_accepted, verdict.next_token) == (accepted, next_token)


def test_greedy_accept_after_mismatch_ignores_later_matches():
    # d_3 matches the target, but d_2 did not: nothing after the first mismatch counts.
    verdict = greedy_accept(one_hot_logits([1, 2, 3, 4]), torch.tensor([1, 5, 3]))
    assert verdict.num_accepted == 1
