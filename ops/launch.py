"""`make run`: the whole application on this machine, from the embedded defaults.

1. starts a local S3 endpoint (moto's server) where `serve_config.yaml` expects it, and
   uploads the ShapesWorld sample clips to the allowed bucket;
2. starts the application with `serve run serve_config.yaml`;
3. waits until `/healthz` answers, sends one request, and prints how to call the service;
   with an API key set (`SPECVID_API_KEY`, or the variable `api_key_env` names), the request
   and the printed examples carry it;
4. stays up until Ctrl-C (or SIGTERM), then stops everything it started.

    python -m ops.launch [--config serve_config.yaml] [--once]

`--once` stops after the first answer (used by the test suite and CI smoke checks).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import yaml

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "specvid-local",
    "AWS_SECRET_ACCESS_KEY": "specvid-local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
READY_TIMEOUT_S = 240
STOP_GRACE_S = 5  # then whatever is left of the cluster is killed: everything is gone within 10 s
HANDLE_EXAMPLE = (
    "RAY_AUTH_MODE=token RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 .venv/bin/python -c 'import ray; from ray import serve; ray.init(address=\"{address}\", "
    "logging_level=\"ERROR\"); h = serve.get_app_handle(\"specvid\"); "
    "print(h.generate.remote({{\"video\": \"{uri}\", \"prompt\": \"Describe the video.\"}}).result()[\"text\"])'"
)


def app_settings(config_path: Path) -> dict:
    """Where the config puts the HTTP port and the S3 endpoint and bucket."""
    config = yaml.safe_load(config_path.read_text())
    app = config["applications"][0]
    sources = app["args"].get("sources", {})
    endpoint = sources.get("s3_endpoint_url")
    buckets = sources.get("s3_allowed_buckets") or ["specvid-samples"]
    if not endpoint:
        raise SystemExit(f"{config_path}: args.sources.s3_endpoint_url must name the local S3 endpoint")
    http = config.get("http_options", {})
    return {
        "http": f"http://{http.get('host', '127.0.0.1')}:{http.get('port', 8000)}",
        "s3_endpoint": endpoint,
        "bucket": buckets[0],
        "model": app["args"].get("served_model_name", "specvid"),
        "api_key_env": app["args"].get("api_key_env", "SPECVID_API_KEY"),
    }


def start_s3(endpoint: str) -> subprocess.Popen:
    url = urlparse(endpoint)
    if url.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"the local S3 endpoint must be on loopback, got {endpoint}")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(url.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: _http_status(endpoint) is not None, 30, f"S3 endpoint {endpoint}", server)
    return server


def upload_samples(endpoint: str, bucket: str) -> list[dict]:
    import boto3

    from specvid.shapesworld.sample import SAMPLE_CLIPS, write_samples

    s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    s3.create_bucket(Bucket=bucket)
    with tempfile.TemporaryDirectory(prefix="specvid-samples-") as tmp:
        records = write_samples(Path(tmp), SAMPLE_CLIPS)
        for record in records:
            s3.upload_file(str(Path(tmp) / record["file"]), bucket, record["file"])
            record["uri"] = f"s3://{bucket}/{record['file']}"
    return records


def start_serve(config_path: Path) -> subprocess.Popen:
    # Its own process group, so Ctrl-C / SIGTERM reach `serve run` and Ray's children alike.
    serve_cli = Path(sys.executable).with_name("serve")  # the one installed beside this Python
    return subprocess.Popen([str(serve_cli), "run", str(config_path)], start_new_session=True)


def first_request(http: str, uri: str, question: str, api_key: Optional[str]) -> dict:
    body = {"video": uri, "prompt": question, "sampling": {"max_tokens": 32}, "decoding": {"method": "sd"}}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(f"{http}/v1/generate", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(
            f"the first request failed: HTTP {e.code} {e.read().decode(errors='replace')}"
        ) from None


def usage_text(settings: dict, uri: str, address: str, keyed: bool) -> str:
    """How to call the service; with a key, the examples read it from its variable (never print it)."""
    http, model, env = settings["http"], settings["model"], settings["api_key_env"]
    auth = f' -H "Authorization: Bearer ${env}"' if keyed else ""
    key = f'os.environ["{env}"]' if keyed else '"unused"'
    keyed_note = f"\n  Every route but /healthz needs the API key in ${env}.\n" if keyed else ""
    return f"""
