"""The draft and target deployments: Serve replicas that own the workers' actors.

Each replica starts one plain Ray actor that holds its worker (`DraftActor`, `TargetActor`):
the router resolves a replica's actor once per request (`endpoint`, through Serve's routing,
which balances requests over replicas) and then calls it directly every round. A Ray actor call
costs a fraction of a Serve handle call (measured in docs/serving.md), and a round makes two.
The Serve replica stays what Serve manages: health, restarts, replica counts, and the actor
shares its fate (it is the actor's owner; a dead actor fails the replica's health check).

`TargetActor` holds a tensor-parallel group: with `tp_size` > 1 the replica starts one
`TargetRank` actor per bundle of its placement group and the actor sends every call to all of
them (each rank runs the same work on its shard; rank 0 answers). With `tp_size` = 1 the actor
runs the target itself.

Sessions: a request's calls all reach the actor its prefill reached. If that actor is gone, or
its LRU evicted the session, the call raises `SessionLostError` and the router re-prefills
(on a live replica); the output does not change.

Model forwards run in worker threads (`asyncio.to_thread`), never on an actor's event loop;
the adapter's forward lock keeps them one at a time per model. Proposals and verifies of
concurrent requests are gathered by a `Batcher` into one `propose_many` / `verify_many` call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from typing import Any, Callable, Optional, TypeVar

import numpy as np
import ray
from ray import serve
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from deployments.args import DraftServerArgs, TargetServerArgs
from deployments.graphs import GraphSide
from deployments.metrics import BatchMetrics
from specvid.config import BatchingConfig, parse
from specvid.decoding.accept import Verdict
from specvid.decoding.batching import Batcher
from specvid.decoding.draft import DraftWorker
from specvid.decoding.session import Commit, PrefillRequest, PrefillResult, Proposal, VideoKeep
from specvid.decoding.target import TargetWorker
from specvid.models.loader import load_model
from specvid.models.tensor_parallel import (
    default_backend,
    free_port,
    rank_environment,
    shard_language_model,
)
from specvid.models.vision_share import TowerFeatures

PORT_ATTEMPTS = 3
T = TypeVar("T")


def _with_frames(request: PrefillRequest, frames: np.ndarray) -> PrefillRequest:
    """Frames travel as a separate object reference; put them back into the request."""
    return dataclasses.replace(request, frames=frames)


def _batcher(run_many, batching: BatchingConfig, worker: str) -> Batcher:
    return Batcher(run_many, batching.max_batch_size, batching.max_wait_ms / 1e3, BatchMetrics(worker))


# ---- the actors on the data path ------------------------------------------------------------


class WorkerActor(GraphSide):
    """What both worker actors share: threads sized to their CPUs, readiness, and the compiled
    graph a router may claim (`GraphSide`; the actor's `run_many` is its batched round method)."""

    def __init__(self):
        use_reserved_cpus()

    async def ready(self) -> bool:
        return True


@ray.remote
class DraftActor(WorkerActor):
    """A draft worker in its own actor: prefill, batched proposals, settle, release."""

    def __init__(self, args: DraftServerArgs):
        super().__init__()
        self.worker = DraftWorker(load_model(args.model), args.max_sessions)
        # Proposals of concurrent requests share each draft step's forward (`propose_many`).
        self._propose = _batcher(lambda calls: asyncio.to_thread(self.worker.propose_many, calls),
                                 args.batching, "draft")

    def run_many(self, calls: list) -> list:
        """A router's batched proposals over its compiled graph (run on the graph's thread)."""
        return self.worker.propose_many(calls)

    async def prefill(self, request: PrefillRequest, frames: np.ndarray, keep: Optional[VideoKeep] = None,
                      tower: Optional[TowerFeatures] = None) -> int:
        return await asyncio.to_thread(self.worker.prefill, _with_frames(request, frames), keep, tower)

    async def propose(self, request_id: str, commit: Commit, k: int) -> Proposal:
        return await self._propose((request_id, commit, k))

    async def settle(self, request_id: str, base: int, verified: tuple[int, ...]) -> None:
        # On the event loop, while a proposal drafted ahead runs in its thread: it reads this.
        self.worker.settle(request_id, base, verified)

    async def release(self, request_id: str) -> None:
        self.worker.release(request_id)

    async def describe(self) -> dict:
        return worker_facts(self.worker.model)


class TargetHost:
    """A target worker and the facts the router asks of the target: what the lone target actor,
    or each rank of a tensor-parallel group, holds."""

    def __init__(self, worker: TargetWorker):
        self.worker = worker

    def describe(self) -> dict:
        return worker_facts(self.worker.model)

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        return self.worker.model.frame_size(width, height)

    def context(self, prompt: str, frames: int, width: int, height: int) -> tuple[int, int]:
        """(context tokens of such a request before generation, the model's context window)."""
        model = self.worker.model
        return model.context_length(prompt, frames, width, height), model.max_positions


@ray.remote
class TargetRank:
    """One rank of a target's tensor-parallel group: a full `TargetWorker` over a shard."""

    def __init__(self, args: TargetServerArgs, rank: int, master_addr: str, master_port: int):
        use_reserved_cpus()
        spec = args.model
        os.environ.update(rank_environment(rank, args.tp_size, master_addr, master_port))
        os.environ.setdefault("DS_ACCELERATOR", "cpu" if spec.device == "cpu" else "cuda")
        adapter = load_model(spec)
        shard_language_model(adapter, args.tp_size, default_backend(spec.device))
        self.host = TargetHost(TargetWorker(adapter, args.max_sessions))

    def run(self, call: Callable[[TargetHost], T]) -> T:
        """`call` on this rank's share of the target (every rank gets the same calls)."""
        return call(self.host)

    def ready(self) -> bool:
        return True


@ray.remote
class TargetActor(WorkerActor):
    """The target's data path: prefill, batched verifies, release; over a TP group or alone."""

    def __init__(self, args: TargetServerArgs, ranks: list):
        super().__init__()
        self.ranks = ranks
        self.host = TargetHost(TargetWorker(load_model(args.model), args.max_sessions)) if not ranks else None
        # Verifies of concurrent requests share one forward (`verify_many`), on every rank alike.
        self._verify = _batcher(lambda calls: self._on_target(lambda host: host.worker.verify_many(calls)),
                                args.batching, "target")
        self._sweep = threading.Lock()  # plain calls and the graph's thread both submit to ranks

    async def _on_target(self, call: Callable[[TargetHost], T]) -> T:
        """`call` on the target: here, off the event loop (other calls still get answers
        meanwhile), or on every rank of the group, rank 0 answering."""
        if self.host is not None:
            return await asyncio.to_thread(call, self.host)
        return (await asyncio.gather(*self._submit(call)))[0]

    def _submit(self, call: Callable[[TargetHost], Any]) -> list:
        # Submitted in one sweep no other thread interleaves with, so every rank sees the calls
        # in the same order (the collectives inside the forward pair up).
        with self._sweep:
            return [rank.run.remote(call) for rank in self.ranks]

    def run_many(self, calls: list) -> list:
        """A router's batched verifies over its compiled graph (run on the graph's thread)."""
        if self.host is not None:
            return self.host.worker.verify_many(calls)
        return ray.get(self._submit(lambda host: host.worker.verify_many(calls)))[0]

    async def prefill(self, request: PrefillRequest, frames: np.ndarray) -> PrefillResult:
        request = _with_frames(request, frames)
        return await self._on_target(lambda host: host.worker.prefill(request))

    async def verify(self, request_id: str, commit: Commit, proposal: Proposal) -> Verdict:
        return await self._verify((request_id, commit, proposal))

    async def release(self, request_id: str) -> None:
        await self._on_target(lambda host: host.worker.release(request_id))

    async def describe(self) -> dict:
        return await self._on_target(TargetHost.describe)

    async def frame_size(self, width: int, height: int) -> tuple[int, int]:
        return await self._on_target(lambda host: host.frame_size(width, height))

    async def context(self, prompt: str, frames: int, width: int, height: int) -> tuple[int, int]:
        return await self._on_target(lambda host: host.context(prompt, frames, width, height))

    async def ready(self) -> bool:
        if self.ranks:
            await asyncio.gather(*[rank.ready.remote() for rank in self.ranks])
        return True


# ---- the Serve replicas that own them --------------------------------------------------------


class ActorOwner:
    """A Serve replica that owns one worker actor (`self.actor`): hands it to routers, answers
    for it, and is as healthy as it is."""

    actor: Any

    async def endpoint(self):
        """This replica's actor, for a router to call directly."""
        return self.actor

    async def describe(self) -> dict:
        return await self.actor.describe.remote()

    async def check_health(self) -> None:
        """Serve calls this periodically; a dead actor (or TP rank) makes the replica unhealthy,
        so Serve replaces it instead of routing to a broken one. Not `describe`: that ships the
        tokenizer every time."""
        await self.actor.ready.remote()


class TargetFacts(ActorOwner):
    """What a router asks of a replica whose actor holds the target, before any request runs."""

    async def frame_size(self, width: int, height: int) -> tuple[int, int]:
        return await self.actor.frame_size.remote(width, height)

    async def context(self, prompt: str, frames: int, width: int, height: int) -> tuple[int, int]:
        return await self.actor.context.remote(prompt, frames, width, height)


@serve.deployment(ray_actor_options={"num_cpus": 0})
class DraftServer(ActorOwner):
    def __init__(self, args: DraftServerArgs):
        args = parse(DraftServerArgs, args)
        self.actor = DraftActor.options(**args.resources.ray_options()).remote(args)
        ray.get(self.actor.ready.remote())  # loaded before the replica reports healthy


@serve.deployment(ray_actor_options={"num_cpus": 0})
class TargetServer(TargetFacts):
    def __init__(self, args: TargetServerArgs):
        args = parse(TargetServerArgs, args)
        ranks = [] if args.tp_size == 1 else _start_group(args)
        # Alone, the actor holds the model and its resources; over a group, it only coordinates.
        options = args.rank_resources.ray_options() if args.tp_size == 1 else {"num_cpus": 0}
        self.actor = TargetActor.options(**options).remote(args, ranks)
        ray.get(self.actor.ready.remote())


def use_reserved_cpus() -> int:
    """Intra-op threads for this actor's forwards: as many as the CPUs it reserved (at least 1).

    Left alone, every actor's torch starts a thread per core of the node, and the draft, target
    and router processes of one machine then fight over the same cores (measured slower)."""
    import torch

    cpus = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0)))
    torch.set_num_threads(cpus)
    return cpus


def worker_facts(model) -> dict:
    """What a worker's model is, for the router: name, family, tokenizer, TP size, tower digest."""
    return {"name": model.name, "family": model.family, "tokenizer": model.tokenizer, "tp_size": _world_size(),
            "vision_tower": model.tower_fingerprint}


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _start_group(args: TargetServerArgs) -> list:
    """Start `tp_size` ranks in this replica's placement group, retrying on a taken port."""
    group = get_current_placement_group()
    if group is None:
        raise RuntimeError("tp_size > 1 needs the replica's placement_group_bundles (see build_app)")
    address = ray.util.get_node_ip_address()
    last_error: Optional[BaseException] = None
    for _ in range(PORT_ATTEMPTS):
        port = free_port(address)
        ranks = [
            TargetRank.options(
                **args.rank_resources.ray_options(),
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank),
            ).remote(args, rank, address, port)
            for rank in range(args.tp_size)
        ]
        try:
            ray.get([rank.ready.remote() for rank in ranks])
            return ranks
        except ray.exceptions.RayActorError as e:  # e.g. the port was taken between probe and bind
            last_error = e
            for rank in ranks:
                ray.kill(rank)
    raise RuntimeError(f"could not start a tensor-parallel group of {args.tp_size}: {last_error}")
