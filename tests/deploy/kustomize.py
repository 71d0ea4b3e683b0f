"""A small kustomize in Python: renders the part of kustomization.yaml that k8s/ uses.

    python -m tests.deploy.kustomize k8s/overlays/cpu-demo    # like `kubectl kustomize ...`

The test suite renders the overlays with it, so no kustomize binary is needed; where `kubectl`
is installed the tests also check that its output equals `kubectl kustomize`.

Supported, in kustomize's own order within one kustomization:

- `resources`: YAML files and directories holding a kustomization (rendered first, recursively);
- `patches`: from `path` or inline `patch`. A YAML list is a JSON patch (RFC 6902: add, remove,
  replace, move, copy, test) and needs a `target`; anything else is a strategic-merge patch,
  applied to `target` matches or else to the resource with its apiVersion, kind and name.
  Strategic merge here merges maps and replaces scalars and lists, which is what kustomize does
  for custom resources (no merge keys); a list in a patch of a built-in kind raises, since
  kustomize would merge it by keys this renderer does not know;
- `namespace` (on namespaced kinds), `labels` (metadata only: `includeSelectors` and
  `includeTemplates` false), `images` (name, newName, newTag, digest; every `containers` and
  `initContainers` list of every resource).

Any other field raises: nothing in a kustomization is ignored silently.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}
# Kinds without a namespace among those a kustomization here might hold.
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "IngressClass",
    "PersistentVolume", "PriorityClass", "StorageClass",
}  # fmt: skip
# The namespace transformer of kustomize also rewrites references inside these; this one does not.
NAMESPACE_REFERENCES = {"RoleBinding", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
                        "MutatingWebhookConfiguration"}  # fmt: skip


class KustomizeError(ValueError):
    pass


def render(directory: Path | str) -> list[dict]:
    """The resources the kustomization in `directory` builds, in input order."""
    directory = Path(directory)
    kustomization = _load_kustomization(directory)
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    resources = [r for entry in kustomization.get("resources", []) for r in _load_resource(directory, entry)]
    for patch in kustomization.get("patches", []):
        _apply_patch(resources, directory, patch)
    if "namespace" in kustomization:
        _set_namespace(resources, kustomization["namespace"])
    for labels in kustomization.get("labels", []):
        _add_labels(resources, labels)
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    return resources


def to_yaml(resources: list[dict]) -> str:
    return yaml.dump_all(resources, Dumper=_Dumper, sort_keys=True, width=1000)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as literal blocks, like kubectl; never aliases."""

    def ignore_aliases(self, data) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def resource_id(resource: dict) -> tuple[str, str, str, str]:
    meta = resource.get("metadata", {})
    return (resource["apiVersion"], resource["kind"], meta.get("namespace", ""), meta["name"])


# --- loading ---------------------------------------------------------------------------------


def _load_kustomization(directory: Path) -> dict:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            return yaml.safe_load(path.read_text()) or {}
    raise KustomizeError(f"{directory}: no kustomization file")


def _load_resource(directory: Path, entry: str) -> list[dict]:
    path = (directory / entry).resolve()
    if path.is_dir():
        return render(path)
    if not path.is_file():
        raise KustomizeError(f"{directory}: resource {entry} not found (remote resources are not supported)")
    return [_unshared(doc) for doc in yaml.safe_load_all(path.read_text()) if doc]