SpecVid is up at {http}
{keyed_note}
  curl -s {http}/v1/generate -H 'Content-Type: application/json'{auth} \\
    -d '{{"video": "{uri}", "prompt": "Describe the video.", "decoding": {{"method": "sd"}}}}'

  OpenAI client:
    import os
    from openai import OpenAI
    client = OpenAI(base_url="{http}/v1", api_key={key})
    client.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": [
        {{"type": "video_url", "video_url": {{"url": "{uri}"}}}},
        {{"type": "text", "text": "Describe the video."}}]}}])

  Python handle, from another terminal in this directory (Ray's token is in ~/.ray/auth_token):
    {HANDLE_EXAMPLE.format(uri=uri, address=address)}

Ctrl-C stops the service and the local S3 endpoint.
"""


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("serve_config.yaml"))
    parser.add_argument("--once", action="store_true", help="stop after the first answer")
    args = parser.parse_args(argv)

    settings = app_settings(args.config)
    os.environ.update(FAKE_AWS)
    # Ray's token authentication stays on (its default for a new local cluster): the token lives
    # in ~/.ray/auth_token, so only this user's processes can reach the cluster's open ports.
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        raise SystemExit("make run keeps Ray's token authentication on; unset RAY_AUTH_MODE")
    children: list[subprocess.Popen] = []
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    try:
        children.append(start_s3(settings["s3_endpoint"]))
        samples = upload_samples(settings["s3_endpoint"], settings["bucket"])
        print(
            f"local S3 at {settings['s3_endpoint']}: {len(samples)} sample clips in s3://{settings['bucket']}/"
        )
        serve_run = start_serve(args.config)
        children.append(serve_run)
        healthz = f"{settings['http']}/healthz"
        _wait_for(lambda: _http_status(healthz) == 200, READY_TIMEOUT_S, "the application", serve_run)
        sample = samples[0]
        question = sample["caption_prompt"]
        api_key = os.environ.get(settings["api_key_env"]) or None
        answer = first_request(settings["http"], sample["uri"], question, api_key)
        print(
            f"\nQ: {question}\nA: {answer['text']!r}  (tau {answer['stats']['tau']:.2f}, {answer['num_tokens']} tokens)"
        )
        print(usage_text(settings, sample["uri"], gcs_address(serve_run.pid) or "auto", api_key is not None))
        while not args.once and not stop["requested"] and serve_run.poll() is None:
            time.sleep(0.5)
        return 0 if serve_run.poll() in (None, 0) else 1
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            _stop(child)


def _boto_credentials() -> dict:
    return {
        "aws_access_key_id": FAKE_AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
    }


def _http_status(url: str) -> Optional[int]:
    """The HTTP status `url` answers with, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def _wait_for(ready, timeout_s: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode} before it was ready")
        time.sleep(0.5)
    raise SystemExit(f"{what} was not ready within {timeout_s} s")


def _stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a child and every process of its session: Ray's daemons and workers included, which
    put themselves in process groups of their own but stay in the session `serve run` leads."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGINT)  # serve run shuts its applications down on SIGINT
        except (ProcessLookupError, PermissionError):
            process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    for pid in [process.pid, *session_processes(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


def session_processes(session_id: int) -> list[int]:
    """Pids of the processes in a session (Linux /proc), the leader excluded."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        pid = int(stat.parent.name)
        if int(fields[3]) == session_id and pid != session_id:  # field 6 of stat: the session id
            pids.append(pid)
    return pids


def gcs_address(session_id: int) -> Optional[str]:
    """host:port of the GCS that `serve run` started in its session, as its raylet names it."""
    for pid in session_processes(session_id):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"raylet"):
            for arg in args[1:]:
                if arg.startswith(b"--gcs-address="):
                    return arg.split(b"=", 1)[1].decode()
    return None


if __name__ == "__main__":
    sys.exit(main())
