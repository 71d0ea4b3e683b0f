"""Rounds over Ray Compiled Graphs: a router's low-latency path to a worker actor.

A plain Ray actor call costs about a millisecond of system overhead, and a round makes two
(docs/serving.md measures both). A compiled graph from the router to the actor's `run_many`
moves a call through shared-memory channels instead, a tenth of that. Ray lets an actor run one
compiled graph at a time, called only by the process that compiled it, so each worker actor
grants its graph to the first router that asks (`claim_graph`); any other router keeps the plain
calls. A router batches its own requests' calls (`Batcher`) and the graph runs one batched call
at a time, as the actor's own batcher does for plain calls.

A graph whose call fails or hangs (its actor died) fails that call's requests with
`SessionLostError`, so their loops restore the sessions elsewhere, and is not used again.

Off by default (`AppArgs.compiled_graphs`): Ray's channel readers spin while they wait, so the
router and each actor with a graph keep a core busy even when no request runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Optional

from ray.dag import InputNode

from specvid.decoding.batching import Batcher
from specvid.errors import SessionLostError

logger = logging.getLogger("ray.serve")

# A batched round call not answered within this means its actor is gone (a batch's forwards
# take milliseconds to a second); the link is dropped and its requests restore elsewhere.
EXECUTION_TIMEOUT_S = 30.0


class CompiledLink:
    """One worker actor's compiled graph, owned by this process: its round method (`propose` of
    a draft, `verify` of a target), batched."""

    def __init__(self, graph, max_batch: int, timeout_s: float):
        self.graph = graph
        self.timeout_s = timeout_s
        self.broken = False
        self._batcher = Batcher(self._run_many, max_batch)

    async def call(self, args: tuple) -> Any:
        return await self._batcher(args)

    async def _run_many(self, calls: list) -> list:
        try:
            # A killed actor does not always fail the execution at once: past the timeout it
            # counts as gone, so no request waits on a dead graph.
            return await asyncio.wait_for(self._execute(calls), self.timeout_s)
        except Exception as error:  # the actor is gone, or the graph with it
            self.broken = True
            asyncio.get_running_loop().run_in_executor(None, self.teardown)  # may block on a dead actor
            raise SessionLostError(f"the compiled graph to the worker failed ({type(error).__name__})") from None

    async def _execute(self, calls: list) -> list:
        return await (await self.graph.execute_async(calls))

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.graph.teardown()


class Links:
    """The compiled links of one router process, by worker actor; opened on first sight."""

    def __init__(self, max_batch: int, enabled: bool = True, timeout_s: float = EXECUTION_TIMEOUT_S):
        self.owner = uuid.uuid4().hex
        self.max_batch = max_batch
        self.enabled = enabled
        self.timeout_s = timeout_s
        self._links: dict[str, Optional[CompiledLink]] = {}
        self._opening: dict[str, asyncio.Task] = {}

    def get(self, actor) -> Optional[CompiledLink]:
        """The actor's link, if one is open and healthy; else None (the caller uses plain calls).

        The first sight of an actor starts opening its link in the background, so the request
        that met it goes on with plain calls meanwhile."""
        if not self.enabled:
            return None
        key = actor._actor_id.hex()
        if key not in self._links:
            self._links[key] = None
            self._opening[key] = asyncio.ensure_future(self._open(key, actor))
        link = self._links[key]
        return None if link is None or link.broken else link

    async def opened(self, actor) -> Optional[CompiledLink]:
        """`get` once the actor's link has finished opening (or failed to)."""
        self.get(actor)
        opening = self._opening.get(actor._actor_id.hex())
        if opening is not None:
            await opening
        return self.get(actor)

    async def _open(self, key: str, actor) -> None:
        try:
            if not await actor.claim_graph.remote(self.owner):
                return  # another router holds this actor's graph
            with InputNode() as call:
                dag = actor.run_many.bind(call)
            # Compiling blocks briefly (once per actor); it must run on this event loop.
            graph = dag.experimental_compile(enable_asyncio=True)
            self._links[key] = CompiledLink(graph, self.max_batch, self.timeout_s)
        except Exception as error:  # the actor went away, or graphs cannot run here
            logger.warning("no compiled graph to worker actor %s: %s", key, error)

    def close(self) -> None:
        for link in self._links.values():
            if link is not None and not link.broken:  # a broken one is torn down already
                link.teardown()
        self._links.clear()


class GraphSide:
    """Mixed into a worker actor: which router process, if any, owns its compiled graph. The
    actor provides `run_many(calls)`, the batched round method the graph calls."""

    _graph_owner: Optional[str] = None

    async def claim_graph(self, owner: str) -> bool:
        if self._graph_owner is None:
            self._graph_owner = owner
        return self._graph_owner == owner

    async def graph_owner(self) -> Optional[str]:
        return self._graph_owner
