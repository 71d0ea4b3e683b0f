"""Replica loss mid-request and tensor parallelism: the answer must not change."""

from __future__ import annotations

import time

import pytest

from tests.serve.conftest import app_args

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from deployments.app import build_app  # noqa: E402

# Long enough (hundreds of one-token rounds) that the kill lands while the request runs.
LONG = {
    "sampling": {"max_tokens": 400, "ignore_eos": True},
    "decoding": {"method": "sd", "num_draft_tokens": 1, "draft_length": "fixed"},
    "prompt": "Go on.",
}
# The longest pause a lost draft may cause: the target decodes alone while the draft comes back.
DRAFT_LOSS_STALL_S = 3.0


def replica_of(deployment: str, app_name: str = "specvid"):
    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    names = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)
    ]
    assert len(names) == 1, names
    return ray.get_actor(names[0], namespace="serve")


def wait_healthy(app_name: str = "specvid", timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if serve.status().applications[app_name].status == "RUNNING":
            return
        time.sleep(0.5)
    raise AssertionError(f"{app_name} did not recover within {timeout_s} s")


@pytest.mark.parametrize("deployment", ["DraftServer", "TargetServer"])
def test_killing_a_replica_mid_request_keeps_the_answer(app, local, deployment):
    request = {"video": app["videos"]["uris"][1], **LONG}
    expected = local.generate(request)
    assert len(expected.token_ids) == 400

    events = app["handle"].options(stream=True).stream.remote(request)
    first = next(events)  # the request is running: prefill done, first round emitted
    ray.kill(replica_of(deployment), no_restart=True)
    rest, gaps, last = [], [], time.monotonic()
    for event in events:
        now = time.monotonic()
        rest.append(event)
        gaps.append(now - last)
        last = now

    tokens = first["token_ids"] + [t for event in rest[:-1] for t in event["token_ids"]]
    assert tokens == expected.token_ids
    stats = rest[-1]["stats"]
    if deployment == "DraftServer":
        assert stats["draftless_rounds"] >= 1  # the kill did land mid-request
        assert max(gaps) < DRAFT_LOSS_STALL_S, f"the longest pause was {max(gaps):.2f} s"
        print(f"draft lost: longest pause {max(gaps):.2f} s, {stats['draftless_rounds']} rounds without it")
    else:
        assert stats["sessions_restored"] >= 1  # the kill did land mid-request
    wait_healthy()


@pytest.fixture(scope="module")
def tp2(ray_cluster, videos):
    args = app_args(videos, tp_size=2, rank_resources={"num_cpus": 0.5})
    handle = serve.run(build_app(args), name="tp2", route_prefix="/tp2")
    yield handle
    serve.delete("tp2")


@pytest.mark.parametrize("method", ["ar", "sd"])
def test_tensor_parallel_two_ranks_equal_one(app, tp2, method):
    for seed in (1, 2):
        request = {
            "video": app["videos"]["uris"][seed],
            "prompt": "What happens?",
            "sampling": {"max_tokens": 24},
            "decoding": {"method": method},
        }
        one = app["handle"].generate.remote(request).result()
        two = tp2.generate.remote(request).result()
        assert two["token_ids"] == one["token_ids"]
    target = serve.get_deployment_handle("TargetServer", app_name="tp2")
    assert target.describe.remote().result()["tp_size"] == 2  # the group really is sharded
