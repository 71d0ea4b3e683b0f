"""The one speculative decoding loop, shared by `LocalEngine` and the Ray Serve router.

It drives a drafter and a verifier through two small async protocols (`decoding/sides.py`), so
the same code runs in-process workers and remote replicas. Autoregressive decoding (`ar`) is the
same loop with no draft: every round verifies zero tokens and emits the target's next one.

Before the rounds both workers prefill: the draft after the target where it needs the target's
result (SpecVLM keeps the video tokens the target's attention scores, `decoding/prune.py`; a
draft with the target's vision tower takes its output), else both at once. For LVSpec the target
learns the loose rule at prefill and applies it in every verify; the loop is unchanged.

One round:
    propose  the draft continues the committed tokens with k guesses
    verify   the target scores the pending token + the k guesses in one forward, keeps n, adds 1
    emit     the n + 1 tokens; they reach each worker as commit info on its next call

What a round needs about each worker beyond that (restoring a lost session, drafting ahead,
timing) lives in the worker's side object, `TargetSide` / `DraftSide`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import AsyncIterator, Optional, Union

from specvid.config import DecodingConfig
from specvid.decoding.ahead import DraftAhead
from specvid.decoding.accept import Verdict
from specvid.decoding.draft_length import DraftLengths
from specvid.decoding.session import LooseVerification, PrefillRequest, Proposal
from specvid.decoding.sides import Drafter, DraftSide, NoDraft, TargetSide, Verifier, open_sessions, stop_tokens
from specvid.decoding.stats import SpecStats

__all__ = ["Drafter", "Verifier", "decode"]


async def decode(
    drafter: Optional[Drafter],
    verifier: Verifier,
    request: PrefillRequest,
    config: DecodingConfig,
    stats: SpecStats,
    lengths: Optional[DraftLengths] = None,
) -> AsyncIterator[list[int]]:
    """Yield the tokens each round emits, until a stop token (not emitted) or max_tokens.

    Both sessions are released however the loop ends, the consumer closing the generator early
    (a client went away) included. A drafter is given whenever the method uses one. `lengths`:
    the engine's draft-length chooser, shared by its requests (a private one if not given).
    """
    request = dataclasses.replace(request, score_video=config.prunes_video, loose=LooseVerification.of(config),
                                  draft_confidence=config.draft_confidence)
    lengths = DraftLengths() if lengths is None else lengths
    target, draft = TargetSide(verifier, request, stats), _draft_side(drafter, request, config, stats, lengths)
    max_tokens = request.sampling.max_tokens
    try:
        started = time.perf_counter()
        prefill = await open_sessions(target, draft)
        stats.prefill_s = time.perf_counter() - started
        stops = stop_tokens(request, prefill)
        decode_started = time.perf_counter()
        generated: list[int] = []
        pending = [prefill.first_token]
        last_verdict: Optional[float] = None
        with lengths.decoding_request():
            while True:
                # Emit: the round's tokens, cut at the first stop token or at the token budget.
                emit, done = _truncate(pending, stops, max_tokens - len(generated))
                generated.extend(pending)
                stats.record_emitted(len(emit), time.perf_counter() - decode_started)
                if emit:
                    yield emit
                if done:
                    return
                # Propose: k draft tokens (a round emits at most k + 1, within the budget), k
                # chosen for the requests decoding now unless the request pins it.
                k = _draft_length(config, lengths, max_tokens - len(generated) - 1)
                proposal = await draft.propose(generated, k)
                # Verify: one target forward over the pending token and the k drafts.
                verdict = await target.verify(generated, proposal)
                stats.record_round(len(proposal.tokens), verdict.num_accepted, verdict.loose, verdict.rescued, k)
                # A round's time runs verdict to verdict (the first round's start is not one).
                now = time.perf_counter()
                _measure(lengths, config, k, proposal, verdict, None if last_verdict is None else now - last_verdict)
                last_verdict = now
                # The accepted drafts and the target's own next token are the next round's output.
                pending = list(proposal.tokens[: verdict.num_accepted]) + [verdict.next_token]
                await draft.settle(pending)
    finally:
        await draft.close()
        await target.close()


def _draft_length(config: DecodingConfig, lengths: DraftLengths, budget: int) -> int:
    """This round's k: none for `ar`, the chooser's for an adaptive draft length, else the most."""
    cap = min(config.num_draft_tokens, budget) if config.uses_draft else 0
    return lengths.choose(config.method, cap) if config.adapts_draft_length else cap


def _measure(lengths: DraftLengths, config: DecodingConfig, k: int, proposal: Proposal, verdict: Verdict,
             round_s: Optional[float]) -> None:
    """What the round tells the chooser: the two batched forwards' costs, the acceptance, and
    the round's time (verdict to verdict) outside the forwards."""
    lengths.record_forward("draft", *proposal.batch, proposal.compute_s)
    lengths.record_forward("verify", *verdict.batch, verdict.compute_s)
    lengths.record_round(config.method, k, len(proposal.tokens), verdict.num_accepted, round_s,
                         proposal.compute_s + verdict.compute_s)


def _draft_side(drafter: Optional[Drafter], request: PrefillRequest, config: DecodingConfig,
                stats: SpecStats, lengths: DraftLengths) -> Union[NoDraft, DraftSide]:
    if not config.uses_draft:
        return NoDraft()
    side = DraftAhead if config.draft_ahead else DraftSide
    return side(drafter, request, config, stats, lengths)


def _truncate(tokens: list[int], stops: frozenset[int], budget: int) -> tuple[list[int], bool]:
    """The part of `tokens` to emit, and whether generation ends here."""
    for i, token in enumerate(tokens[:budget]):
        if token in stops:
            return tokens[:i], True
    return tokens[:budget], len(tokens) >= budget
