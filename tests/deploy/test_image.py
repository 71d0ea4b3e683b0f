"""The Dockerfile installs what pyproject.toml declares, and builds the image k8s/ runs.

No Docker daemon runs here, so the image is not built; these checks read the files instead.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pin(requirements: list[str], name: str) -> str:
    """The version `name==X` is pinned to in a requirement list."""
    (found,) = [r for r in requirements if re.match(rf"{re.escape(name)}(\[[^\]]*\])?==", r)]
    return found.split("==")[1]


def build_arg(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)", DOCKERFILE, re.M).group(1)


def test_torch_is_the_pinned_version_installed_first_and_pinned_again():
    torch = pin(PROJECT["dependencies"], "torch")
    assert build_arg("TORCH_VERSION") == torch
    installs = [line for line in DOCKERFILE.splitlines() if line.startswith("RUN pip install")]
    assert '"torch==${TORCH_VERSION}"' in installs[0] and "--index-url" in installs[0]
    assert '"torch==${TORCH_VERSION}"' in installs[1] and '".[serve]"' in installs[1]


def test_the_base_image_carries_the_ray_and_python_the_package_pins():
    ray = pin(PROJECT["optional-dependencies"]["serve"], "ray")
    assert build_arg("RAY_IMAGE") == f"rayproject/ray:{ray}-py311-cpu"
    assert f"rayproject/ray:{ray}-py311-cu128" in (ROOT / "Makefile").read_text()


def test_every_installed_package_and_the_default_config_are_copied():
    included = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [name.rstrip("*") for name in included["include"]]
    copied = re.findall(r"^COPY \S+ (\S+) ", DOCKERFILE, re.M)
    for package in packages:
        assert package in copied, f"{package} is installed by pyproject.toml but not copied"
    for name in ("pyproject.toml", "README.md", "serve_config.yaml"):
        assert any(name in line for line in DOCKERFILE.splitlines() if line.startswith("COPY"))
    assert "lab" not in copied and "tests" not in copied  # the lab stays outside the image


def test_make_image_tags_the_image_the_overlays_run():
    version = PROJECT["version"]
    base = yaml.safe_load((ROOT / "k8s/base/kustomization.yaml").read_text())["images"][0]
    gpu = yaml.safe_load((ROOT / "k8s/gpu/kustomization.yaml").read_text())["images"][0]
    commands = {}
    for variant in ("cpu", "cuda"):
        out = subprocess.run(["make", "-n", "image", f"VARIANT={variant}"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        commands[variant] = out.split()[out.split().index("-t") + 1]
    assert commands["cpu"] == f"{base['newName']}:{base['newTag']}" == f"{base['newName']}:{version}-cpu"
    assert commands["cuda"] == f"{gpu['name']}:{gpu['newTag']}" == f"{base['newName']}:{version}-cuda"
