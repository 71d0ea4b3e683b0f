"""Shared by the deployment tests: the rendered overlays, their Ray pods, and checkov runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Optional

import pytest
import yaml

from tests.deploy.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
TERRAFORM = ROOT / "terraform"
OVERLAYS = ("cpu-demo", "gpu-qwen", "gpu-llava")
# The Kubernetes minor the manifests are validated against: terraform's default EKS version.
KUBERNETES_VERSION = "1.34"
DEFAULT_CHECKOV = ROOT / ".venv-iac" / "bin" / "checkov"


def render_overlay(name: str) -> list[dict]:
    return render(K8S / "overlays" / name)


def one(resources: list[dict], kind: str) -> dict:
    (match,) = [r for r in resources if r["kind"] == kind]
    return match


def ray_groups(rayservice: dict) -> dict[str, dict]:
    """{'head': headGroupSpec, <groupName>: workerGroupSpec, ...}"""
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in cluster.get("workerGroupSpecs", [])})
    return groups


def ray_pods(rayservice: dict) -> list[dict]:
    """The pods KubeRay makes from each group's template, as plain Pod manifests.

    KubeRay adds its own labels, env and (where none are given) probes; these pods are what the
    manifests themselves decide, which is what schema and policy checks can judge.
    """
    meta = rayservice["metadata"]
    pods = []
    for group, spec in ray_groups(rayservice).items():
        template = spec["template"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    **template.get("metadata", {}),
                    "name": f"{meta['name']}-{group}",
                    "namespace": meta.get("namespace", "default"),
                },
                "spec": template["spec"],
            }
        )
    return pods


def serve_config(rayservice: dict) -> dict:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def checkov_binary() -> Path:
    """checkov lives in its own venv (`make iac-tools`); `make test` names it in SPECVID_CHECKOV."""
    named = os.environ.get("SPECVID_CHECKOV")
    if named:
        if not Path(named).exists():
            pytest.fail(f"SPECVID_CHECKOV={named} does not exist; run `make iac-tools`")
        return Path(named)
    if not DEFAULT_CHECKOV.exists():
        pytest.skip("checkov is not installed: run `make iac-tools` (or `make test`, which does)")
    return DEFAULT_CHECKOV


def run_checkov(directory: Path, framework: str) -> dict:
    """One checkov run over `directory`; its JSON report (one framework)."""
    command = [
        str(checkov_binary()), "-d", str(directory), "--framework", framework,
        "--output", "json", "--skip-download", "--compact",
    ]  # fmt: skip
    # No network at test time: --skip-download keeps checkov off the Prisma Cloud API.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_COLOR": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    if done.returncode not in (0, 1):  # 1: some check failed; anything else: checkov broke
        pytest.fail(f"checkov exited {done.returncode}:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    if isinstance(report, list):
        (report,) = [r for r in report if r.get("check_type") == framework]
    return report


def checkov_results(report: dict, kind: str) -> list[dict]:
    """'passed_checks', 'failed_checks' or 'skipped_checks' (absent when none were run)."""
    return report.get("results", {}).get(kind, [])


def skip_reason(check: dict) -> Optional[str]:
    return (check.get("check_result") or {}).get("suppress_comment")
