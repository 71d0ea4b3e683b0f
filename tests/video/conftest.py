"""Real endpoints for the video-source tests, all on 127.0.0.1.

(The loopback S3 fixtures `moto_endpoint`, `aws_env`, `s3` and `bucket` live in tests/conftest.py.)
- `https_server`: a TLS file server with a self-signed certificate for 127.0.0.1 whose
  answers tests script per path; `trust_https_server` makes urllib trust it.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class ScriptedHttpsServer:
    """Answers GET <path> with the scripted (status, headers, body) replies in order; the last
    reply repeats. Counts the requests per path."""

    base_url: str
    cafile: Path
    replies: dict[str, list[tuple[int, dict[str, str], bytes]]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url + path

    def next_reply(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.hits[path] = self.hits.get(path, 0) + 1
        script = self.replies.get(path) or [(404, {}, b"")]
        return script.pop(0) if len(script) > 1 else script[0]


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _handler_for(script: ScriptedHttpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = script.next_reply(self.path)
            self.send_response(status)
            for header, value in headers.items():
                self.send_header(header, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # keep test output quiet
            pass

    return Handler


@pytest.fixture(scope="session")
def _https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedHttpsServer]:
    cert_path, key_path = _self_signed_certificate(tmp_path_factory.mktemp("tls"))
    script = ScriptedHttpsServer(base_url="", cafile=cert_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(script))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    script.base_url = f"https://127.0.0.1:{server.server_address[1]}"
    # A short poll interval keeps shutdown() from waiting half a second.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield script
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def https_server(_https_server: ScriptedHttpsServer) -> ScriptedHttpsServer:
    """The session's server with a clean script for this test."""
    _https_server.replies.clear()
    _https_server.hits.clear()
    return _https_server


@pytest.fixture
def trust_https_server(monkeypatch: pytest.MonkeyPatch, https_server: ScriptedHttpsServer):
    # OpenSSL reads SSL_CERT_FILE whenever urllib builds its default context.
    monkeypatch.setenv("SSL_CERT_FILE", str(https_server.cafile))
    return https_server
