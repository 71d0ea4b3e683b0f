"""The Ray Serve application against `LocalEngine`: same tokens over handle, REST and OpenAI."""

from __future__ import annotations

import json

import pytest
import requests

from specvid.errors import SourceNotFoundError

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


PROMPT = "Describe what moves in the clip."
HTTP_TIMEOUT = 120


def request_for(app, seed: int, method: str, max_tokens: int = 24, **spec) -> dict:
    return {
        "video": app["videos"]["uris"][seed],
        "prompt": PROMPT,
        "sampling": {"max_tokens": max_tokens},
        "spec": {"method": method, "draft_length": "fixed", **spec},
    }


@pytest.mark.parametrize("method", ["ar", "sd", "specvlm", "lvspec+specvlm"])
def test_handle_generate_equals_local_engine(app, local, method):
    request = request_for(app, 1, method)
    expected = local.generate(request)
    got = app["handle"].generate.remote(request).result()
    assert got["token_ids"] == expected.token_ids
    assert got["text"] == expected.text
    assert got["stats"]["emitted"] == len(expected.token_ids)
    if method != "ar":
        assert got["stats"]["rounds"] == expected.stats.rounds
        assert got["stats"]["draft_video_tokens"] == expected.stats.draft_video_tokens
        assert got["stats"]["loose_accepts"] == expected.stats.loose_accepts
        # The test application drafts ahead, LocalEngine does not: same tokens either way.
        assert got["stats"]["ahead_rounds"] > 0 and expected.stats.ahead_rounds == 0
        assert 0.0 <= got["stats"]["draft_idle_share"] < 1.0 and 0.0 <= got["stats"]["target_idle_share"] < 1.0


def test_a_request_can_turn_draft_ahead_off(app, local):
    request = request_for(app, 1, "sd", max_tokens=32, draft_ahead=False)
    got = app["handle"].generate.remote(request).result()
    assert got["token_ids"] == local.generate(request).token_ids
    assert got["stats"]["ahead_rounds"] == 0


def test_handle_stream_equals_local_engine(app, local):
    request = request_for(app, 2, "sd", num_draft_tokens=3)
    expected = local.generate(request)
    events = list(app["handle"].options(stream=True).stream.remote(request))
    tokens = [t for event in events[:-1] for t in event["token_ids"]]
    assert tokens == expected.token_ids
    assert "".join(event["text"] for event in events[:-1]) == expected.text
    assert events[-1]["finish_reason"] == expected.finish_reason


