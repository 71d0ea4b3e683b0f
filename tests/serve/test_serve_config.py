"""The application's config and the OpenAI translation, without starting Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.serve")

from deployments.app import _group_options  # noqa: E402
from deployments.args import AppArgs  # noqa: E402
from deployments.openai_api import ChatCompletionRequest, to_generation_request  # noqa: E402
from specvid.config import GenerationRequest, parse  # noqa: E402
from specvid.errors import InvalidRequestError  # noqa: E402
from specvid.models.tensor_parallel import rank_environment  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_serve_config_args_validate():
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    app = config["applications"][0]
    assert app["import_path"] == "deployments.app:build_app"
    args = parse(AppArgs, app["args"])
    assert args.tp_size == 1 and args.sources.s3_endpoint_url.startswith("http://127.0.0.1:")
    assert config["http_options"]["host"] == "127.0.0.1"


@pytest.mark.parametrize(
    "bad",
    [
        {"target": {"name": "x"}, "tp_size": 0},
        {"target": {"name": "x"}, "unknown": 1},
        {"target": {"name": "x", "device": "cuda"}},  # a GPU target without GPUs reserved
        {"draft": {"name": "x"}},
    ],
)
def test_bad_app_args_are_refused(bad):
    with pytest.raises(InvalidRequestError):
        parse(AppArgs, bad)


def test_tensor_parallel_group_reserves_one_packed_bundle_per_rank():
    args = parse(
        AppArgs, {"target": {"name": "x"}, "tp_size": 4, "rank_resources": {"num_cpus": 2, "num_gpus": 1}}
    )
    options = _group_options(args)
    assert options["placement_group_strategy"] == "STRICT_PACK"
    assert options["placement_group_bundles"] == [{"CPU": 2, "GPU": 1}] * 4


def test_rank_environment_is_complete():
    env = rank_environment(1, 2, "127.0.0.1", 29500)
    assert env == {
        "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
    }  # fmt: skip
    with pytest.raises(ValueError):
        rank_environment(2, 2, "127.0.0.1", 29500)


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(fields)


def test_chat_request_becomes_a_generation_request():
    request = chat(
        messages=[
            {"role": "system", "content": "ignored"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What moves?"},
                    {"type": "video_url", "video_url": {"url": "s3://b/k.mp4"}},
                    {"type": "text", "text": "Answer briefly."},
                ],
            },
        ],
        max_completion_tokens=7,
        temperature=0.5,
        seed=3,
        spec={"method": "ar"},
        user="ignored-extra-field",
    )
    native = parse(GenerationRequest, to_generation_request(request))
    assert native.video == "s3://b/k.mp4"
    assert native.prompt == "What moves?\nAnswer briefly."
    assert (native.sampling.max_tokens, native.sampling.temperature, native.sampling.seed) == (7, 0.5, 3)
    assert native.decoding.method == "ar"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "text only"}],
        [{"role": "system", "content": "no user turn"}],
        [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "s3://b/k"}}]}],
    ],
)
def test_chat_requests_without_one_video_and_text_are_refused(messages):
    with pytest.raises(InvalidRequestError):
        to_generation_request(chat(messages=messages))
