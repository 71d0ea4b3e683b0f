"""`python -m lab.zoo train`, run as the recipes' user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def lab_zoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lab.zoo", *args], capture_output=True, text=True, timeout=240
    )


def test_zoo_train_with_settings_exports_where_asked(tmp_path):
    # A few steps of the draft's recipe, changed from the command line, sibling turns included.
    settings = ["steps=2", "batch_size=2", "warmup=1", "train_clips=4", "sibling_turns=true"]
    settings += ["vision.steps=1", "vision.batch_size=2"]
    out = lab_zoo(
        "train", "--pair", "qwen-tiny", "--models", "draft", "--work-dir", str(tmp_path / "work"),
        "--out-dir", str(tmp_path / "out"), *(arg for s in settings for arg in ("--set", s)),
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "qwen-tiny-draft" / "model.safetensors").is_file()
    assert (tmp_path / "work" / "qwen-tiny-draft" / "state.pt").is_file()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--set", "sibling_turn=true"], "unknown setting 'sibling_turn'"),
        (["--set", "steps=many"], "'steps' takes a int"),
        (["--set", "vision=3"], "group of settings"),
        (["--models", "teacher"], "--models takes target, draft or both"),
    ],
)
def test_zoo_train_refuses_a_bad_setting_before_any_work(tmp_path, args, fragment):
    out = lab_zoo("train", "--pair", "qwen-tiny", "--work-dir", str(tmp_path), *args)
    assert out.returncode == 2
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written
