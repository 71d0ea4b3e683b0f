"""The decode loop's drafter and verifier over the workers' actors.

`specvid/decoding/loop.py` talks to workers through two small async protocols
(`specvid/decoding/sides.py`); these classes implement them with remote calls, so the router runs the very loop `LocalEngine` runs. What differs from
in-process calls:

- a request's prefill asks a replica of the deployment (through Serve's routing) for its
  worker actor, and every later call of the request goes to that actor directly: a Ray actor
  call per round instead of a Serve handle call, and the session is where the calls go;
- frames go to the actor once, as an object reference, not inside every message;
- a round's call (`propose`, `verify`) takes the router's compiled graph to that actor where
  there is one (`deployments/graphs.py`), a plain actor call otherwise;
- an actor that died mid-request looks to the loop like a worker that lost the session:
  `SessionLostError`, after which the loop re-prefills (on a live replica) and replays the
  committed tokens. Prefill itself is retried with back-off while Serve replaces the replica;
  a draft proposal that does not come back in time counts as lost too (the target goes on
  alone meanwhile).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import ray
from ray.serve.handle import DeploymentHandle

from deployments.graphs import Links
from specvid.decoding.accept import Verdict
from specvid.decoding.session import (
    Commit,
    PrefillRequest,
    PrefillResult,
    Proposal,
    VideoKeep,
)
from specvid.errors import SessionLostError, SpecVidError, UnavailableError
from specvid.models.vision_share import TowerFeatures

# A release never holds up the end of a request: a replica being replaced answers nothing.
RELEASE_TIMEOUT_S = 1.0
# Failures that mean "that replica is gone", not "the request is bad".
REPLICA_LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


def unwrap(error: BaseException) -> BaseException:
    """The SpecVid error a replica raised, if `error` carries one."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, SpecVidError) else error


class RemoteWorker:
    """One request's view of a worker deployment: the worker actor its prefill reached."""

    def __init__(self, handle: DeploymentHandle, frames: ray.ObjectRef, retry_s: float = 60.0,
                 links: Optional[Links] = None):
        self.handle = handle
        self.frames = frames
        self.retry_s = retry_s
        self.links = links
        self.actor: Optional[ray.actor.ActorHandle] = None

    async def _call(self, what: str, call: Callable[[Any], ray.ObjectRef]) -> Any:
        """`call(actor)` on the request's actor; a gone actor is a lost session."""
        if self.actor is None:
            raise SessionLostError(f"{what}: the request holds no session on this worker")
        try:
            return await call(self.actor)
        except REPLICA_LOST as e:
            self.actor = None  # the next prefill asks Serve for a live replica
            raise SessionLostError(
                f"{what}: the replica holding the session is gone ({type(e).__name__})"
            ) from None
        except ray.exceptions.RayTaskError as e:
            raise unwrap(e) from None

    async def _round_call(self, what: str, args: tuple, call: Callable[[Any], ray.ObjectRef]) -> Any:
        """A round's call (`propose` / `verify`): over the actor's compiled graph where this
        router holds one (`deployments/graphs.py`), else as `_call`."""
        link = self.links.get(self.actor) if self.links is not None and self.actor is not None else None
        if link is not None:
            return await link.call(args)
        return await self._call(what, call)

    async def _prefill(self, call: Callable[[Any], ray.ObjectRef]) -> Any:
        """Prefill on a replica's actor, retried while no replica can take it (one is being
        replaced)."""
        deadline, delay = time.monotonic() + self.retry_s, 0.1
        while True:
            try:
                if self.actor is None:
                    self.actor = await self.handle.endpoint.remote()
                return await self._call("prefill", call)
            except (SessionLostError, *REPLICA_LOST) as e:
                self.actor = None
                if time.monotonic() + delay > deadline:
                    raise UnavailableError(f"no replica could take the request: {e}") from None
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)

    async def release(self, request_id: str) -> None:
        if self.actor is None:
            return
        try:
            await asyncio.wait_for(self._call("release", lambda actor: actor.release.remote(request_id)),
                                   RELEASE_TIMEOUT_S)
        except (SpecVidError, TimeoutError):
            pass  # the replica is gone, and its sessions with it; or its LRU evicts the session later


class RemoteDrafter(RemoteWorker):
    """The draft replica. A proposal not answered within `propose_timeout_s` counts as a lost
    session: a replica that died is not always known dead at once, and the loop can go on with
    the target alone (lossless) while the draft comes back, rather than wait."""

    def __init__(self, *args: Any, propose_timeout_s: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.propose_timeout_s = propose_timeout_s

    async def prefill(self, request: PrefillRequest, keep: Optional[VideoKeep],
                      tower: Optional[TowerFeatures] = None) -> int:
        request = _without_frames(request)
        return await self._prefill(lambda actor: actor.prefill.remote(request, self.frames, keep, tower))

    async def propose(self, request_id: str, commit: Commit, k: int) -> Proposal:
        args = (request_id, commit, k)
        call = self._round_call("propose", args, lambda actor: actor.propose.remote(*args))
        try:
            return await asyncio.wait_for(call, self.propose_timeout_s)
        except TimeoutError:
            raise SessionLostError(f"propose: no answer within {self.propose_timeout_s} s") from None

    async def settle(self, request_id: str, base: int, verified: Sequence[int]) -> None:
        """Sent, not awaited: it only cuts short a proposal drafted ahead, and it names the round
        it is about (`base`), so arriving early or late changes no other call."""
        if self.actor is not None:
            self.actor.settle.remote(request_id, base, tuple(verified))


class RemoteVerifier(RemoteWorker):
    async def prefill(self, request: PrefillRequest) -> PrefillResult:
        request = _without_frames(request)
        return await self._prefill(lambda actor: actor.prefill.remote(request, self.frames))

    async def verify(self, request_id: str, commit: Commit, proposal: Proposal) -> Verdict:
        args = (request_id, commit, proposal)
        return await self._round_call("verify", args, lambda actor: actor.verify.remote(*args))


def _without_frames(request: PrefillRequest) -> PrefillRequest:
    return dataclasses.replace(request, frames=None)
