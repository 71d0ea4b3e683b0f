"""The decode loop's view of its two workers for one request.

`decoding/loop.py` reads as propose -> verify -> emit; everything else a round needs about a
worker lives here, one object per side:

- `TargetSide`: the verifier's session. A lost session (a replica died, an LRU evicted it) is
  re-prefilled and the committed tokens replayed before the round goes on.
- `DraftSide`: the drafter's session. A lost draft session is restored in the background while
  the target decodes alone (rounds of k = 0), so losing the draft costs speed for a moment,
  never a stall, and never changes a token. A request that begins where the load makes every
  round draft nothing (adaptive draft length) opens its draft session the same way, once a
  round chooses to draft. `NoDraft` is the side of plain decoding (`ar`).
- `decoding/ahead.py`'s `DraftAhead`: a `DraftSide` that drafts the next round while the
  target verifies this one (off by default).

Each side times the loop's wait for its worker and counts what its worker computed, into the
request's `SpecStats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Optional, Protocol, Sequence, Union

from specvid.config import DecodingConfig
from specvid.decoding.accept import Verdict
from specvid.decoding.draft_length import DraftLengths
from specvid.decoding.prune import select_video_tokens
from specvid.decoding.session import Commit, PrefillRequest, PrefillResult, Proposal, VideoKeep
from specvid.decoding.stats import SpecStats
from specvid.errors import SessionLostError
from specvid.models.vision_share import TowerFeatures


class Drafter(Protocol):
    """A draft worker, in process or remote."""

    async def prefill(self, request: PrefillRequest, keep: Optional[VideoKeep],
                      tower: Optional[TowerFeatures] = None) -> int: ...
    async def propose(self, request_id: str, commit: Commit, k: int) -> Proposal: ...
    async def settle(self, request_id: str, base: int, verified: Sequence[int]) -> None: ...
    async def release(self, request_id: str) -> None: ...


class Verifier(Protocol):
    """A target worker, in process or remote."""

    async def prefill(self, request: PrefillRequest) -> PrefillResult: ...
    async def verify(self, request_id: str, commit: Commit, proposal: Proposal) -> Verdict: ...
    async def release(self, request_id: str) -> None: ...


class Peer:
    """How many committed tokens a worker has been told about."""

    def __init__(self):
        self.known = 0

    def commit(self, generated: list[int]) -> Commit:
        """The committed tokens the worker has not heard of yet, to ride on its next call."""
        commit = Commit(self.known, tuple(generated[self.known :]))
        self.known = len(generated)
        return commit

    def forget(self) -> None:
        """The worker's session was re-opened: the next commit replays every committed token."""
        self.known = 0


class TargetSide:
    def __init__(self, verifier: Verifier, request: PrefillRequest, stats: SpecStats):
        self.verifier, self.request, self.stats = verifier, request, stats
        self.peer = Peer()

    async def prefill(self) -> PrefillResult:
        result = await self.verifier.prefill(self.request)
        self.stats.prompt_tokens, self.stats.video_tokens = result.prompt_tokens, result.video_tokens
        return result

    async def verify(self, generated: list[int], proposal: Proposal) -> Verdict:
        """The target's verdict on `proposal` after the committed tokens `generated`."""
        waited = time.perf_counter()
        try:
            verdict = await self._verify(generated, proposal)
        except SessionLostError:
            await self.verifier.prefill(self.request)
            self.peer.forget()
            self.stats.sessions_restored += 1
            verdict = await self._verify(generated, proposal)
        self.stats.target_wait_s += time.perf_counter() - waited
        self.stats.target_compute_s += verdict.compute_s
        return verdict

    async def _verify(self, generated: list[int], proposal: Proposal) -> Verdict:
        return await self.verifier.verify(self.request.request_id, self.peer.commit(generated), proposal)

    async def close(self) -> None:
        await self.verifier.release(self.request.request_id)


class NoDraft:
    """The draft side of plain autoregressive decoding: every round proposes nothing."""

    needs_target = False

    async def prefill(self, target: Optional[PrefillResult]) -> None:
        pass

    def started(self, target: PrefillResult) -> None:
        pass

    async def propose(self, generated: list[int], k: int) -> Proposal:
        return Proposal.empty()

    async def settle(self, verified: list[int]) -> None:
        pass

    async def close(self) -> None:
        pass


