"""Draft-ahead rounds: the draft drafts the next round while the target verifies this one.

As soon as a round's proposal d_1..d_k exists, the draft takes it as accepted
(`Commit.assumed`), guesses the target's next token g and drafts the next round's k tokens
e_1..e_k after it. The next round uses e_1..e_k only if the target accepted all k drafts and
picked g: they are then exactly what the draft would have proposed, so the target verifies
what it would have verified and the output is unchanged. Otherwise they are discarded. The
verdict is told to the draft at once (`settle`), so a greedy round drafting ahead stops at its
next step once its path leaves the verified tokens (`decoding/draft.py`).

Off by default (`DecodingConfig.draft_ahead`, `AppArgs.draft_ahead`,
`LocalEngine(draft_ahead=...)`). It pays where draft and target run on devices of their own and
a round is mostly forward time; on two shared CPU cores the work drafted ahead and discarded
competes with the verify. Measured here (qwen-tiny, compiled, 48 tokens; docs/decoding.md): in
process a draft-ahead `sd` round takes 6.32 ms against 5.10 ms plain with one torch thread and
9.99 against 4.13 ms with two; served, 8 and 16 clients lose 14-17% of throughput
(docs/serving.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Optional

from specvid.decoding.session import Proposal
from specvid.decoding.sides import DraftSide
from specvid.decoding.stats import SpecStats
from specvid.errors import SpecVidError


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
            return None  # the next proposal meets the same trouble and the side handles it there
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


class DraftAhead(DraftSide):
    """A draft side whose every proposal starts drafting the round after it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ahead: Optional[_Ahead] = None
        self._verified: list[int] = []  # what the target verified in the last round

    async def _proposal(self, generated: list[int], k: int) -> Proposal:
        ahead, self._ahead = self._ahead, None
        proposal = None
        if ahead is not None and k > 0:
            proposal = await ahead.claim(self._verified, self.stats)
        elif ahead is not None:
            await ahead.discard()
        if proposal is None:
            proposal = await super()._proposal(generated, k)
        self._ahead = self._draft_after(generated, proposal, k)
        return proposal

    def _draft_after(self, generated: list[int], proposal: Proposal, k: int) -> Optional[_Ahead]:
        """Start drafting the round after `proposal`, taken as accepted, if one can follow it
        (with this round's draft length `k`)."""
        max_tokens = self.request.sampling.max_tokens
        # After a full accept, the next round drafts this many tokens behind a guessed one.
        next_k = min(k, max_tokens - len(generated) - len(proposal.tokens) - 2)
        if not proposal.tokens or next_k <= 0 or proposal.tokens[-1] in self.stop_tokens:
            return None
        commit = dataclasses.replace(self.peer.commit(generated), assumed=proposal.tokens)
        task = asyncio.ensure_future(self.drafter.propose(self.request.request_id, commit, next_k + 1))
        return _Ahead(len(generated), proposal.tokens, task)

    async def settle(self, verified: list[int]) -> None:
        self._verified = verified
        if self._ahead is not None:
            await self.drafter.settle(self.request.request_id, self._ahead.base, verified)

    async def close(self) -> None:
        if self._ahead is not None:
            await self._ahead.discard()
        await super().close()
