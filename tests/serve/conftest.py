"""A real local Ray (2 CPUs), a real Serve HTTP port on 127.0.0.1 and a real S3 on loopback."""

from __future__ import annotations

import os
import uuid

import boto3
import numpy as np
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from specvid.models.tensor_parallel import free_port  # noqa: E402
from specvid.video import encode_video  # noqa: E402

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}
PAIR = {"target": {"name": "random-qwen"}, "draft": {"name": "random-qwen-draft"}}
# An API key in the cluster's environment, under a name only the keyed test application reads.
TEST_API_KEY_ENV, TEST_API_KEY = "SPECVID_TEST_API_KEY", "specvid-test-key-0123456789"


def clip_bytes(seed: int, num_frames: int = 16, size: int = 112) -> bytes:
    frames = np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)
    return encode_video(frames, fps=8.0)


@pytest.fixture(scope="session")
def videos(moto_endpoint: str) -> dict:
    """Two real mp4 clips in a fresh bucket of the loopback S3."""
    os.environ.update(AWS_ENV)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = f"videos-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    uris = {}
    for seed in (1, 2):
        s3.put_object(Bucket=bucket, Key=f"clip{seed}.mp4", Body=clip_bytes(seed))
        uris[seed] = f"s3://{bucket}/clip{seed}.mp4"
    return {"bucket": bucket, "uris": uris, "endpoint": moto_endpoint}


@pytest.fixture(scope="session")
def ray_cluster(videos):
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={
            "env_vars": {
                **AWS_ENV,
                "DS_ACCELERATOR": "cpu",
                "GLOO_SOCKET_IFNAME": "lo",
                TEST_API_KEY_ENV: TEST_API_KEY,
            }
        },
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def app_args(videos: dict, **overrides) -> dict:
    args = {
        **PAIR,
        "sources": {"s3_endpoint_url": videos["endpoint"], "s3_allowed_buckets": [videos["bucket"]]},
        "max_sessions": 8,
        "admission": {"max_active": 8, "max_queued": 8},
        "request_timeout_s": 120,
        # Served rounds draft ahead, in-process ones (the reference) do not: the tokens must agree.
        "draft_ahead": True,
    }
    args.update(overrides)
    return args


@pytest.fixture(scope="session")
def app(ray_cluster, videos):
    """The default application (tp_size 1), as `serve run` would start it."""
    from deployments.app import build_app

    handle = serve.run(build_app(app_args(videos)), name="specvid", route_prefix="/")
    return {"handle": handle, "url": ray_cluster, "videos": videos}


@pytest.fixture(scope="session")
def local(videos):
    """The same pair in one process: the reference every served answer must equal."""
    from specvid.config import SourceConfig
    from specvid.engine import LocalEngine

    sources = SourceConfig(s3_endpoint_url=videos["endpoint"])
    return LocalEngine.from_specs(PAIR["target"]["name"], PAIR["draft"]["name"], sources=sources)
