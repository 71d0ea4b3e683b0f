"""A plain `pip install .` (no extras) runs every `specvid` command: no module of the package
imports, at module level, a package that only an extra (`serve`, `test`) or the environment
brings.

The check runs in a fresh interpreter whose site-packages is this environment's, less every
distribution a plain install would not bring (their modules and their metadata both), so
`import ray` fails there as it would on a user's machine, and libraries probing for optional
packages see them absent."""

from __future__ import annotations

import json
import site
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import contextlib, importlib, io, json, pkgutil, sys
import specvid
for module in pkgutil.walk_packages(specvid.__path__, "specvid."):
    importlib.import_module(module.name)
from specvid.cli import build_parser, main
commands = []
def walk(parser, prefix):
    for action in parser._actions:
        if hasattr(action, "_name_parser_map"):
            for name, sub in action.choices.items():
                walk(sub, prefix + [name])
            return
    commands.append(prefix)
walk(build_parser(), [])
helped = {}
for command in commands:
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        try:
            main(command + ["--help"])
        except SystemExit as exit:
            helped[" ".join(command)] = (exit.code, shown.getvalue()[:200])
print(json.dumps(helped))
"""


def _name(dist: str) -> str:
    return dist.lower().replace("_", "-")


def base_distributions() -> set[str]:
    """The project's own dependencies and everything they require, extras left out."""
    seen: set[str] = set()
    todo = [Requirement(r).name for r in metadata.requires("specvid") or [] if "extra ==" not in r]
    while todo:
        name = _name(metadata.distribution(todo.pop()).metadata["Name"])
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def plain_site_packages(into: Path) -> tuple[Path, list[str]]:
    """A site-packages of links to this one's entries, without the distributions a plain install
    lacks; and the names of those distributions."""
    keep = base_distributions() | {"specvid", "pip", "setuptools"}
    site_dir = Path(site.getsitepackages()[0])
    dropped_files, dropped = set(), []
    for dist in metadata.distributions():
        if _name(dist.metadata["Name"]) in keep:
            continue
        dropped.append(_name(dist.metadata["Name"]))
        for file in dist.files or []:
            dropped_files.add(Path(file).parts[0])
    into.mkdir()
    for entry in site_dir.iterdir():
        if entry.name not in dropped_files and not entry.name.endswith(".pth"):
            (into / entry.name).symlink_to(entry)
    return into, sorted(dropped)


def test_every_module_and_command_works_without_the_extras(tmp_path):
    packages, dropped = plain_site_packages(tmp_path / "site-packages")
    assert {"ray", "pytest", "moto", "openai", "deepspeed"} <= set(dropped)  # the extras really are gone
    assert "requests" not in dropped  # `bench-serve --url` needs it: a base dependency
    # -S: no site-packages of this environment; the plain one and the source tree instead.
    env = {"PYTHONPATH": f"{ROOT}:{packages}", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    found = subprocess.run([sys.executable, "-S", "-c", CHECK], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=240)
    assert found.returncode == 0, found.stderr[-3000:]
    helped = json.loads(found.stdout.splitlines()[-1])
    assert {"bench-serve", "generate", "zoo eval"} <= set(helped)
    for command, (code, text) in helped.items():
        assert code == 0 and text.startswith("usage:"), f"specvid {command} --help: {code} {text}"
