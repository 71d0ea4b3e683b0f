"""Admission control: at most `max_active` requests decode at once, at most `max_queued` wait.

A request beyond both is refused at once with `OverloadedError` (HTTP 503 with `Retry-After`),
before its video is fetched: under a burst, every client gets either its answer or a quick,
explicit "try again", and the requests already admitted keep their pace. A queued request
waits in arrival order; its wait counts towards its own time limit.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from specvid.config import AdmissionLimits
from specvid.errors import OverloadedError


class AdmissionGate:
    """Counts requests in and out of one replica; refuses those beyond its limits."""

    def __init__(self, limits: AdmissionLimits = AdmissionLimits()):
        self.limits = limits
        self.active = 0
        self.queued = 0
        self._slots = asyncio.Semaphore(limits.max_active)

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold one of the `max_active` places while the block runs (waiting for it if needed)."""
        if self.active + self.queued >= self.limits.max_active + self.limits.max_queued:
            raise OverloadedError(
                f"the deployment is at its limit ({self.active} requests decoding, {self.queued} queued; "
                f"admission.max_active={self.limits.max_active}, admission.max_queued={self.limits.max_queued}); "
                f"retry in {self.limits.retry_after_s:g} s",
                self.limits.retry_after_s,
            )
        self.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self._slots.release()
