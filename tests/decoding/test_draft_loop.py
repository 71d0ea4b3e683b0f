"""A request's proposal drafted in one call of the draft loop (`TextDecoder.draft`) equals the
step-by-step proposal: greedy, seeded sampling, adaptive length and EOS mid-round, over rounds
that accept some drafts and reject the rest (so caches are cropped and 1-token blocks occur).

Two adapters with the same weights: one drafts whole rounds (a request alone does), the other
is held to the step loop by a decoder that reports no draft loop."""

from __future__ import annotations

import pytest
import torch

from specvid.config import ModelSpec, SamplingParams
from specvid.decoding.draft import DraftWorker
from specvid.decoding.session import Commit, PrefillRequest
from specvid.models.loader import load_model
from tests.helpers import FAMILIES, random_frames

MODES = {
    "greedy": (SamplingParams(max_tokens=48), 0.0),
    "sampled": (SamplingParams(max_tokens=48, temperature=0.9, top_p=0.9, seed=7), 0.0),
    "adaptive": (SamplingParams(max_tokens=48), 0.5),
    "adaptive_sampled": (SamplingParams(max_tokens=48, temperature=1.2, top_k=20, seed=3), 0.2),
}


def stepwise(adapter):
    """The adapter held to the step-by-step proposal."""
    adapter.decoder.has_draft_loop = lambda k, sampled, block: False
    return adapter


def rounds(worker: DraftWorker, request: PrefillRequest, k: int, count: int = 6) -> list:
    """`count` rounds: each accepts the first half of its proposal, then a token of its own."""
    worker.prefill(request)
    proposals, known, commit = [], 0, Commit(0, (5,))
    for i in range(count):
        proposal = worker.propose(request.request_id, commit, k)
        proposals.append(proposal)
        known += len(commit.tokens)
        commit = Commit(known, tuple(proposal.tokens[: len(proposal.tokens) // 2]) + (11 + i,))
    return proposals


def same(a, b) -> None:
    assert [p.tokens for p in a] == [p.tokens for p in b]
    for x, y in zip(a, b):
        assert (x.probs is None) == (y.probs is None)
        if x.probs is not None:
            torch.testing.assert_close(x.probs, y.probs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_proposal_in_one_call_equals_the_step_by_step_one(family, mode):
    sampling, confidence = MODES[mode]
    whole, steps = load_model(f"random-{family}-draft"), stepwise(load_model(f"random-{family}-draft"))
    request = PrefillRequest("r", random_frames(1), 4.0, "What moves?", sampling, draft_confidence=confidence)
    a, b = rounds(DraftWorker(whole), request, k=4), rounds(DraftWorker(steps), request, k=4)
    same(a, b)
    if confidence:
        assert any(len(p.tokens) < 4 for p in a), "the adaptive stop never ended a round early"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_proposal_in_one_call_stops_at_eos_mid_round(family):
    request = PrefillRequest("r", random_frames(2), 4.0, "What moves?", SamplingParams(max_tokens=48))
    probe = DraftWorker(load_model(f"random-{family}-draft"))
    probe.prefill(request)
    first = probe.propose("r", Commit(0, (5,)), 5).tokens
    eos = first[1]  # the draft's second token ends its round
    whole, steps = load_model(f"random-{family}-draft"), stepwise(load_model(f"random-{family}-draft"))
    for adapter in (whole, steps):
        adapter.eos_token_ids = frozenset({eos})
    a, b = rounds(DraftWorker(whole), request, k=5), rounds(DraftWorker(steps), request, k=5)
    same(a, b)
    assert a[0].tokens == first[: first.index(eos) + 1]


def test_the_compiled_draft_loop_equals_the_eager_step_path():
    """One graph per k, greedy and sampled, compiled at load: same proposals as eager steps."""
    spec = ModelSpec(name="random-qwen-draft", compile=True, draft_loops=(2,), sampled_draft_loops=True)
    compiled = load_model(spec)
    assert compiled.decoder.has_draft_loop(2, False, 2) and compiled.decoder.has_draft_loop(2, True, 2)
    assert not compiled.decoder.has_draft_loop(3, False, 2)  # other k run step by step
    for mode in ("greedy", "sampled"):
        sampling, _ = MODES[mode]
        request = PrefillRequest("r", random_frames(3), 4.0, "What moves?", sampling)
        a = rounds(DraftWorker(compiled), request, k=2)
        b = rounds(DraftWorker(stepwise(load_model("random-qwen-draft"))), request, k=2)
        same(a, b)
