"""Bad input against the running application: every kind gets a 4xx JSON error, fast, and leaves
the service healthy and its answers unchanged.

Each case checks the status, the project's error code, a time bound, `/healthz` after, and that a
good request still gets the very tokens it got before any bad input arrived.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field

import av
import boto3
import numpy as np
import pytest
import requests

from tests.serve.conftest import TEST_API_KEY as KEY
from tests.serve.conftest import TEST_API_KEY_ENV as API_KEY_ENV
from tests.serve.conftest import clip_bytes

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from deployments.app import build_app  # noqa: E402
from tests.serve.conftest import app_args  # noqa: E402

FAST_S = 1.0  # refusals that need no video are answered well under a second
DECODE_S = 10.0  # refusals found while fetching or decoding


@dataclass
class Case:
    name: str
    status: int
    code: str
    body: object = None  # JSON body, or bytes sent as they are
    path: str = "/v1/generate"
    method: str = "POST"
    headers: dict = field(default_factory=dict)
    within_s: float = FAST_S


def audio_only_mp4() -> bytes:
    """A real mp4 with one AAC audio stream and no video."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32)[None]
        for start in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bad_objects(app):
    """Media that is not a usable video, uploaded beside the good clips."""
    videos = app["videos"]
    s3 = boto3.client("s3", endpoint_url=videos["endpoint"])
    good = clip_bytes(3)
    objects = {
        "corrupt.mp4": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated.mp4": good[: len(good) // 3],
        "empty.mp4": b"",
        "notes.txt": b"this is not a video\n" * 20,
        "audio.mp4": audio_only_mp4(),
    }
    for key, data in objects.items():
        s3.put_object(Bucket=videos["bucket"], Key=key, Body=data)
    return {key: f"s3://{videos['bucket']}/{key}" for key in objects}


def good_request(app) -> dict:
    return {
        "video": app["videos"]["uris"][1],
        "prompt": "What moves?",
        "sampling": {"max_tokens": 8},
        "decoding": {"method": "sd"},
    }


def chat(app, **overrides) -> dict:
    body = {
        "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": app["videos"]["uris"][1]}},
            {"type": "text", "text": "What moves?"},
        ]}],
        "max_tokens": 8,
    }
    body.update(overrides)
    return body


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def cases(app, bad: dict) -> list[Case]:
    good = good_request(app)

    def native(**changes) -> dict:
        body = json.loads(json.dumps(good))
        for key, value in changes.items():
            section, _, name = key.partition("__")
            if name:
                body.setdefault(section, {})[name] = value
            elif value is None:
                body.pop(section)
            else:
                body[section] = value
        return body

    bucket = app["videos"]["bucket"]
    return [
        # media that is not a usable video
        Case("corrupt bytes", 400, "invalid_video", native(video=bad["corrupt.mp4"]), within_s=DECODE_S),
        Case("truncated mp4", 400, "invalid_video", native(video=bad["truncated.mp4"]), within_s=DECODE_S),
        Case("empty file", 400, "invalid_video", native(video=bad["empty.mp4"]), within_s=DECODE_S),
        Case("text file", 400, "invalid_video", native(video=bad["notes.txt"]), within_s=DECODE_S),
        Case("audio only", 400, "invalid_video", native(video=bad["audio.mp4"]), within_s=DECODE_S),
        # sizes refused before any download
        Case("giant frames", 413, "too_large",
             native(video_sampling={"num_frames": 256, "width": 4096, "height": 4096})),
        Case("too many frames", 413, "too_large", native(video_sampling={"num_frames": 1024})),
        # As OpenAI's API and vLLM answer it: a 400 the client can fix by asking for fewer tokens.
        Case("context past the model", 400, "context_too_long", native(sampling__max_tokens=8192)),
        Case("prompt too long", 400, "invalid_request", native(prompt="x" * 9000)),
        # sources
        Case("missing key", 404, "source_not_found", native(video=f"s3://{bucket}/nope.mp4"), within_s=DECODE_S),
        Case("bucket not allowed", 403, "forbidden_source", native(video="s3://someone-elses/clip.mp4")),
        Case("metadata endpoint", 403, "forbidden_source", native(video="http://169.254.169.254/latest/meta-data/")),
        Case("https not allowlisted", 403, "forbidden_source", native(video="https://example.com/clip.mp4")),
        Case("file url", 403, "forbidden_source", native(video="file:///etc/passwd")),
        Case("path traversal", 403, "forbidden_source", native(video="../../../../etc/passwd")),
        Case("absolute local path", 403, "forbidden_source", native(video="/etc/passwd")),
        Case("unknown scheme", 400, "invalid_request", native(video="ftp://host/clip.mp4")),
        # parameters
        Case("NaN temperature", 400, "invalid_request",
             b'{"video": "%s", "prompt": "hi", "sampling": {"temperature": NaN}}' % good["video"].encode()),
        Case("negative temperature", 400, "invalid_request", native(sampling__temperature=-1)),
        Case("mistyped max_tokens", 400, "invalid_request", native(sampling__max_tokens="many")),
        Case("zero draft tokens", 400, "invalid_request", native(decoding__num_draft_tokens=0)),
        Case("unknown method", 400, "invalid_request", native(decoding__method="beam")),
        Case("unknown field", 400, "invalid_request", native(colour="blue")),
        Case("missing prompt", 400, "invalid_request", native(prompt=None)),
        Case("empty prompt", 400, "invalid_request", native(prompt="")),
        Case("loose sampling", 400, "invalid_request",
             native(decoding={"method": "lvspec"}, sampling={"temperature": 0.7})),
        Case("both frames and fps", 400, "invalid_request", native(video_sampling={"num_frames": 8, "fps": 2})),
        # bodies
        Case("malformed JSON", 400, "invalid_request", b'{"video": '),
        Case("array body", 400, "invalid_request", [good]),
        Case("deeply nested body", 400, "invalid_request", nested(100_000)),
        Case("nested past the limit", 400, "invalid_request", native(prompt=json.loads(nested(40)))),
        Case("oversized body", 413, "too_large", native(prompt="x" * (2 << 20))),
        Case("not UTF-8", 400, "invalid_request", b'{"prompt": "\xff\xfe"}'),
        # chat completions
        Case("chat max_tokens 1e6", 400, "invalid_request", chat(app, max_tokens=10**6), "/v1/chat/completions"),
        Case("chat context past the model", 400, "context_length_exceeded", chat(app, max_tokens=8192),
             "/v1/chat/completions"),
        Case("chat stream, context past the model", 400, "context_length_exceeded",
             chat(app, max_tokens=8192, stream=True), "/v1/chat/completions"),
        Case("chat unknown model", 404, "model_not_found", chat(app, model="gpt-5"), "/v1/chat/completions"),
        Case("chat without video", 400, "invalid_request",
             chat(app, messages=[{"role": "user", "content": "hi"}]), "/v1/chat/completions"),
        Case("chat assistant turn", 400, "invalid_request",
             chat(app, messages=chat(app)["messages"] + [{"role": "assistant", "content": "x"}]),
             "/v1/chat/completions"),
        Case("chat stream, bad video", 400, "invalid_video",
             chat(app, stream=True, messages=[{"role": "user", "content": [
                 {"type": "video_url", "video_url": {"url": bad["corrupt.mp4"]}},
                 {"type": "text", "text": "hi"}]}]), "/v1/chat/completions", within_s=DECODE_S),
        Case("native stream, giant frames", 413, "too_large",
             native(stream=True, video_sampling={"num_frames": 256, "width": 4096, "height": 4096})),
        # routes and methods
        Case("unknown route", 404, "not_found", None, "/v1/nothing", "GET"),
        Case("wrong method", 405, "method_not_allowed", None, "/v1/generate", "GET"),
    ]


