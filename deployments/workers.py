"""The draft and target deployments: thin shims over `specvid.decoding` workers.

`DraftServer` holds draft sessions in one process. `TargetServer` holds a tensor-parallel
group: with `tp_size` > 1 it starts one `TargetRank` actor per bundle of its own placement
group and broadcasts every call to all of them (each rank runs the same work on its shard;
rank 0 answers). With `tp_size` = 1 the replica runs the target itself.

Session affinity: the router sends every call of a request with the request id as Serve's
multiplexed model id, so the calls of one request prefer the replica that holds its session.
If a call lands elsewhere (the replica died, or the LRU evicted the session) the worker raises
`SessionLostError` and the router re-prefills; the output does not change.

Model forwards run in worker threads (`asyncio.to_thread`), never on a replica's event loop;
the adapter's forward lock keeps them one at a time per model. Proposals and verifies of
concurrent requests are gathered by a `Batcher` into one `propose_many` / `verify_many` call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any, Optional

import numpy as np
import ray
from ray import serve
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

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

# Serve keeps this many request ids per replica for routing; sessions themselves live in the
# worker's own bounded LRU (`max_sessions`), which is what decides eviction.
AFFINITY_SLOTS = 4096
PORT_ATTEMPTS = 3


def _with_frames(request: PrefillRequest, frames: np.ndarray) -> PrefillRequest:
    """Frames travel as a separate object reference; put them back into the request."""
    return dataclasses.replace(request, frames=frames)


class _Affinity:
    """Registers a request id with Serve's multiplexed routing, so its next calls come here."""

    @serve.multiplexed(max_num_models_per_replica=AFFINITY_SLOTS)
    async def _pin(self, request_id: str) -> str:
        return request_id

    async def _pin_current(self) -> None:
        request_id = serve.get_multiplexed_model_id()
        if request_id:
            await self._pin(request_id)


def _batcher(run_many, batching: Optional[dict], worker: str) -> Batcher:
    config = parse(BatchingConfig, batching or {})
    return Batcher(run_many, config.max_batch_size, config.max_wait_ms / 1e3, BatchMetrics(worker))


@serve.deployment(ray_actor_options={"num_cpus": 0})
class DraftServer(_Affinity):
    def __init__(self, model: dict, max_sessions: int = 64, batching: Optional[dict] = None):
        spec = parse(ModelSpec, model)
        self.worker = DraftWorker(load_model(spec), max_sessions)
        # Proposals of concurrent requests share each draft step's forward (`propose_many`).
        self._propose = _batcher(lambda calls: asyncio.to_thread(self.worker.propose_many, calls), batching, "draft")

    async def prefill(self, request: PrefillRequest, frames: np.ndarray, keep: Optional[VideoKeep] = None):
        await self._pin_current()
        return await asyncio.to_thread(self.worker.prefill, _with_frames(request, frames), keep)

    async def propose(self, request_id: str, commit: Commit, k: int) -> Proposal:
        await self._pin_current()
        return await self._propose((request_id, commit, k))

    async def release(self, request_id: str) -> None:
        self.worker.release(request_id)

    async def describe(self) -> dict:
        return _describe(self.worker)


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
        spec = parse(ModelSpec, model)
        os.environ.update(rank_environment(rank, tp_size, master_addr, master_port))
        os.environ.setdefault("DS_ACCELERATOR", "cpu" if spec.device == "cpu" else "cuda")
        adapter = load_model(spec)
        shard_language_model(adapter, tp_size, default_backend(spec.device))
        self.worker = TargetWorker(adapter, max_sessions)

    def ready(self) -> bool:
        return True


@serve.deployment(ray_actor_options={"num_cpus": 0})
class TargetServer(_Affinity):
    def __init__(
        self,
        model: dict,
        tp_size: int = 1,
        max_sessions: int = 64,
        rank_resources: Optional[dict] = None,
        batching: Optional[dict] = None,
    ):
        spec = parse(ModelSpec, model)
        # Verifies of concurrent requests share one forward (`verify_many`), on every rank alike.
        self._verify = _batcher(lambda calls: self._run("verify_many", calls), batching, "target")
        self.local = _LocalTarget(spec, max_sessions) if tp_size == 1 else None
        self.ranks = (
            []
            if tp_size == 1
            else _start_group(spec, tp_size, max_sessions, rank_resources or {"num_cpus": 1})
        )

    async def _run(self, method: str, *args: Any) -> Any:
        if self.local is not None:
            # Forwards run off the event loop, so health checks and other calls still get answers.
            return await asyncio.to_thread(self.local.call, method, *args)
        # Submitted in one synchronous sweep, so every rank sees the calls in the same order
        # (the collectives inside the forward pair up); rank 0's answer stands for the group.
        refs = [rank.call.remote(method, *args) for rank in self.ranks]
        results = await asyncio.gather(*refs)
        return results[0]

    async def prefill(self, request: PrefillRequest, frames: np.ndarray):
        await self._pin_current()
        return await self._run("prefill", _with_frames(request, frames))

    async def verify(self, request_id: str, commit: Commit, proposal: Proposal):
        await self._pin_current()
        return await self._verify((request_id, commit, proposal))

    async def release(self, request_id: str) -> None:
        await self._run("release", request_id)

    async def frame_size(self, width: int, height: int) -> tuple[int, int]:
        return await self._run("frame_size", width, height)

    async def context(self, prompt: str, frames: int, width: int, height: int) -> tuple[int, int]:
        return await self._run("context", prompt, frames, width, height)

    async def describe(self) -> dict:
        return await self._run("describe")

    async def check_health(self) -> None:
        """Serve calls this periodically; a dead rank makes the whole group unhealthy, so
        Serve replaces the replica (and its group) instead of routing to a broken one."""
        if self.ranks:
            await asyncio.gather(*[rank.ready.remote() for rank in self.ranks])


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
