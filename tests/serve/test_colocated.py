"""The colocated application (draft, target and loop in one engine process) against `LocalEngine`."""

from __future__ import annotations

import json

import pytest
import requests

from specvid.errors import ContextLengthError, SourceNotFoundError

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

PROMPT = "Describe what moves in the clip."
HTTP_TIMEOUT = 120
ROUTE = "/colocated"


@pytest.fixture(scope="module")
def colocated(ray_cluster, videos):
    from deployments.app import build_app
    from tests.serve.conftest import app_args

    args = app_args(videos, colocate=True, draft_ahead=False)
    handle = serve.run(build_app(args), name="colocated", route_prefix=ROUTE)
    yield {"handle": handle, "url": ray_cluster + ROUTE, "videos": videos}
    serve.delete("colocated")


def request_for(videos, seed: int, method: str, max_tokens: int = 24, **decoding) -> dict:
    return {"video": videos["uris"][seed], "prompt": PROMPT, "sampling": {"max_tokens": max_tokens},
            "decoding": {"method": method, **decoding}}


@pytest.mark.parametrize("method", ["ar", "sd", "specvlm"])
def test_handle_generate_equals_local_engine(colocated, local, method):
    request = request_for(colocated["videos"], 1, method, draft_length="fixed")
    expected = local.generate(request)
    got = colocated["handle"].generate.remote(request).result()
    assert got["token_ids"] == expected.token_ids
    assert got["text"] == expected.text
    assert got["stats"]["rounds"] == expected.stats.rounds  # the engine's stats reach the caller
    assert got["stats"]["draft_video_tokens"] == expected.stats.draft_video_tokens
    assert got["stats"]["rounds_by_draft_length"] == expected.stats.rounds_by_draft_length


def test_an_adaptive_draft_length_keeps_the_tokens(colocated, local):
    request = request_for(colocated["videos"], 2, "sd", max_tokens=32)
    got = colocated["handle"].generate.remote(request).result()
    assert got["token_ids"] == local.generate({**request, "decoding": {"method": "ar"}}).token_ids
    assert sum(got["stats"]["rounds_by_draft_length"]) == got["stats"]["rounds"]


def test_rest_stream_and_openai_equal_local_engine(colocated, local):
    openai = pytest.importorskip("openai")
    request = request_for(colocated["videos"], 1, "sd", max_tokens=20)
    expected = local.generate(request)
    with requests.post(f"{colocated['url']}/v1/generate", json={**request, "stream": True}, stream=True,
                       timeout=HTTP_TIMEOUT) as response:
        assert response.status_code == 200
        events = [line[len("data: "):] for line in response.iter_lines(decode_unicode=True) if line]
    chunks = [json.loads(e) for e in events[:-1]]
    assert [t for c in chunks[:-1] for t in c["token_ids"]] == expected.token_ids
    assert "".join(c["text"] for c in chunks[:-1]) == expected.text
    client = openai.OpenAI(base_url=f"{colocated['url']}/v1", api_key="unused", timeout=HTTP_TIMEOUT)
    messages = [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": colocated["videos"]["uris"][1]}},
        {"type": "text", "text": PROMPT}]}]
    reply = client.chat.completions.create(model="specvid", messages=messages, max_tokens=20)
    assert reply.choices[0].message.content == expected.text


def test_errors_of_the_engine_reach_the_caller_typed(colocated):
    videos = colocated["videos"]
    missing = {**request_for(videos, 1, "sd"), "video": videos["uris"][1].replace("clip1", "nothing")}
    with pytest.raises(SourceNotFoundError):
        colocated["handle"].generate.remote(missing).result()
    response = requests.post(f"{colocated['url']}/v1/generate", json={**missing, "stream": True}, timeout=HTTP_TIMEOUT)
    assert response.status_code == 404 and response.json()["error"]["code"] == "source_not_found"
    too_long = request_for(videos, 1, "sd", max_tokens=8192)
    with pytest.raises(ContextLengthError):
        colocated["handle"].generate.remote(too_long).result()
    assert requests.get(f"{colocated['url']}/healthz", timeout=HTTP_TIMEOUT).json() == {"status": "ok"}


def test_a_client_that_goes_away_frees_its_sessions(colocated):
    request = request_for(colocated["videos"], 2, "sd", max_tokens=200, draft_length="fixed")
    request["sampling"]["ignore_eos"] = True
    with requests.post(f"{colocated['url']}/v1/generate", json={**request, "stream": True}, stream=True,
                       timeout=HTTP_TIMEOUT) as response:
        next(response.iter_lines())  # the first round arrived; then the client hangs up
    actor = serve.get_deployment_handle("EngineServer", "colocated").endpoint.remote().result()
    assert _sessions_freed(actor)


def _sessions_freed(actor, timeout_s: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.get(actor.sessions.remote()) == (0, 0):
            return True
        time.sleep(0.2)
    return False
