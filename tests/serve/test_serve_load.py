"""Many clients at once: batched rounds give each the tokens it gets alone, and a burst past
the admission limits gets answers or 503 + Retry-After, never a hang or a dropped request."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.serve.conftest import app_args

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from deployments.app import build_app  # noqa: E402

HTTP_TIMEOUT = 120
METHODS = ("ar", "sd", "specvlm", "sd", "lvspec", "ar")


def _request(videos: dict, case: int, method: str, max_tokens: int = 24) -> dict:
    return {
        "video": videos["uris"][1 + case % 2],
        "prompt": f"Client {case}: what moves?",
        "sampling": {"max_tokens": max_tokens, "ignore_eos": True},
        "decoding": {"method": method},
    }


def test_concurrent_clients_get_what_each_gets_alone(app, local):
    requests_ = [_request(app["videos"], case, method) for case, method in enumerate(METHODS)]
    expected = [local.generate(r).token_ids for r in requests_]
    with ThreadPoolExecutor(len(requests_)) as pool:
        responses = list(pool.map(
            lambda r: requests.post(f"{app['url']}/v1/generate", json=r, timeout=HTTP_TIMEOUT), requests_))
    assert [r.status_code for r in responses] == [200] * len(requests_)
    assert [r.json()["token_ids"] for r in responses] == expected


@pytest.fixture
def tight(ray_cluster, videos):
    """An application that decodes 2 requests at once and queues 2 more, colocated as `make run`
    starts it (the admission gate is the router's in both deployments)."""
    args = app_args(videos, admission={"max_active": 2, "max_queued": 2, "retry_after_s": 3},
                    rank_resources={"num_cpus": 0}, colocate=True)
    serve.run(build_app(args), name="tight", route_prefix="/tight")
    yield f"{ray_cluster}/tight"
    serve.delete("tight")


BURST = 16


def test_a_burst_past_the_limits_gets_answers_or_503_with_retry_after(tight, videos, local):
    # Long requests (200 tokens each), so the first four still hold their places as the rest arrive.
    bodies = [_request(videos, case, "sd", max_tokens=200) for case in range(BURST)]
    bodies[1] = {**bodies[1], "stream": True}  # a streamed request is refused the same way

    def post(body):
        return requests.post(f"{tight}/v1/generate", json=body, timeout=HTTP_TIMEOUT)

    with ThreadPoolExecutor(BURST) as pool:
        responses = list(pool.map(post, bodies))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 4 and statuses.count(503) >= 1, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "3"
            assert response.json()["error"]["code"] == "overloaded"
        elif "text/event-stream" not in response.headers["content-type"]:
            assert len(response.json()["token_ids"]) == 200
    # Healthy after the burst, and a new request is served exactly.
    assert requests.get(f"{tight}/healthz", timeout=HTTP_TIMEOUT).status_code == 200
    after = post(bodies[0])
    assert after.status_code == 200
    assert after.json()["token_ids"] == local.generate(bodies[0]).token_ids


def test_a_refusal_pickles_with_its_retry_after():
    import pickle

    from specvid.errors import OverloadedError

    error = pickle.loads(pickle.dumps(OverloadedError("full", 2.5)))
    assert error.retry_after_s == 2.5 and error.headers == {"Retry-After": "3"}
    assert json.loads(json.dumps(error.to_dict()))["error"]["status"] == 503


def test_bench_serve_measures_a_deployment_and_its_overhead_over_local_engine(app, local):
    from specvid.bench import serving

    uris = list(app["videos"]["uris"].values())
    client = serving.HttpClient(app["url"])
    rows, alone = serving.run_levels(client, ["sd"], [1, 2], uris, "What moves?", max_tokens=12,
                                     requests_per_client=1, max_seconds=120, progress=lambda line: None)
    assert [(r["concurrency"], r["ok"], r["failed"]) for r in rows] == [(1, 2, 0), (2, 2, 0)]
    assert all(r["tokens_per_s"] > 0 and r["ttft_p50_ms"] <= r["latency_p50_ms"] for r in rows)
    reference = serving.EngineClient(local, {uri: local.load_video(uri) for uri in uris})
    [overhead] = serving.overhead_rows(alone, reference, uris, "What moves?", max_tokens=12)
    assert overhead["identical"] == 1.0 and overhead["requests"] == 2
    assert overhead["served_decode_tokens_per_s"] > 0 and overhead["local_decode_tokens_per_s"] > 0