def _unshared(node: Any) -> Any:
    """A copy in which no two places share an object. YAML aliases (*name) load as one shared
    object; kustomize expands them into copies, so a patch of one place leaves the others alone."""
    if isinstance(node, dict):
        return {key: _unshared(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_unshared(item) for item in node]
    return node


# --- patches ---------------------------------------------------------------------------------


def _apply_patch(resources: list[dict], directory: Path, entry: dict) -> None:
    if set(entry) - {"path", "patch", "target"}:
        raise KustomizeError(
            f"{directory}: unsupported patch fields {sorted(set(entry) - {'path', 'patch', 'target'})}"
        )
    text = (directory / entry["path"]).read_text() if "path" in entry else entry["patch"]
    patch = yaml.safe_load(text)
    target = entry.get("target")
    if isinstance(patch, list):
        if target is None:
            raise KustomizeError(f"{directory}: a JSON patch needs a target")
        matches = _matching(resources, target)
        for index in matches:
            resources[index] = apply_json_patch(resources[index], patch)
        return
    matches = _matching(resources, target) if target else _matching(resources, _target_of(patch))
    for index in matches:
        resources[index] = strategic_merge(resources[index], patch)


def _target_of(patch: dict) -> dict:
    group, _, version = patch["apiVersion"].rpartition("/")
    return {"group": group, "version": version, "kind": patch["kind"], "name": patch["metadata"]["name"]}


def _matching(resources: list[dict], target: dict) -> list[int]:
    unknown = set(target) - {"group", "version", "kind", "name", "namespace"}
    if unknown:
        raise KustomizeError(f"unsupported patch target fields {sorted(unknown)}")
    matches = [i for i, r in enumerate(resources) if _matches(r, target)]
    if not matches:
        raise KustomizeError(f"patch target {target} matches no resource")
    return matches


def _matches(resource: dict, target: dict) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    actual = {
        "group": group,
        "version": version,
        "kind": resource["kind"],
        "name": resource["metadata"]["name"],
        "namespace": resource["metadata"].get("namespace", ""),
    }
    return all(actual[key] == value for key, value in target.items())


def strategic_merge(resource: dict, patch: dict) -> dict:
    if _is_builtin(resource["apiVersion"]) and _has_list(patch):
        raise KustomizeError(
            f"{resource['kind']}/{resource['metadata']['name']}: "
            "list merge keys of built-in kinds are not supported"
        )
    return _merge(copy.deepcopy(resource), patch)


def _merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            raise KustomizeError(f"strategic-merge directive {key} is not supported")
        if value is None:
            base.pop(key, None)
        else:
            base[key] = _merge(base.get(key), value)
    return base


def _is_builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return group == "" or "." not in group or group.endswith(".k8s.io")


def _has_list(value: Any) -> bool:
    if isinstance(value, list):
        return True
    return isinstance(value, dict) and any(_has_list(v) for v in value.values())


def apply_json_patch(document: dict, operations: list[dict]) -> dict:
    """RFC 6902 over a copy of `document`; a failed `test` raises."""
    document = copy.deepcopy(document)
    for op in operations:
        kind = op["op"]
        if kind == "test":
            if _get(document, op["path"]) != op["value"]:
                raise KustomizeError(f"JSON patch test failed at {op['path']}: expected {op['value']!r}")
        elif kind == "remove":
            _remove(document, op["path"])
        elif kind == "add":
            _add(document, op["path"], copy.deepcopy(op["value"]))
        elif kind == "replace":
            _get(document, op["path"])  # must exist
            _remove(document, op["path"])
            _add(document, op["path"], copy.deepcopy(op["value"]))
        elif kind == "copy":
            _add(document, op["path"], copy.deepcopy(_get(document, op["from"])))
        elif kind == "move":
            value = _get(document, op["from"])
            _remove(document, op["from"])
            _add(document, op["path"], value)
        else:
            raise KustomizeError(f"unknown JSON patch op {kind!r}")
    return document


def _tokens(pointer: str) -> list[str]:
    if not pointer.startswith("/"):
        raise KustomizeError(f"bad JSON pointer {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _parent(document: Any, pointer: str) -> tuple[Any, str]:
    *path, last = _tokens(pointer)
    node = document
    for token in path:
        node = _child(node, token, pointer)
    return node, last


def _child(node: Any, token: str, pointer: str) -> Any:
    try:
        return node[int(token)] if isinstance(node, list) else node[token]
    except (KeyError, IndexError, ValueError, TypeError):
        raise KustomizeError(f"JSON pointer {pointer!r}: no {token!r}") from None


def _get(document: Any, pointer: str) -> Any:
    node = document
    for token in _tokens(pointer):
        node = _child(node, token, pointer)
    return node


def _add(document: Any, pointer: str, value: Any) -> None:
    parent, last = _parent(document, pointer)
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if not 0 <= index <= len(parent):
            raise KustomizeError(f"JSON pointer {pointer!r}: index out of range")
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise KustomizeError(f"JSON pointer {pointer!r}: parent is not a container")


def _remove(document: Any, pointer: str) -> None:
    parent, last = _parent(document, pointer)
    _child(parent, last, pointer)  # must exist
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]


# --- transformers ----------------------------------------------------------------------------


def _set_namespace(resources: list[dict], namespace: str) -> None:
    for resource in resources:
        if resource["kind"] in NAMESPACE_REFERENCES:
            raise KustomizeError(f"{resource['kind']}: namespace references are not rewritten here")
        if resource["kind"] not in CLUSTER_SCOPED:
            resource["metadata"]["namespace"] = namespace


def _add_labels(resources: list[dict], entry: dict) -> None:
    if entry.get("includeSelectors") or entry.get("includeTemplates"):
        raise KustomizeError(
            "labels: only metadata labels (includeSelectors/includeTemplates false) are supported"
        )
    if set(entry) - {"pairs", "includeSelectors", "includeTemplates"}:
        raise KustomizeError(f"labels: unsupported fields {sorted(entry)}")
    for resource in resources:
        resource["metadata"].setdefault("labels", {}).update(entry["pairs"])


def _set_image(resources: list[dict], entry: dict) -> None:
    if set(entry) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeError(f"images: unsupported fields {sorted(entry)}")
    for container in (c for r in resources for c in _containers(r)):
        name, tag = split_image(container["image"])
        if name != entry["name"]:
            continue
        name = entry.get("newName", name)
        if "digest" in entry:
            tag = "@" + entry["digest"]
        elif "newTag" in entry:
            tag = ":" + str(entry["newTag"])
        container["image"] = name + tag


def split_image(image: str) -> tuple[str, str]:
    """('registry:5000/repo', ':tag') or ('repo', '@sha256:...') or ('repo', '')."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _containers(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict) and "image" in c)
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.deploy.kustomize DIRECTORY", file=sys.stderr)
        return 2
    sys.stdout.write(to_yaml(render(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