def send(url: str, case: Case) -> requests.Response:
    data = case.body if isinstance(case.body, bytes) else None if case.body is None else json.dumps(case.body)
    headers = {"Content-Type": "application/json", **case.headers}
    return requests.request(case.method, url + case.path, data=data, headers=headers, timeout=60)


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert error["code"] == code and error["status"] == status and error["message"]


def test_bad_input_gets_clear_4xx_errors_and_harms_nothing(app, bad_objects):
    url = app["url"]
    reference = requests.post(f"{url}/v1/generate", json=good_request(app), timeout=60).json()["token_ids"]
    all_cases = cases(app, bad_objects)
    assert len({c.name for c in all_cases}) >= 30
    wrong = []  # every case runs, so one failure does not hide the others
    for case in all_cases:
        started = time.perf_counter()
        response = send(url, case)
        elapsed = time.perf_counter() - started
        try:
            assert_error(response, case.status, case.code)
        except AssertionError:
            wrong.append(f"{case.name}: {response.status_code} {response.text[:200]}")
        if elapsed >= case.within_s:
            wrong.append(f"{case.name}: answered in {elapsed:.2f} s, more than {case.within_s} s")
        if requests.get(f"{url}/healthz", timeout=30).status_code != 200:
            wrong.append(f"{case.name}: /healthz failed after it")
        after = requests.post(f"{url}/v1/generate", json=good_request(app), timeout=60)
        if after.status_code != 200 or after.json()["token_ids"] != reference:
            wrong.append(f"{case.name}: a good request changed after it: {after.text[:200]}")
    assert not wrong, "\n".join(wrong)


def test_openai_clients_see_a_context_overflow_as_a_bad_request(app):
    import openai

    client = openai.OpenAI(base_url=f"{app['url']}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="specvid", messages=chat(app)["messages"], max_tokens=8192)
    assert refused.value.code == "context_length_exceeded"
    assert "context tokens" in refused.value.message and "8192" in refused.value.message


def test_healthz_answers_head_and_models_lists_the_served_name(app):
    assert requests.head(f"{app['url']}/healthz", timeout=30).status_code == 200
    models = requests.get(f"{app['url']}/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["specvid"]


@pytest.fixture(scope="module")
def keyed(ray_cluster, videos):
    """The same application, deployed with an API key."""
    serve.run(build_app(app_args(videos, api_key_env=API_KEY_ENV)), name="keyed", route_prefix="/keyed")
    yield f"{ray_cluster}/keyed"
    serve.delete("keyed")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdDp0ZXN0"}, {"Authorization": "Bearer"}],
    ids=["missing", "wrong", "basic", "empty"],
)
def test_routes_need_the_api_key(keyed, headers, app):
    for path, method in (("/v1/generate", "POST"), ("/v1/models", "GET"), ("/v1/nothing", "GET")):
        response = send(keyed, Case("auth", 401, "unauthorized", good_request(app), path, method, headers))
        assert_error(response, 401, "unauthorized")
    assert requests.get(f"{keyed}/healthz", timeout=30).status_code == 200  # probes need no key


def test_the_api_key_opens_every_route_and_openai_clients_send_it(keyed, app):
    from openai import OpenAI

    key = {"Authorization": f"Bearer {KEY}"}
    answer = requests.post(f"{keyed}/v1/generate", json=good_request(app), headers=key, timeout=60)
    assert answer.status_code == 200, answer.text
    client = OpenAI(base_url=f"{keyed}/v1", api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(model="specvid", messages=chat(app)["messages"], max_tokens=8)
    assert completion.choices[0].message.content == answer.json()["text"]
