"""The `specvid` command line, run as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from specvid.video import encode_video
from tests.helpers import random_frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "clip.mp4"
    path.write_bytes(encode_video(random_frames(0, num_frames=16, size=64), fps=8))
    return path


def specvid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "specvid.cli", *args], capture_output=True, text=True, timeout=240
    )


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_generate_json_sd_equals_ar(clip, family):
    common = ["--video", str(clip), "--prompt", "What moves?", "--max-tokens", "12", "--json"]
    models = ["--target", f"random-{family}", "--draft", f"random-{family}-draft"]
    ar = specvid("generate", *common, *models, "--method", "ar")
    sd = specvid("generate", *common, *models, "--method", "sd")
    assert ar.returncode == 0, ar.stderr
    assert sd.returncode == 0, sd.stderr
    ar_out, sd_out = json.loads(ar.stdout), json.loads(sd.stdout)
    for key in ("text", "token_ids", "num_tokens", "tau", "rounds", "decode_tokens_per_s"):
        assert key in sd_out
    assert sd_out["token_ids"] == ar_out["token_ids"]
    assert sd_out["num_tokens"] == len(sd_out["token_ids"]) <= 12
    assert ar_out["tau"] == 0.0


def test_generate_streams_text_and_a_stats_line(clip):
    out = specvid("generate", "--video", str(clip), "--prompt", "Hi", "--max-tokens", "6")
    assert out.returncode == 0, out.stderr
    assert "tau" in out.stderr and "tok/s" in out.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--video", "/no/such/clip.mp4"], "404"),
        (["--video", "s3://bucket-without-key"], "400"),
        (["--video", "ftp://host/clip.mp4"], "ftp"),
    ],
)
def test_generate_reports_errors_without_a_traceback(args, fragment):
    out = specvid("generate", *args, "--prompt", "Hi", "--method", "ar")
    assert out.returncode == 2
    assert fragment in out.stderr and "Traceback" not in out.stderr


def test_unknown_model_is_a_clear_error(clip):
    out = specvid("generate", "--video", str(clip), "--prompt", "Hi", "--target", "/no/such/model", "--method", "ar")
    assert out.returncode == 2
    assert "cannot load model" in out.stderr and "Traceback" not in out.stderr


def test_the_zoo_command_holds_no_lab_commands():
    out = specvid("zoo", "--help")
    assert out.returncode == 0, out.stderr
    assert "eval" in out.stdout and "sample" in out.stdout
    assert not any(command in out.stdout for command in ("train", "diagnose", "letter-drill"))
