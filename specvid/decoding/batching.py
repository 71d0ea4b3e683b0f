"""Calls of many requests to one worker, gathered into batched calls.

Every request's decode loop calls `propose` or `verify` on its own. A `Batcher` queues those
calls and runs whatever has gathered as one `propose_many` / `verify_many` (one forward per
step over all of them), the way continuous batching does: a call that arrives while a batch
runs joins the next one, and a call that finds the worker idle runs at once (after
`max_wait_s`, 0 by default), so one request alone pays nothing for batching.

Each caller gets its own entry of the batched result: a value, or the error its request met
(its session lost, its context full). An error of the batched call itself reaches every caller
of that batch.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Awaitable, Callable, Generic, Optional, Sequence, TypeVar

Call = TypeVar("Call")

RunMany = Callable[[list[Any]], Awaitable[Sequence[Any]]]


class Batcher(Generic[Call]):
    """Queues calls and runs them in batches of at most `max_batch` through `run_many`."""

    def __init__(
        self,
        run_many: RunMany,
        max_batch: int = 16,
        max_wait_s: float = 0.0,
        on_batch: Optional[Callable[[int, int], None]] = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run_many = run_many
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch or (lambda size, waiting: None)  # (batch size, calls left queued)
        self.sizes: Counter[int] = Counter()  # batches run, by size
        self._waiting: list[tuple[Call, asyncio.Future]] = []
        self._runner: Optional[asyncio.Task] = None

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def __call__(self, call: Call) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((call, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._run_batches())
        # A caller that is cancelled leaves its call in the batch (the worker's session state
        # must follow what ran); only the answer is dropped.
        result = await asyncio.shield(future)
        if isinstance(result, BaseException):
            raise result
        return result

    async def _run_batches(self) -> None:
        # Let every caller that is ready now (or within max_wait_s) join the first batch.
        await asyncio.sleep(self.max_wait_s)
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            self.sizes[len(batch)] += 1
            self.on_batch(len(batch), len(self._waiting))
            try:
                results = await self.run_many([call for call, _ in batch])
            except Exception as error:  # the batched call failed as a whole
                results = [error] * len(batch)
            except BaseException:  # the loop shuts down: no caller may wait forever
                for _, future in batch + self._waiting:
                    future.cancel()
                self._waiting = []  # nothing of a dead loop may run in the next one
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