class DraftSide:
    def __init__(self, drafter: Drafter, request: PrefillRequest, config: DecodingConfig, stats: SpecStats,
                 lengths: Optional[DraftLengths] = None):
        self.drafter, self.request, self.config, self.stats = drafter, request, config, stats
        self.lengths = lengths
        self.peer = Peer()
        self.keep: Optional[VideoKeep] = None
        self.stop_tokens: frozenset[int] = frozenset()
        self.tower: Optional[TowerFeatures] = None  # the target's vision tower output, if shared
        self._restoring: Optional[asyncio.Task] = None  # re-prefilling a lost session, or opening a deferred one
        self._deferred = False  # no session yet: the request began where no round would draft
        self._opening_deferred = False  # `_restoring` opens a deferred session (not a restore)

    @property
    def needs_target(self) -> bool:
        """Whether the draft's prefill needs the target's: SpecVLM prunes by its scores, a shared
        vision tower hands over its output. Otherwise both prefill at the same time."""
        return self.config.prunes_video or self.request.share_vision

    async def prefill(self, target: Optional[PrefillResult]) -> None:
        """Open the draft's session (after the target's, given its result, if `needs_target`)."""
        started = time.perf_counter()
        if target is not None:
            self.keep, self.tower = draft_keep(target, self.config), target.tower_features
        self.stats.prune_s = time.perf_counter() - started
        self.stats.vision_shared = self.tower is not None
        if self._no_round_would_draft():
            self._deferred = self.stats.draft_deferred = True
            return
        self.stats.draft_context_tokens = await self._prefill()
        self.stats.draft_prefill_s = time.perf_counter() - started - self.stats.prune_s

    def _no_round_would_draft(self) -> bool:
        """Whether the load makes the first rounds of this request draft nothing (adaptive draft
        length): its draft prefill then waits until a round chooses to draft."""
        if self.lengths is None or not self.config.adapts_draft_length:
            return False
        return not self.lengths.would_draft(self.config.method, self.config.num_draft_tokens, joining=1)

    def started(self, target: PrefillResult) -> None:
        """Both sessions are open: what the rounds need from the target's prefill."""
        self.stats.draft_video_tokens = target.video_tokens if self.keep is None else int(self.keep.indices.numel())
        self.stop_tokens = stop_tokens(self.request, target)

    async def propose(self, generated: list[int], k: int) -> Proposal:
        """Up to k drafts continuing `generated`; none while a lost session is being restored."""
        waited = time.perf_counter()
        if self._deferred and k > 0:  # the load fell: open the draft's session, meanwhile decode alone
            self._deferred, self._opening_deferred = False, True
            self._restoring = asyncio.ensure_future(self._prefill())
        proposal = await self._proposal(generated, k if self._session_ready() else 0)
        self.stats.draft_wait_s += time.perf_counter() - waited
        if self._restoring is not None or self._deferred:
            self.stats.draftless_rounds += 1
        return proposal

    async def settle(self, verified: list[int]) -> None:
        """The target verified `verified` (accepted drafts + its next token) this round."""

    async def close(self) -> None:
        if self._restoring is not None:
            self._restoring.cancel()
            with contextlib.suppress(BaseException):
                await self._restoring
        await self.drafter.release(self.request.request_id)

    async def _proposal(self, generated: list[int], k: int) -> Proposal:
        if k == 0:
            return Proposal.empty()
        try:
            proposal = await self.drafter.propose(self.request.request_id, self.peer.commit(generated), k)
        except SessionLostError:
            self._restoring = asyncio.ensure_future(self._prefill())
            return Proposal.empty()
        self.stats.draft_compute_s += proposal.compute_s
        return proposal

    def _session_ready(self) -> bool:
        """Whether the draft holds a session; a finished restore resumes drafting (or, failed,
        is tried again)."""
        task = self._restoring
        if task is not None and task.done():
            if task.exception() is not None:
                self._restoring = asyncio.ensure_future(self._prefill())  # still no draft: decode without it
            else:
                self._restoring = None
                self.peer.forget()
                self.stats.sessions_restored += 0 if self._opening_deferred else 1
                self._opening_deferred = False
        return self._restoring is None and not self._deferred

    async def _prefill(self) -> int:
        return await self.drafter.prefill(self.request, self.keep, self.tower)


async def open_sessions(target: TargetSide, draft: Union[DraftSide, NoDraft]) -> PrefillResult:
    """Prefill both workers: the draft after the target where it needs the target's result,
    else both at once (on two replicas they overlap). Both calls finish before an error of
    either is raised, so no session opens after the loop has released them."""
    if draft.needs_target:
        result = await target.prefill()
        await draft.prefill(result)
    else:
        result, drafted = await asyncio.gather(target.prefill(), draft.prefill(None), return_exceptions=True)
        for outcome in (result, drafted):
            if isinstance(outcome, BaseException):
                raise outcome
    draft.started(result)
    return result


def draft_keep(prefill: PrefillResult, config: DecodingConfig) -> Optional[VideoKeep]:
    """The video tokens the draft keeps: all (None) unless the method prunes."""
    if not config.prunes_video:
        return None
    if prefill.video_scores is None:
        raise RuntimeError("the target returned no video scores for a pruning method")
    indices = select_video_tokens(prefill.video_scores, config.drop_rate, config.attention_mass, config.pruning)
    return VideoKeep(indices, of=prefill.video_tokens, positions=config.draft_positions)


def stop_tokens(request: PrefillRequest, target: PrefillResult) -> frozenset[int]:
    """Tokens that end generation: the model's EOS tokens (unless ignored) and the request's own."""
    eos = frozenset() if request.sampling.ignore_eos else target.stop_token_ids
    return eos | frozenset(request.sampling.stop_token_ids)
