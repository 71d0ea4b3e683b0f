"""Speculative rejection sampling emits tokens distributed exactly as the target's.

Many seeded trials over a small vocabulary; a chi-square bound that a biased rule fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specvid.config import SamplingParams
from specvid.decoding.accept import rejection_accept
from specvid.decoding.sampling import logits_to_probs, sample

VOCAB = 6
TRIALS = 20_000
# chi-square critical value, 5 degrees of freedom, p = 0.001 (a correct sampler fails 1 in 1000).
CHI2_CRITICAL_DF5 = 20.515


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    mask = expected > 0
    assert counts[~mask].sum() == 0, "emitted a token the target gives probability 0"
    return float(((counts[mask] - expected[mask]) ** 2 / expected[mask]).sum())


def distributions(seed: int, k: int):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(k + 1, VOCAB, generator=g) * 1.5, -1)  # [k+1, vocab]
    q = torch.softmax(torch.randn(k, VOCAB, generator=g) * 1.5, -1)  # [k, vocab]
    return p, q


def emitted_sequences(p, q, trials: int, seed: int) -> list[list[int]]:
    """Run the rule `trials` times with drafts sampled from q; return the emitted tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(trials):
        drafts = sample(q, g)  # [k]
        verdict = rejection_accept(p, drafts, q, g)
        out.append(drafts[: verdict.num_accepted].tolist() + [verdict.next_token])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_emitted_token_follows_target(seed):
    p, q = distributions(seed, k=3)
    firsts = np.array([s[0] for s in emitted_sequences(p, q, TRIALS, seed + 100)])
    counts = np.bincount(firsts, minlength=VOCAB)
    assert chi_square(counts, p[0].numpy()) < CHI2_CRITICAL_DF5


def test_second_token_follows_target_once_first_is_accepted():
    # Given d_1 was accepted, the second emitted token (accepted d_2, or recovered from the
    # residual) must again be distributed as the target's p_2.
    p, q = distributions(7, k=2)
    seconds = np.array([s[1] for s in emitted_sequences(p, q, TRIALS, 8) if len(s) >= 2])
    assert len(seconds) > TRIALS // 10
    assert chi_square(np.bincount(seconds, minlength=VOCAB), p[1].numpy()) < CHI2_CRITICAL_DF5


def test_identical_draft_is_always_accepted():
    p, _ = distributions(3, k=4)
    q = p[:4].clone()
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        drafts = sample(q, g)
        assert rejection_accept(p, drafts, q, g).num_accepted == 4


def test_token_with_zero_target_probability_is_never_accepted():
    p = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    q = torch.tensor([[1.0, 0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        verdict = rejection_accept(p, torch.tensor([0]), q, g)
        assert (verdict.num_accepted, verdict.next_token) == (0, 1)


def test_biased_rule_is_caught():
    # Guard that the test has teeth: accepting every draft emits q, which the bound rejects.
    p, q = distributions(0, k=1)
    g = torch.Generator().manual_seed(1)
    firsts = np.array([int(sample(q, g)[0]) for _ in range(TRIALS)])
    assert chi_square(np.bincount(firsts, minlength=VOCAB), p[0].numpy()) > CHI2_CRITICAL_DF5


@pytest.mark.parametrize(
    "params, kept",
    [
        (SamplingParams(temperature=1.0, top_k=2), 2),
        (SamplingParams(temperature=1.0, top_p=0.5), 1),
        (SamplingParams(temperature=1.0), 4),
    ],
)
def test_logits_to_probs_filters(params, kept):
    logits = torch.tensor([[3.0, 1.0, 0.5, 0.0]])
    probs = logits_to_probs(logits, params)
    assert int((probs > 0).sum()) == kept
    assert torch.allclose(probs.sum(-1), torch.ones(1))
