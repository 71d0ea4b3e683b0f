"""The Python kustomize renderer (tests/deploy/kustomize.py), on small trees of its own."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.kustomize import (
    KustomizeError,
    apply_json_patch,
    render,
    resource_id,
    split_image,
    strategic_merge,
    to_yaml,
)
from tests.deploy.manifests import K8S, OVERLAYS

DOC = {"spec": {"groups": [{"name": "a", "n": 1}], "keep": True}}


def write(directory: Path, files: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return directory


def test_json_patch_operations():
    ops = [
        {"op": "test", "path": "/spec/groups/0/name", "value": "a"},
        {"op": "copy", "from": "/spec/groups/0", "path": "/spec/groups/1"},
        {"op": "replace", "path": "/spec/groups/1/name", "value": "b"},
        {"op": "add", "path": "/spec/groups/-", "value": {"name": "c"}},
        {"op": "move", "from": "/spec/keep", "path": "/spec/kept"},
        {"op": "remove", "path": "/spec/groups/0/n"},
        {"op": "add", "path": "/spec/a~1b", "value": 1},
    ]
    assert apply_json_patch(DOC, ops) == {
        "spec": {"groups": [{"name": "a"}, {"name": "b", "n": 1}, {"name": "c"}], "kept": True, "a/b": 1}
    }
    assert DOC["spec"]["groups"] == [{"name": "a", "n": 1}]  # the input is not modified


@pytest.mark.parametrize(
    "op",
    [
        {"op": "test", "path": "/spec/groups/0/name", "value": "z"},  # a guard that fails
        {"op": "replace", "path": "/spec/missing", "value": 1},  # replace needs the path
        {"op": "remove", "path": "/spec/groups/5"},
        {"op": "add", "path": "/spec/groups/7", "value": {}},
        {"op": "frobnicate", "path": "/spec"},
    ],
)
def test_json_patch_errors_raise(op):
    with pytest.raises(KustomizeError):
        apply_json_patch(DOC, [op])


def test_strategic_merge_on_a_custom_resource_merges_maps_and_replaces_lists():
    resource = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "x"}, **DOC}
    patch = {"spec": {"groups": [{"name": "z"}], "keep": None, "serveConfigV2": "a: 1\n"}}
    merged = strategic_merge(resource, patch)
    assert merged["spec"] == {"groups": [{"name": "z"}], "serveConfigV2": "a: 1\n"}


def test_strategic_merge_refuses_lists_of_builtin_kinds():
    # kustomize would merge containers by name; this renderer does not know merge keys.
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(KustomizeError, match="merge keys"):
        strategic_merge(deployment, {"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}})


@pytest.mark.parametrize(
    "image, parts",
    [
        ("specvid", ("specvid", "")),
        ("specvid:0.1", ("specvid", ":0.1")),
        ("registry:5000/team/specvid:0.1", ("registry:5000/team/specvid", ":0.1")),
        ("registry:5000/specvid", ("registry:5000/specvid", "")),
        ("specvid@sha256:abc", ("specvid", "@sha256:abc")),
    ],
)
def test_split_image(image, parts):
    assert split_image(image) == parts


def test_layers_apply_in_kustomize_order(tmp_path):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "app"}]},
    }
    base = write(
        tmp_path / "base",
        {
            "pod.yaml": pod,
            "kustomization.yaml": {
                "resources": ["pod.yaml"],
                "namespace": "ns",
                "labels": [{"pairs": {"team": "t"}}],
                "images": [{"name": "app", "newName": "reg/app", "newTag": "1"}],
            },
        },
    )
    patch = [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]
    overlay = write(
        tmp_path / "overlay",
        {
            "kustomization.yaml": {
                "resources": [f"../{base.name}"],
                "patches": [{"patch": yaml.safe_dump(patch), "target": {"kind": "Pod", "name": "p"}}],
                "images": [{"name": "reg/app", "digest": "sha256:0"}],
            }
        },
    )
    (rendered,) = render(overlay)
    assert rendered["metadata"] == {
        "name": "p",
        "namespace": "ns",
        "labels": {"team": "t"},
        "annotations": {"a": "b"},
    }
    assert rendered["spec"]["containers"][0]["image"] == "reg/app@sha256:0"


def test_yaml_aliases_become_independent_copies(tmp_path):
    # As in kustomize: a patch of one use of an anchored value leaves the other uses alone.
    shared = "a: &settings {x: 1}\nb: *settings\n"
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    text = yaml.safe_dump(config) + "data:\n  " + shared.replace("\n", "\n  ")
    patch = [{"op": "add", "path": "/data/b/y", "value": 2}]
    directory = write(
        tmp_path,
        {
            "c.yaml": text,
            "kustomization.yaml": {
                "resources": ["c.yaml"],
                "patches": [{"patch": yaml.safe_dump(patch), "target": {"kind": "ConfigMap"}}],
            },
        },
    )
    (rendered,) = render(directory)
    assert rendered["data"] == {"a": {"x": 1}, "b": {"x": 1, "y": 2}}
    assert "&" not in to_yaml([rendered]) and "*" not in to_yaml([rendered])


@pytest.mark.parametrize(
    "kustomization",
    [
        {"resources": [], "namePrefix": "x-"},  # a field this renderer does not implement
        {"resources": ["https://example.com/remote.yaml"]},
        {"resources": [], "labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]},
        {"resources": [], "patches": [{"patch": "[]"}]},  # a JSON patch without a target
    ],
)
def test_unsupported_kustomizations_raise(tmp_path, kustomization):
    with pytest.raises(KustomizeError):
        render(write(tmp_path, {"kustomization.yaml": kustomization}))


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed"
)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_matches_kubectl_kustomize(overlay):
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    theirs = {resource_id(r): r for r in yaml.safe_load_all(done.stdout) if r}
    ours = {resource_id(r): r for r in render(K8S / "overlays" / overlay)}
    assert ours == theirs
