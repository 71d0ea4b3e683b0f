"""Shared fixtures: the seeded random model pairs and clips of random frames."""

from __future__ import annotations

import os

# Offline, quiet, CPU-only: the suite never reaches a model hub or a GPU.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import pytest  # noqa: E402
import torch  # noqa: E402

from specvid.models.loader import load_model  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

from tests.helpers import FAMILIES  # noqa: E402


@pytest.fixture(scope="session")
def random_models():
    """Loaded once per session: {'qwen': (target, draft), 'llava': (target, draft)}."""
    return {f: (load_model(f"random-{f}"), load_model(f"random-{f}-draft")) for f in FAMILIES}
