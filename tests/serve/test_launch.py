"""`make run`'s launcher as a user meets it, with an API key set (what a user does before exposing
the port): the first answer, the printed curl and handle examples run from a second, bare
terminal, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ops.launch import session_processes
from specvid.models.tensor_parallel import free_port

ROOT = Path(__file__).resolve().parents[2]
UP_S, STOP_S = 300, 10
KEY = "launch-test-key"


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def config(tmp_path) -> Path:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = free_port()
    config["applications"][0]["args"]["sources"]["s3_endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_make_run_with_a_key_answers_prints_working_examples_and_stops_cleanly(config):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["SPECVID_API_KEY"] = KEY
    started: list[int] = []
    launcher = subprocess.Popen(
        [sys.executable, "-m", "ops.launch", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        lines, deadline = [], time.monotonic() + UP_S
        while time.monotonic() < deadline and not any("Ctrl-C stops" in line for line in lines):
            line = launcher.stdout.readline()
            assert line, f"the launcher ended early: {''.join(lines)}"
            lines.append(line)
        output = "".join(lines)
        assert re.search(r"^A: '.+'", output, re.M), output  # the first answer, from the trained pair
        example = next(line.strip() for line in lines if "serve.get_app_handle" in line)
        assert KEY not in output  # the examples name the key's variable, never the key
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("curl "))
        curl = lines[start].strip() + "\n" + lines[start + 1].strip()

        # A second terminal: nothing but HOME and PATH, in the repository.
        bare = {"HOME": os.environ["HOME"], "PATH": os.environ["PATH"]}
        for key, answered in ((KEY, '"text"'), ("wrong", '"unauthorized"')):
            called = subprocess.run(["bash", "-c", curl], cwd=ROOT, env={**bare, "SPECVID_API_KEY": key},
                                    capture_output=True, text=True, timeout=120)
            assert answered in called.stdout, (key, called.stdout[-2000:], called.stderr[-2000:])
        handle = subprocess.run(["bash", "-c", example], cwd=ROOT, env=bare, capture_output=True, text=True,
                                timeout=120)
        assert handle.returncode == 0, handle.stderr[-2000:]
        assert handle.stdout.strip(), handle.stderr[-2000:]

        serve_run = next(
            p for p in children_of(launcher.pid)
            if any(arg.endswith(b"/serve") for arg in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0"))
        )
        started += [launcher.pid, serve_run, *session_processes(serve_run), *children_of(launcher.pid)]
        assert len(started) > 5  # Ray's daemons and workers are in there
        stopping = time.monotonic()
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(STOP_S)
        while any(alive(pid) for pid in started) and time.monotonic() - stopping < STOP_S:
            time.sleep(0.2)
        left = [pid for pid in started if alive(pid)]
        assert not left, f"still running {time.monotonic() - stopping:.1f} s after SIGTERM: {left}"
    finally:  # whatever happened above, leave nothing running
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)  # the launcher stops its own children
            try:
                launcher.wait(2 * STOP_S)
            except subprocess.TimeoutExpired:
                launcher.kill()
        launcher.wait()
        launcher.stdout.close()
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
