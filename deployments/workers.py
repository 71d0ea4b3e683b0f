"""The draft and target deployments: Serve replicas that own the workers' actors.

Each replica starts one plain Ray actor that holds its worker (`DraftEngine`, `TargetEngine`):
the router resolves a replica's actor once per request (`endpoint`, through Serve's routing,
which balances requests over replicas) and then calls it directly every round. A Ray actor call
costs a fraction of a Serve handle call (measured in docs/serving.md), and a round makes two.
The Serve replica stays what Serve manages: health, restarts, replica counts, and the actor
shares its fate (it is the actor's owner; a dead actor fails the replica's health check).

`TargetEngine` holds a tensor-parallel group: with `tp_size` > 1 the replica starts one
`TargetRank` actor per bundle of its placement group and the engine broadcasts every call to
all of them (each rank runs the same work on its shard; rank 0 answers). With `tp_size` = 1
the engine runs the target itself.

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
from typing import Any, Optional

import numpy as np
import ray
from ray import serve
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from deployments.graphs import GraphSide
from deployments.metrics import BatchMetrics
from specvid.config import BatchingConfig, ModelSpec, parse
from specvid.decoding.batching import Batcher
from specvid.decoding.draft import DraftWorker
from specvid.decoding.session import Commit, PrefillRequest, Proposal, VideoKeep
from specvid.decoding.target import TargetWorker
from specvid.models.loader import load_model
from specvid.models.tensor_parallel import (
    default_backend,
    free_port,
    rank_environment,
    shard_language_model,
)

PORT_ATTEMPTS = 3


def _with_frames(request: PrefillRequest, frames: np.ndarray) -> PrefillRequest:
    """Frames travel as a separate object reference; put them back into the request."""
    return dataclasses.replace(request, frames=frames)


def _use_reserved_cpus() -> None:
    """Intra-op threads for this actor's forwards: as many as the CPUs it reserved (at least 1).

    Left alone, every actor's torch starts a thread per core of the node, and the draft, target
    and router processes of one machine then fight over the same cores (measured slower)."""
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    torch.set_num_threads(max(1, int(cpus)))


def _batcher(run_many, batching: Optional[dict], worker: str) -> Batcher:
    config = parse(BatchingConfig, batching or {})
    return Batcher(run_many, config.max_batch_size, config.max_wait_ms / 1e3, BatchMetrics(worker))


# ---- the actors on the data path ------------------------------------------------------------


@ray.remote
class DraftEngine(GraphSide):
    """A draft worker in its own actor: prefill, batched proposals, release."""

    def __init__(self, model: dict, max_sessions: int, batching: Optional[dict]):
        _use_reserved_cpus()
        self.worker = DraftWorker(load_model(parse(ModelSpec, model)), max_sessions)
        # Proposals of concurrent requests share each draft step's forward (`propose_many`).
        self._propose = _batcher(lambda calls: asyncio.to_thread(self.worker.propose_many, calls), batching, "draft")

    def run_many(self, calls: list) -> list:
        """A router's batched proposals over its compiled graph (run on the graph's thread)."""
        return self.worker.propose_many(calls)

    async def prefill(self, request: PrefillRequest, frames: np.ndarray, keep: Optional[VideoKeep] = None):
        return await asyncio.to_thread(self.worker.prefill, _with_frames(request, frames), keep)

    async def propose(self, request_id: str, commit: Commit, k: int) -> Proposal:
        return await self._propose((request_id, commit, k))

    async def settle(self, request_id: str, base: int, verified: tuple[int, ...]) -> None:
        # On the event loop, while a proposal drafted ahead runs in its thread: it reads this.
        self.worker.settle(request_id, base, verified)

    async def release(self, request_id: str) -> None:
        self.worker.release(request_id)

    async def describe(self) -> dict:
        return _describe(self.worker)

    async def ready(self) -> bool:
        return True


class _TargetCalls:
    """What a target rank answers: worker calls plus the facts the router asks for."""

    worker: TargetWorker

    def call(self, method: str, *args: Any) -> Any:
        return (
            getattr(self, method)(*args)
            if method in ("describe", "frame_size", "context")
            else getattr(self.worker, method)(*args)
        )

    def describe(self) -> dict:
        return _describe(self.worker)

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        return self.worker.model.frame_size(width, height)

    def context(self, prompt: str, frames: int, width: int, height: int) -> tuple[int, int]:
        """(context tokens of such a request before generation, the model's context window)."""
        model = self.worker.model
        return model.context_length(prompt, frames, width, height), model.max_positions


class _LocalTarget(_TargetCalls):
    def __init__(self, spec: ModelSpec, max_sessions: int):
        self.worker = TargetWorker(load_model(spec), max_sessions)


@ray.remote
class TargetRank(_TargetCalls):
    """One rank of a target's tensor-parallel group: a full `TargetWorker` over a shard."""

    def __init__(
        self, model: dict, rank: int, tp_size: int, master_addr: str, master_port: int, max_sessions: int
    ):
        _use_reserved_cpus()
        spec = parse(ModelSpec, model)
        os.environ.update(rank_environment(rank, tp_size, master_addr, master_port))
        os.environ.setdefault("DS_ACCELERATOR", "cpu" if spec.device == "cpu" else "cuda")
        adapter = load_model(spec)
        shard_language_model(adapter, tp_size, default_backend(spec.device))
        self.worker = TargetWorker(adapter, max_sessions)

    def ready(self) -> bool:
        return True


@ray.remote
class TargetEngine(GraphSide):
    """The target's data path: prefill, batched verifies, release; over a TP group or alone."""

    def __init__(self, model: dict, max_sessions: int, batching: Optional[dict], ranks: list):
        _use_reserved_cpus()
        self.ranks = ranks
        self.local = _LocalTarget(parse(ModelSpec, model), max_sessions) if not ranks else None
        # Verifies of concurrent requests share one forward (`verify_many`), on every rank alike.
        self._verify = _batcher(lambda calls: self._run("verify_many", calls), batching, "target")
        self._sweep = threading.Lock()  # plain calls and the graph's thread both submit to ranks

    async def _run(self, method: str, *args: Any) -> Any:
        if self.local is not None:
            # Forwards run off the event loop, so other calls still get answers meanwhile.
            return await asyncio.to_thread(self.local.call, method, *args)
        results = await asyncio.gather(*self._submit(method, *args))
        return results[0]

    def _submit(self, method: str, *args: Any) -> list:
        # Submitted in one sweep no other thread interleaves with, so every rank sees the calls
        # in the same order (the collectives inside the forward pair up); rank 0 answers.
        with self._sweep:
            return [rank.call.remote(method, *args) for rank in self.ranks]

    def run_many(self, calls: list) -> list:
        """A router's batched verifies over its compiled graph (run on the graph's thread)."""
        if self.local is not None:
            return self.local.call("verify_many", calls)
        return ray.get(self._submit("verify_many", calls))[0]

    async def prefill(self, request: PrefillRequest, frames: np.ndarray):
        return await self._run("prefill", _with_frames(request, frames))

    async def verify(self, request_id: str, commit: Commit, proposal: Proposal):
        return await self._verify((request_id, commit, proposal))

    async def release(self, request_id: str) -> None:
        await self._run("release", request_id)

    async def ask(self, method: str, *args: Any) -> Any:
        """`describe`, `frame_size` or `context` (see `_TargetCalls`)."""
        return await self._run(method, *args)

    async def ready(self) -> bool:
        if self.ranks:
            await asyncio.gather(*[rank.ready.remote() for rank in self.ranks])
        return True


# ---- the Serve replicas that own them --------------------------------------------------------


@serve.deployment(ray_actor_options={"num_cpus": 0})
class DraftServer:
    def __init__(self, model: dict, max_sessions: int = 64, batching: Optional[dict] = None,
                 resources: Optional[dict] = None):
        self.engine = DraftEngine.options(**(resources or {"num_cpus": 0})).remote(model, max_sessions, batching)
        ray.get(self.engine.ready.remote())  # loaded before the replica reports healthy

    async def endpoint(self):
        """This replica's draft actor, for a router to call directly."""
        return self.engine

    async def describe(self) -> dict:
        return await self.engine.describe.remote()

    async def check_health(self) -> None:
        await self.engine.ready.remote()  # not `describe`: that ships the tokenizer every time


@serve.deployment(ray_actor_options={"num_cpus": 0})
class TargetServer:
    def __init__(
        self,
        model: dict,
        tp_size: int = 1,
        max_sessions: int = 64,
        rank_resources: Optional[dict] = None,
        batching: Optional[dict] = None,
    ):
        spec = parse(ModelSpec, model)
        resources = rank_resources or {"num_cpus": 1}
        ranks = [] if tp_size == 1 else _start_group(spec, tp_size, max_sessions, resources)
        # Alone, the engine holds the model and its resources; over a group, it only coordinates.
        options = resources if tp_size == 1 else {"num_cpus": 0}
        self.engine = TargetEngine.options(**options).remote(model, max_sessions, batching, ranks)
        ray.get(self.engine.ready.remote())

    async def endpoint(self):
        """This replica's target actor, for a router to call directly."""
        return self.engine

    async def frame_size(self, width: int, height: int) -> tuple[int, int]:
        return await self.engine.ask.remote("frame_size", width, height)

    async def context(self, prompt: str, frames: int, width: int, height: int) -> tuple[int, int]:
        return await self.engine.ask.remote("context", prompt, frames, width, height)

    async def describe(self) -> dict:
        return await self.engine.ask.remote("describe")

    async def check_health(self) -> None:
        """Serve calls this periodically; a dead engine or rank makes the replica unhealthy, so
        Serve replaces it (and its group) instead of routing to a broken one."""
        await self.engine.ready.remote()


def _describe(worker) -> dict:
    model = worker.model
    return {
        "name": model.name,
        "family": model.family,
        "tokenizer": model.tokenizer,
        "tp_size": _world_size(),
    }


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _start_group(spec: ModelSpec, tp_size: int, max_sessions: int, resources: dict) -> list:
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
                **resources,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=rank
                ),
            ).remote(spec.model_dump(), rank, tp_size, address, port, max_sessions)
            for rank in range(tp_size)
        ]
        try:
            ray.get([rank.ready.remote() for rank in ranks])
            return ranks
        except ray.exceptions.RayActorError as e:  # e.g. the port was taken between probe and bind
            last_error = e
            for rank in ranks:
                ray.kill(rank)
    raise RuntimeError(f"could not start a tensor-parallel group of {tp_size}: {last_error}")
