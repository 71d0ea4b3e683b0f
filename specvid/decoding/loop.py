"""The one speculative decoding loop, shared by the local engine and the Ray Serve router.

It talks to a drafter and a verifier through two small async protocols, so the same code
drives in-process workers and remote replicas. Autoregressive decoding (`ar`) is the same loop
with no drafts: every round verifies zero tokens and emits the target's next one.

Before the rounds, the target prefills (and, for SpecVLM, scores every video token); the draft
then prefills with the video tokens `decoding/prune.py` keeps. For LVSpec the target also learns
the loose rule at prefill and applies it in every verify; the loop itself is unchanged.

One round:
    propose  draft continues the committed tokens with k guesses
    verify   target scores pending token + k guesses in one forward, keeps n, adds 1
    commit   the n + 1 tokens reach each worker on its next call

Pipelined rounds (`DecodingConfig.pipeline`) keep the draft busy while the target verifies:
the draft takes its own proposal as accepted and drafts ahead, a guess at the target's next
token followed by the next round's k tokens. If the target accepts all k and picks that next
token, the next round's proposal is already there; otherwise it is discarded (the draft stops
at its next step once told the verdict) and the draft proposes from the committed tokens as
usual. Either way the target verifies what it would have verified, so the output is unchanged.

A worker that lost a request's session (a replica died, an LRU evicted it) is re-prefilled and
the committed tokens replayed. The target is restored before the round goes on; the draft is
restored in the background while the target decodes alone (k = 0 rounds), so losing the draft
costs speed for a moment, never a stall, and never changes a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import AsyncIterator, Optional, Protocol, Sequence

from specvid.config import DecodingConfig
from specvid.decoding.accept import Verdict
from specvid.decoding.prune import select_video_tokens
from specvid.decoding.session import (
    Commit,
    LooseVerification,
    PrefillRequest,
    PrefillResult,
    Proposal,
    VideoKeep,
)
from specvid.decoding.stats import SpecStats
from specvid.errors import SessionLostError, SpecVidError


class Drafter(Protocol):
    async def prefill(self, request: PrefillRequest, keep: Optional[VideoKeep]) -> int: ...
    async def propose(self, request_id: str, commit: Commit, k: int) -> Proposal: ...
    async def settle(self, request_id: str, base: int, verified: Sequence[int]) -> None: ...
    async def release(self, request_id: str) -> None: ...


class Verifier(Protocol):
    async def prefill(self, request: PrefillRequest) -> PrefillResult: ...
    async def verify(self, request_id: str, commit: Commit, proposal: Proposal) -> Verdict: ...
    async def release(self, request_id: str) -> None: ...


@dataclass
class _Ahead:
    """The draft's proposal for the next round, drafted while the target verifies this one."""

    base: int  # committed tokens it drafts after
    assumed: tuple[int, ...]  # this round's proposal, taken as accepted
    task: asyncio.Task  # -> Proposal: a guess at the target's next token, then up to k drafts

    async def claim(self, verified: list[int], stats: SpecStats) -> Optional[Proposal]:
        """The next round's proposal if the draft guessed this round's outcome (`verified`:
        accepted + next token), else None."""
        try:
            guess = await self.task
        except SpecVidError:
            return None  # the next proposal meets the same trouble and the loop handles it there
        stats.draft_compute_s += guess.compute_s
        stats.ahead_rounds += 1
        if len(guess.tokens) < 2 or list(self.assumed) + [guess.tokens[0]] != verified:
            return None
        stats.ahead_hits += 1
        return guess.after(1)

    async def discard(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


class _Peer:
    """The loop's view of one worker: how many committed tokens it has been told about."""

    def __init__(self):
        self.known = 0

    def commit(self, generated: list[int]) -> Commit:
        commit = Commit(self.known, tuple(generated[self.known :]))
        self.known = len(generated)
        return commit


async def decode(
    drafter: Optional[Drafter],
    verifier: Verifier,
    request: PrefillRequest,
    config: DecodingConfig,
    stats: SpecStats,
) -> AsyncIterator[list[int]]:
    """Yield newly emitted tokens after each round until a stop token or max_tokens.

    Stop tokens are not emitted. Sessions are released however the loop ends (including the
    consumer closing the generator early, e.g. on client disconnect). Requests arrive admitted
    (`specvid.pipeline.admit`): a drafter is given whenever the method uses one.
    """
    use_draft = config.uses_draft
    pipelined = use_draft and bool(config.pipeline)
    max_tokens = request.sampling.max_tokens
    rid = request.request_id
    draft, target = _Peer(), _Peer()
    started = time.perf_counter()
    request = dataclasses.replace(request, score_video=config.prunes_video, loose=LooseVerification.of(config),
                                  draft_confidence=config.draft_confidence)
    try:
        prefill = await verifier.prefill(request)
        stats.prompt_tokens, stats.video_tokens = prefill.prompt_tokens, prefill.video_tokens
        keep = None
        if use_draft:
            draft_started = time.perf_counter()
            keep = draft_keep(prefill, config)
            stats.prune_s = time.perf_counter() - draft_started
            stats.draft_context_tokens = await drafter.prefill(request, keep)
            stats.draft_prefill_s = time.perf_counter() - draft_started - stats.prune_s
            stats.draft_video_tokens = prefill.video_tokens if keep is None else int(keep.indices.numel())
        stats.prefill_s = time.perf_counter() - started
        decode_start = time.perf_counter()
        eos = frozenset() if request.sampling.ignore_eos else prefill.stop_token_ids
        stops = eos | frozenset(request.sampling.stop_token_ids)

        generated: list[int] = []
        pending = [prefill.first_token]
        draft_restore: Optional[asyncio.Task] = None  # re-prefilling a lost draft session
        ahead: Optional[_Ahead] = None  # pipelined: the next proposal, drafted during the verify
        while True:
            # Emit this round's tokens, cut at the first stop token or the token budget.
            emit, done = _truncate(pending, stops, max_tokens - len(generated))
            generated.extend(pending)
            stats.emitted += len(emit)
            stats.decode_s = time.perf_counter() - decode_start
            if emit:
                yield emit
            if done:
                return
            if draft_restore is not None and draft_restore.done():
                draft_restore = _after_restore(draft_restore, draft, stats, lambda: drafter.prefill(request, keep))
            # Draft k tokens (k = 0: plain autoregressive step); a round emits at most k + 1.
            drafting = use_draft and draft_restore is None
            k = min(config.num_draft_tokens, max_tokens - len(generated) - 1) if drafting else 0
            proposal = Proposal.empty()
            waited = time.perf_counter()
            if ahead is not None and k > 0:
                proposal = await ahead.claim(pending, stats) or proposal
            elif ahead is not None:
                await ahead.discard()
            ahead = None
            if k > 0 and not proposal.tokens:
                try:
                    proposal = await drafter.propose(rid, draft.commit(generated), k)
                    stats.draft_compute_s += proposal.compute_s
                except SessionLostError:
                    draft_restore = asyncio.ensure_future(drafter.prefill(request, keep))
            stats.draft_wait_s += time.perf_counter() - waited
            if use_draft and draft_restore is not None:
                stats.draftless_rounds += 1
            # After a full accept, the next round drafts this many tokens behind a guessed one.
            next_k = min(config.num_draft_tokens, max_tokens - len(generated) - len(proposal.tokens) - 2)
            if pipelined and proposal.tokens and next_k > 0 and proposal.tokens[-1] not in stops:
                commit = dataclasses.replace(draft.commit(generated), assumed=proposal.tokens)
                ahead = _Ahead(len(generated), proposal.tokens,
                               asyncio.ensure_future(drafter.propose(rid, commit, next_k + 1)))
            waited = time.perf_counter()
            verdict = await _with_restore(
                lambda: verifier.verify(rid, target.commit(generated), proposal),
                lambda: _restore(verifier.prefill(request), target, stats),
            )
            stats.target_wait_s += time.perf_counter() - waited
            stats.target_compute_s += verdict.compute_s
            stats.record_round(len(proposal.tokens), verdict.num_accepted, verdict.loose, verdict.rescued)
            pending = list(proposal.tokens[: verdict.num_accepted]) + [verdict.next_token]
            if ahead is not None:
                await drafter.settle(rid, ahead.base, pending)
    finally:
        if ahead is not None:
            await ahead.discard()
        if draft_restore is not None:
            draft_restore.cancel()
            with contextlib.suppress(BaseException):
                await draft_restore
        await verifier.release(rid)
        if use_draft:
            await drafter.release(rid)


def draft_keep(prefill: PrefillResult, config: DecodingConfig) -> Optional[VideoKeep]:
    """The video tokens the draft keeps: all (None) unless the method prunes."""
    if not config.prunes_video:
        return None
    if prefill.video_scores is None:
        raise RuntimeError("the target returned no video scores for a pruning method")
    indices = select_video_tokens(prefill.video_scores, config.drop_rate, config.attention_mass, config.pruning)
    return VideoKeep(indices, of=prefill.video_tokens, positions=config.draft_positions)


def _after_restore(task: asyncio.Task, peer: _Peer, stats: SpecStats, retry) -> Optional[asyncio.Task]:
    """A finished background restore: drafting resumes (None), or a failed one is tried again."""
    if task.exception() is not None:
        return asyncio.ensure_future(retry())  # still no draft: keep decoding without it
    peer.known = 0  # the next commit replays every committed token
    stats.sessions_restored += 1
    return None


async def _restore(prefill_call, peer: _Peer, stats: SpecStats) -> None:
    """Re-open a lost session; the next commit replays every committed token to it."""
    await prefill_call
    peer.known = 0
    stats.sessions_restored += 1


async def _with_restore(call, restore):
    """Run a worker call; if the worker lost the session, restore it once and retry."""
    try:
        return await call()
    except SessionLostError:
        await restore()
        return await call()


def _truncate(tokens: list[int], stops: frozenset[int], budget: int) -> tuple[list[int], bool]:
    """The part of `tokens` to emit, and whether generation ends here."""
    for i, token in enumerate(tokens[:budget]):
        if token in stops:
            return tokens[:i], True
    return tokens[:budget], len(tokens) >= budget