@pytest.mark.parametrize("method", ["ar", "sd"])
def test_rest_generate_equals_local_engine(app, local, method):
    request = request_for(app, 2, method)
    expected = local.generate(request)
    response = requests.post(f"{app['url']}/v1/generate", json=request, timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_ids"] == expected.token_ids
    assert body["text"] == expected.text


def test_rest_generate_streams_server_sent_events(app, local):
    request = request_for(app, 1, "sd")
    expected = local.generate(request)
    with requests.post(
        f"{app['url']}/v1/generate", json={**request, "stream": True}, stream=True, timeout=HTTP_TIMEOUT
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: ") :] for line in response.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [t for c in chunks[:-1] for t in c["token_ids"]] == expected.token_ids
    assert chunks[-1]["finish_reason"] == expected.finish_reason
    assert chunks[-1]["stats"]["rounds"] >= 1


def test_openai_client_unchanged(app, local):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{app['url']}/v1", api_key="unused", timeout=HTTP_TIMEOUT)
    expected = local.generate(request_for(app, 1, "sd", max_tokens=20))
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": app["videos"]["uris"][1]}},
                {"type": "text", "text": PROMPT},
            ],
        },
    ]
    reply = client.chat.completions.create(model="specvid", messages=messages, max_tokens=20)
    assert reply.choices[0].message.content == expected.text
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.prompt_tokens > 0
    assert reply.model_extra["spec_decode"]["rounds"] >= 1

    stream = client.chat.completions.create(
        model="specvid", messages=messages, max_tokens=20, stream=True, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    for event in stream:
        if event.usage is not None:
            usage = event.usage
        for choice in event.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == expected.text
    assert finish == expected.finish_reason
    assert usage.completion_tokens == len(expected.token_ids)

    models = client.models.list()
    assert [m.id for m in models.data] == ["specvid"]


def test_healthz(app):
    response = requests.get(f"{app['url']}/healthz", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"video": "s3://{bucket}/missing.mp4", "prompt": "hi"}, 404, "source_not_found"),
        ({"video": "s3://other-bucket/clip1.mp4", "prompt": "hi"}, 403, "forbidden_source"),
        ({"video": "/etc/passwd", "prompt": "hi"}, 403, "forbidden_source"),
        ({"video": "{clip}", "prompt": "hi", "spec": {"method": "beam"}}, 400, "invalid_request"),
        ({"video": "{clip}", "prompt": ""}, 400, "invalid_request"),
        ({"video": "{clip}", "prompt": "hi", "sampling": {"max_tokens": 0}}, 400, "invalid_request"),
        ({"prompt": "hi"}, 400, "invalid_request"),
        (
            {"video": "{clip}", "prompt": "hi", "spec": {"method": "lvspec"}, "sampling": {"temperature": 1}},
            400,
            "invalid_request",
        ),
    ],
)
def test_bad_native_requests_get_json_errors(app, body, status, code):
    text = (
        json.dumps(body)
        .replace("{bucket}", app["videos"]["bucket"])
        .replace("{clip}", app["videos"]["uris"][1])
    )
    for stream in (False, True):
        payload = {**json.loads(text), "stream": stream}
        response = requests.post(f"{app['url']}/v1/generate", json=payload, timeout=HTTP_TIMEOUT)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code


def test_malformed_json_and_bad_chat_requests(app):
    url = app["url"]
    response = requests.post(f"{url}/v1/generate", data=b"{not json", timeout=HTTP_TIMEOUT)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
    video = {"type": "video_url", "video_url": {"url": app["videos"]["uris"][1]}}
    bad_chats = [
        [{"role": "user", "content": "no video here"}],
        [{"role": "user", "content": [video, video, {"type": "text", "text": "two videos"}]}],
        [
            {"role": "user", "content": [video, {"type": "text", "text": "q"}]},
            {"role": "assistant", "content": "a"},
        ],
        [{"role": "user", "content": [video]}],
    ]
    for messages in bad_chats:
        response = requests.post(
            f"{url}/v1/chat/completions", json={"messages": messages}, timeout=HTTP_TIMEOUT
        )
        assert response.status_code == 400, (messages, response.text)
        assert "error" in response.json()


def test_a_bad_request_does_not_disturb_a_good_one(app, local):
    request = request_for(app, 1, "sd")
    expected = local.generate(request)
    handle = app["handle"]
    good = handle.generate.remote(request)
    bad = handle.generate.remote({**request, "video": request["video"].replace("clip1", "nothing")})
    with pytest.raises(SourceNotFoundError):
        bad.result()
    assert good.result()["token_ids"] == expected.token_ids


def test_a_draft_with_the_targets_vision_tower_takes_its_output_over_the_wire(ray_cluster, videos, local):
    """Served, the target's tower output travels to the draft's replica: same tokens, no second
    encoding (a draft that is the target itself has its tower)."""
    from deployments.app import build_app
    from tests.serve.conftest import app_args

    args = app_args(videos, draft={"name": "random-qwen"})
    handle = serve.run(build_app(args), name="shared-tower", route_prefix="/shared-tower")
    try:
        request = {"video": videos["uris"][2], "prompt": PROMPT, "sampling": {"max_tokens": 24},
                   "decoding": {"method": "sd", "num_draft_tokens": 4, "draft_length": "fixed"}}
        got = handle.generate.remote(request).result()
        assert got["stats"]["vision_shared"] and got["stats"]["acceptance_rate"] > 0.9  # the target drafts itself
        assert got["token_ids"] == local.generate(request).token_ids
    finally:
        serve.delete("shared-tower")
