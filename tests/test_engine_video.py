"""LocalEngine end to end on real files: S3 on loopback and local paths -> PyAV -> models."""

from __future__ import annotations

import pytest

from specvid.config import SourceConfig
from specvid.engine import LocalEngine
from specvid.errors import ContextLengthError, ForbiddenSourceError, InvalidVideoError, SourceNotFoundError
from specvid.shapesworld.clips import encode_clip_mp4, make_clip
from specvid.shapesworld.world import split_seeds

PROMPT = "Describe the video in detail."


@pytest.fixture(scope="module")
def clip_bytes():
    return encode_clip_mp4(make_clip(split_seeds("eval", 1)[0]))


def request(video: str, method: str, max_tokens: int = 16) -> dict:
    return {
        "video": video,
        "prompt": PROMPT,
        "spec": {"method": method, "num_draft_tokens": 4},
        "sampling": {"max_tokens": max_tokens},
    }


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_s3_video_sd_equals_ar(random_models, s3, bucket, moto_endpoint, clip_bytes, family):
    s3.put_object(Bucket=bucket, Key="clips/a.mp4", Body=clip_bytes)
    target, draft = random_models[family]
    engine = LocalEngine(target, draft, sources=SourceConfig(s3_endpoint_url=moto_endpoint))
    uri = f"s3://{bucket}/clips/a.mp4"
    ar = engine.generate(request(uri, "ar"))
    sd = engine.generate(request(uri, "sd"))
    assert sd.token_ids == ar.token_ids and len(ar.token_ids) > 0
    assert sd.stats.video_s > 0 and sd.stats.prefill_s > 0 and sd.stats.rounds > 0
    streamed = "".join(chunk.text for chunk in engine.stream(request(uri, "sd")))
    assert streamed == sd.text


def test_local_paths_are_read_by_default_in_process_and_refused_by_server_sources(
        random_models, tmp_path, clip_bytes):
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip_bytes)
    target, draft = random_models["qwen"]
    assert LocalEngine(target, draft).generate(request(str(path), "sd")).token_ids  # a user's own file
    inside = LocalEngine(target, draft, sources=SourceConfig(local_root=str(tmp_path)))
    assert inside.generate(request(str(path), "sd")).token_ids
    with pytest.raises(ForbiddenSourceError):  # what a served deployment's sources say by default
        LocalEngine(target, draft, sources=SourceConfig()).generate(request(str(path), "sd"))
    with pytest.raises(ForbiddenSourceError):
        LocalEngine(target, draft, sources=SourceConfig(local_root=str(tmp_path / "elsewhere"))).generate(
            request(str(path), "sd"))


def test_a_context_overflow_is_a_400_naming_the_numbers_before_any_download(random_models):
    target, draft = random_models["qwen"]
    engine = LocalEngine(target, draft)
    # The video does not exist: the refusal must come before anything tries to read it.
    with pytest.raises(ContextLengthError) as refused:
        engine.generate(request("s3://nowhere/clip.mp4", "sd", max_tokens=8192))
    assert refused.value.status_code == 400 and refused.value.code == "context_too_long"
    assert refused.value.to_dict(openai=True)["error"]["code"] == "context_length_exceeded"
    assert "8192" in refused.value.message and "context tokens" in refused.value.message


def test_missing_key_and_bad_bytes_are_clear_errors(random_models, s3, bucket, moto_endpoint):
    target, draft = random_models["qwen"]
    engine = LocalEngine(target, draft, sources=SourceConfig(s3_endpoint_url=moto_endpoint))
    with pytest.raises(SourceNotFoundError) as missing:
        engine.generate(request(f"s3://{bucket}/nope.mp4", "sd"))
    assert missing.value.status_code == 404
    s3.put_object(Bucket=bucket, Key="notes.mp4", Body=b"this is not a video")
    with pytest.raises(InvalidVideoError) as bad:
        engine.generate(request(f"s3://{bucket}/notes.mp4", "sd"))
    assert bad.value.status_code == 400
