"""fetch_video_bytes against real sources: moto's S3 server, files on disk, a local TLS server."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from specvid.config import SourceConfig, VideoLimits
from specvid.errors import (
    ForbiddenSourceError,
    InvalidRequestError,
    SourceNotFoundError,
    TooLargeError,
    UnavailableError,
)
from specvid.video import fetch_video_bytes

PAYLOAD = bytes(range(256)) * 40  # 10 KiB that no decoder is asked to understand
LIMITS = VideoLimits()
FAST_RETRIES = {"max_retries": 1, "backoff_s": 0.01, "timeout_s": 5.0}


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- S3 -------------------------------------------------------------------------------------


def test_s3_object_comes_back_byte_for_byte(s3, bucket, moto_endpoint):
    s3.put_object(Bucket=bucket, Key="clips/a b#1.mp4", Body=PAYLOAD)
    config = SourceConfig(s3_endpoint_url=moto_endpoint)
    assert fetch_video_bytes(f"s3://{bucket}/clips/a b#1.mp4", config, LIMITS) == PAYLOAD


def test_s3_endpoint_comes_from_aws_endpoint_url(s3, bucket, moto_endpoint, monkeypatch):
    s3.put_object(Bucket=bucket, Key="clip.mp4", Body=PAYLOAD)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    assert fetch_video_bytes(f"s3://{bucket}/clip.mp4", SourceConfig(), LIMITS) == PAYLOAD


def test_s3_missing_key_is_not_found(bucket, moto_endpoint):
    config = SourceConfig(s3_endpoint_url=moto_endpoint)
    with pytest.raises(SourceNotFoundError) as caught:
        fetch_video_bytes(f"s3://{bucket}/nope.mp4", config, LIMITS)
    assert caught.value.status_code == 404


def test_s3_missing_bucket_is_not_found(aws_env, moto_endpoint):
    config = SourceConfig(s3_endpoint_url=moto_endpoint)
    with pytest.raises(SourceNotFoundError, match="bucket") as caught:
        fetch_video_bytes(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/a.mp4", config, LIMITS)
    assert caught.value.status_code == 404


def test_s3_bucket_outside_allowlist_is_forbidden(s3, bucket, moto_endpoint):
    s3.put_object(Bucket=bucket, Key="clip.mp4", Body=PAYLOAD)
    config = SourceConfig(s3_endpoint_url=moto_endpoint, s3_allowed_buckets=("other-bucket",))
    with pytest.raises(ForbiddenSourceError) as caught:
        fetch_video_bytes(f"s3://{bucket}/clip.mp4", config, LIMITS)
    assert caught.value.status_code == 403


def test_s3_object_over_max_bytes_is_too_large(s3, bucket, moto_endpoint):
    s3.put_object(Bucket=bucket, Key="clip.mp4", Body=PAYLOAD)
    config = SourceConfig(s3_endpoint_url=moto_endpoint)
    limits = VideoLimits(max_bytes=len(PAYLOAD) - 1)
    with pytest.raises(TooLargeError) as caught:
        fetch_video_bytes(f"s3://{bucket}/clip.mp4", config, limits)
    assert caught.value.status_code == 413


def test_s3_access_denied_by_the_server(s3, bucket, moto_endpoint, monkeypatch):
    """moto ignores bucket policies but enforces IAM once auth is switched on: a user allowed
    only to list the bucket is refused GetObject by the server itself."""
    s3.put_object(Bucket=bucket, Key="clip.mp4", Body=PAYLOAD)
    iam = boto3.client("iam", endpoint_url=moto_endpoint)
    user = f"lister-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    list_only = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="list-only", PolicyDocument=json.dumps(list_only))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    # Clients are cached per (endpoint, timeout) and read credentials when created: a timeout
    # no other test uses gives this user's credentials a client of their own.
    config = SourceConfig(s3_endpoint_url=moto_endpoint, timeout_s=7.0, max_retries=0)
    _set_moto_auth(moto_endpoint, "0")
    try:
        with pytest.raises(ForbiddenSourceError, match="AccessDenied") as caught:
            fetch_video_bytes(f"s3://{bucket}/clip.mp4", config, LIMITS)
    finally:
        _set_moto_auth(moto_endpoint, "inf")
    assert caught.value.status_code == 403


def _set_moto_auth(endpoint: str, unauthenticated_requests_allowed: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=unauthenticated_requests_allowed.encode(),
        # Not urllib's default form type: moto reads the raw body, which a form parse consumes.
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def test_s3_unreachable_endpoint_is_retried_then_unavailable(aws_env):
    endpoint = f"http://127.0.0.1:{closed_loopback_port()}"
    config = SourceConfig(s3_endpoint_url=endpoint, **FAST_RETRIES)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="after 2 attempts") as caught:
        fetch_video_bytes("s3://bucket/clip.mp4", config, LIMITS)
    assert caught.value.status_code == 503
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "uri", ["s3://", "s3://bucket", "s3://bucket/", "s3:///key.mp4", "s3://bad bucket!/a.mp4"]
)
def test_malformed_s3_uri_is_invalid(uri, aws_env):
    with pytest.raises(InvalidRequestError) as caught:
        fetch_video_bytes(uri, SourceConfig(), LIMITS)
    assert caught.value.status_code == 400


# --- local files ----------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "clip.mp4").write_bytes(PAYLOAD)
    (tmp_path / "outside.mp4").write_bytes(PAYLOAD)
    return tmp_path / "root"


def test_local_path_inside_root_is_read(root):
    config = SourceConfig(local_root=str(root))
    assert fetch_video_bytes(str(root / "clip.mp4"), config, LIMITS) == PAYLOAD


def test_file_uri_inside_root_is_read(root):
    config = SourceConfig(local_root=str(root))
    assert fetch_video_bytes((root / "clip.mp4").as_uri(), config, LIMITS) == PAYLOAD


@pytest.mark.parametrize("name", ["../outside.mp4", "link.mp4"])
def test_local_path_escaping_root_is_forbidden(root, name):
    (root / "link.mp4").symlink_to(root.parent / "outside.mp4")
    with pytest.raises(ForbiddenSourceError) as caught:
        fetch_video_bytes(str(root / name), SourceConfig(local_root=str(root)), LIMITS)
    assert caught.value.status_code == 403


def test_local_path_outside_root_is_forbidden_even_when_missing(root):
    # Refused before the existence check, so the answer reveals nothing about other files.
    with pytest.raises(ForbiddenSourceError) as caught:
        fetch_video_bytes("/etc/no-such-file", SourceConfig(local_root=str(root)), LIMITS)
    assert caught.value.status_code == 403


def test_local_paths_are_forbidden_without_a_root(root):
    with pytest.raises(ForbiddenSourceError) as caught:
        fetch_video_bytes(str(root / "clip.mp4"), SourceConfig(), LIMITS)
    assert caught.value.status_code == 403


def test_missing_local_file_is_not_found(root):
    with pytest.raises(SourceNotFoundError) as caught:
        fetch_video_bytes(str(root / "nope.mp4"), SourceConfig(local_root=str(root)), LIMITS)
    assert caught.value.status_code == 404


def test_local_file_over_max_bytes_is_too_large(root):
    limits = VideoLimits(max_bytes=len(PAYLOAD) - 1)
    with pytest.raises(TooLargeError) as caught:
        fetch_video_bytes(str(root / "clip.mp4"), SourceConfig(local_root=str(root)), limits)
    assert caught.value.status_code == 413


@pytest.mark.parametrize("make", [os.mkdir, os.mkfifo], ids=["directory", "fifo"])
def test_local_path_that_is_not_a_regular_file_is_invalid(root, make):
    make(root / "odd")
    with pytest.raises(InvalidRequestError) as caught:
        fetch_video_bytes(str(root / "odd"), SourceConfig(local_root=str(root)), LIMITS)
    assert caught.value.status_code == 400


# --- https ----------------------------------------------------------------------------------


def https_config(**overrides) -> SourceConfig:
    return SourceConfig(**({"https_allowlist": ("127.0.0.1",)} | FAST_RETRIES | overrides))


def test_https_on_allowlist_is_read(trust_https_server):
    server = trust_https_server
    server.replies["/clip.mp4"] = [(200, {"Content-Length": str(len(PAYLOAD))}, PAYLOAD)]
    assert fetch_video_bytes(server.url("/clip.mp4"), https_config(), LIMITS) == PAYLOAD


def test_https_host_not_on_allowlist_is_forbidden(trust_https_server):
    config = https_config(https_allowlist=("videos.example.com",))
    with pytest.raises(ForbiddenSourceError) as caught:
        fetch_video_bytes(trust_https_server.url("/clip.mp4"), config, LIMITS)
    assert caught.value.status_code == 403
    assert trust_https_server.hits == {}


def test_https_redirect_off_the_allowlist_is_forbidden(trust_https_server):
    trust_https_server.replies["/moved"] = [(302, {"Location": "https://elsewhere.example/x"}, b"")]
    with pytest.raises(ForbiddenSourceError, match="elsewhere.example") as caught:
        fetch_video_bytes(trust_https_server.url("/moved"), https_config(), LIMITS)
    assert caught.value.status_code == 403


def test_https_redirect_on_the_allowlist_is_followed(trust_https_server):
    trust_https_server.replies["/moved"] = [(302, {"Location": "/clip.mp4"}, b"")]
    trust_https_server.replies["/clip.mp4"] = [(200, {}, PAYLOAD)]
    assert fetch_video_bytes(trust_https_server.url("/moved"), https_config(), LIMITS) == PAYLOAD


def test_https_404_is_not_found(trust_https_server):
    with pytest.raises(SourceNotFoundError) as caught:
        fetch_video_bytes(trust_https_server.url("/missing.mp4"), https_config(), LIMITS)
    assert caught.value.status_code == 404


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
def test_https_body_over_max_bytes_is_too_large(trust_https_server, declared):
    headers = {"Content-Length": str(len(PAYLOAD))} if declared else {}
    trust_https_server.replies["/big.mp4"] = [(200, headers, PAYLOAD)]
    limits = VideoLimits(max_bytes=len(PAYLOAD) - 1)
    with pytest.raises(TooLargeError) as caught:
        fetch_video_bytes(trust_https_server.url("/big.mp4"), https_config(), limits)
    assert caught.value.status_code == 413


def test_https_transient_503_is_retried(trust_https_server):
    server = trust_https_server
    server.replies["/flaky.mp4"] = [(503, {}, b""), (200, {}, PAYLOAD)]
    assert fetch_video_bytes(server.url("/flaky.mp4"), https_config(), LIMITS) == PAYLOAD
    assert server.hits["/flaky.mp4"] == 2


def test_https_lasting_503_becomes_unavailable(trust_https_server):
    trust_https_server.replies["/down.mp4"] = [(503, {}, b"")]
    with pytest.raises(UnavailableError) as caught:
        fetch_video_bytes(trust_https_server.url("/down.mp4"), https_config(), LIMITS)
    assert caught.value.status_code == 503
    assert trust_https_server.hits["/down.mp4"] == 2


def test_https_untrusted_certificate_is_unavailable_without_retries(https_server):
    with pytest.raises(UnavailableError, match="certificate") as caught:
        fetch_video_bytes(https_server.url("/clip.mp4"), https_config(), LIMITS)
    assert caught.value.status_code == 503


# --- URIs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri, error, status",
    [
        ("", InvalidRequestError, 400),
        ("   ", InvalidRequestError, 400),
        ("s3://bucket/a\nb.mp4", InvalidRequestError, 400),
        ("ftp://host/clip.mp4", InvalidRequestError, 400),
        ("gs://bucket/clip.mp4", InvalidRequestError, 400),
        ("file://otherhost/clip.mp4", InvalidRequestError, 400),
        ("https://[::1/clip.mp4", InvalidRequestError, 400),
        ("http://127.0.0.1/clip.mp4", ForbiddenSourceError, 403),
    ],
)
def test_bad_uris_are_refused(uri, error, status):
    config = SourceConfig(local_root="/", https_allowlist=("127.0.0.1",))
    with pytest.raises(error) as caught:
        fetch_video_bytes(uri, config, LIMITS)
    assert type(caught.value) is error
    assert caught.value.status_code == status


def test_non_string_uri_is_invalid():
    with pytest.raises(InvalidRequestError) as caught:
        fetch_video_bytes(None, SourceConfig(), LIMITS)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
