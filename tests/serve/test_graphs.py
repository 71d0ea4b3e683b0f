"""Compiled graphs to the worker actors: same answers as plain calls, one owner, and a clear
failure (a lost session) when the actor dies."""

from __future__ import annotations

import asyncio
import time

import pytest

from specvid.config import SamplingParams
from specvid.decoding.session import Commit, PrefillRequest
from specvid.errors import SessionLostError
from tests.helpers import random_frames
from tests.serve.conftest import PAIR, app_args

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from deployments.app import build_app  # noqa: E402
from deployments.graphs import Links  # noqa: E402
from deployments.args import DraftServerArgs  # noqa: E402
from deployments.workers import DraftActor  # noqa: E402


async def dead(actor, within_s: float = 30.0) -> None:
    """Return once calls to `actor` fail, bounded in time."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(actor.ready.remote(), 1.0)
        except (ray.exceptions.RayActorError, asyncio.TimeoutError):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the actor still answers {within_s} s after ray.kill")


def test_rounds_over_a_compiled_graph_equal_plain_calls_and_fail_cleanly(ray_cluster):
    engine = DraftActor.options(num_cpus=0).remote(DraftServerArgs(model=PAIR["draft"], max_sessions=8))
    frames = random_frames(3, 4)

    async def scenario():
        for rid in ("plain", "compiled"):
            request = PrefillRequest(rid, None, 4.0, "What moves?", SamplingParams(max_tokens=32))
            await engine.prefill.remote(request, frames)
        links, other = Links(max_batch=4, timeout_s=5.0), Links(max_batch=4)
        link = await links.opened(engine)
        assert link is not None
        assert await other.opened(engine) is None  # one graph per actor: the second router keeps plain calls

        plain = await engine.propose.remote("plain", Commit(0, (7, 8)), 5)
        compiled = await link.call(("compiled", Commit(0, (7, 8)), 5))
        assert compiled.tokens == plain.tokens and len(plain.tokens) == 5
        # Per-request errors come back as they do over plain calls.
        with pytest.raises(SessionLostError):
            await link.call(("nobody", Commit(0, (1,)), 2))
        assert not link.broken

        ray.kill(engine, no_restart=True)
        await dead(engine)  # ray.kill returns before the actor is gone
        with pytest.raises(SessionLostError):
            await link.call(("compiled", Commit(2, (9,)), 3))
        assert link.broken and links.get(engine) is None
        links.close()
        other.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))


@pytest.fixture(scope="module")
def compiled(ray_cluster, videos):
    """An application whose rounds take compiled graphs; deleted after, so no channel reader
    keeps spinning through the rest of the suite."""
    handle = serve.run(build_app(app_args(videos, compiled_graphs=True)), name="compiled", route_prefix="/compiled")
    yield handle
    serve.delete("compiled")


def test_served_rounds_over_compiled_graphs_give_the_local_tokens(compiled, videos, local):
    request = {"video": videos["uris"][2], "prompt": "What moves?", "sampling": {"max_tokens": 24},
               "decoding": {"method": "sd", "num_draft_tokens": 3, "draft_length": "fixed"}}
    expected = local.generate(request).token_ids
    first = compiled.generate.remote(request).result()["token_ids"]  # opens the links, on plain calls
    for deployment in ("DraftServer", "TargetServer"):
        actor = serve.get_deployment_handle(deployment, app_name="compiled").endpoint.remote().result()
        assert ray.get(actor.graph_owner.remote()) is not None, f"no router holds {deployment}'s graph"
    second = compiled.generate.remote(request).result()  # every round over the graphs
    assert first == second["token_ids"] == expected
    assert second["stats"]["ahead_rounds"] > 0  # drafting ahead too (the test application's setting)
