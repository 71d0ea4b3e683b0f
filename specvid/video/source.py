"""Video sources: a URI in, the bytes of one video file out.

Three kinds of source are read, each under its own rule (see docs/video.md):

- ``s3://bucket/key`` through boto3 (this is the only module of the project that imports it);
  the endpoint is ``SourceConfig.s3_endpoint_url``, else whatever boto3 itself resolves
  (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, the AWS default).
- local paths, plain or ``file://``, only when ``SourceConfig.local_root`` is set and the path,
  symlinks resolved, lies inside it.
- ``https://`` URLs whose host is on ``SourceConfig.https_allowlist`` (redirects too).

Every failure is a ``SpecVidError`` with its HTTP status. Transient failures (connection
trouble, timeouts, throttling, 5xx) are retried ``max_retries`` times with a back-off that
starts at ``backoff_s`` and doubles, then reported as ``UnavailableError``.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import ssl
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, BinaryIO, Optional

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config as BotoConfig

from specvid.config import SourceConfig, VideoLimits
from specvid.errors import (
    ForbiddenSourceError,
    InvalidRequestError,
    SourceNotFoundError,
    TooLargeError,
    UnavailableError,
)

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_READ_CHUNK = 1 << 20

# S3 error codes that say "try again later" even where the HTTP status does not.
_S3_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
    }
)
_BOTO_TRANSIENT_ERRORS = (
    boto_errors.ConnectionError,  # refused, DNS, connect timeout, proxy
    boto_errors.HTTPClientError,  # read timeout, connection closed, broken body stream
    boto_errors.IncompleteReadError,
)


class _TransientError(Exception):
    """A failure worth another attempt; never leaves this module."""


def fetch_video_bytes(uri: str, config: SourceConfig, limits: VideoLimits) -> bytes:
    """Read the whole video named by `uri`, at most `limits.max_bytes` of it.

    Raises InvalidRequestError (400) for an empty or malformed URI or an unsupported scheme,
    ForbiddenSourceError (403) for a source this deployment may not read, SourceNotFoundError
    (404), TooLargeError (413) and UnavailableError (503) once retries are spent.
    """
    _check_uri_text(uri)
    scheme = _scheme_of(uri)
    if scheme is None:
        return _fetch_local(uri, config, limits)
    if scheme == "file":
        return _fetch_local(_file_uri_path(uri), config, limits)
    if scheme == "s3":
        return _fetch_s3(uri, config, limits)
    if scheme == "https":
        return _fetch_https(uri, config, limits)
    if scheme == "http":
        raise ForbiddenSourceError(
            "plain http:// video sources are not allowed; use https:// on an allowlisted host"
        )
    raise InvalidRequestError(
        f"unsupported video source scheme {scheme!r}: use s3://, https://, file:// or a local path"
    )


# --- URI parsing ----------------------------------------------------------------------------


def _check_uri_text(uri: Any) -> None:
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidRequestError("the video URI is empty")
    if any(ch < " " or ch == "\x7f" for ch in uri):
        raise InvalidRequestError("the video URI contains control characters")


def _scheme_of(uri: str) -> Optional[str]:
    """The lower-cased scheme of `scheme://...`, or None for a plain path.

    Only `scheme://` counts as a scheme, so a local file named `a:b.mp4` stays a path.
    """
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else None


def _file_uri_path(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise InvalidRequestError(f"file:// URI names a remote host {parts.netloc!r}")
    path = urllib.request.url2pathname(parts.path)
    if not path:
        raise InvalidRequestError(f"file:// URI {uri!r} has no path")
    return path


def _split_s3_uri(uri: str) -> tuple[str, str]:
    # Split by hand: urlsplit would cut keys at '?' or '#', which S3 keys may contain.
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise InvalidRequestError(f"malformed S3 URI {uri!r}: expected s3://bucket/key")
    return bucket, key


# --- shared helpers -------------------------------------------------------------------------


def _check_declared_size(size: Optional[int], limits: VideoLimits, what: str) -> None:
    if size is not None and size > limits.max_bytes:
        raise TooLargeError(f"{what} is {size} bytes; the limit is {limits.max_bytes}")


def _read_capped(read: Callable[[int], bytes], limits: VideoLimits, what: str) -> bytes:
    """Read to the end, failing as soon as more than `limits.max_bytes` arrive.

    A declared size can be absent or wrong (a file still growing, a lying server), so the cap
    is enforced on the bytes themselves.
    """
    chunks: list[bytes] = []
    total = 0
    while chunk := read(min(_READ_CHUNK, limits.max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limits.max_bytes:
            raise TooLargeError(f"{what} exceeds the limit of {limits.max_bytes} bytes")
    return b"".join(chunks)


def _with_retries(attempt: Callable[[], bytes], config: SourceConfig, what: str) -> bytes:
    """Run `attempt`; on a transient failure retry with doubling back-off, then give up."""
    delay = config.backoff_s
    for retry in range(config.max_retries):
        try:
            return attempt()
        except _TransientError as e:
            log.warning("fetching %s failed (%s); retry %d in %.2fs", what, e, retry + 1, delay)
            time.sleep(delay)
            delay *= 2
    try:
        return attempt()
    except _TransientError as e:
        raise UnavailableError(
            f"{what} could not be fetched after {config.max_retries + 1} attempts: {e}"
        ) from None


# --- local files ----------------------------------------------------------------------------


def _fetch_local(path: str, config: SourceConfig, limits: VideoLimits) -> bytes:
    real_path = _resolve_inside_root(path, config.local_root)
    try:
        with _open_regular_file(real_path, path) as file:
            _check_declared_size(os.fstat(file.fileno()).st_size, limits, path)
            return _read_capped(file.read, limits, path)
    except (FileNotFoundError, NotADirectoryError):
        raise SourceNotFoundError(f"local video {path!r} does not exist") from None
    except PermissionError:
        raise ForbiddenSourceError(f"local video {path!r} is not readable") from None
    except OSError as e:
        raise UnavailableError(f"local video {path!r} could not be read: {e.strerror}") from None


def _resolve_inside_root(path: str, local_root: Optional[str]) -> str:
    """The real path of `path`, which must lie inside `local_root` once symlinks are resolved."""
    if local_root is None:
        raise ForbiddenSourceError("local video paths are not allowed by this deployment")
    real_root = os.path.realpath(local_root)
    real_path = os.path.realpath(path)
    if os.path.commonpath([real_root, real_path]) != real_root:
        raise ForbiddenSourceError(f"local video {path!r} lies outside the allowed directory")
    return real_path


def _open_regular_file(real_path: str, shown_path: str) -> BinaryIO:
    # O_NONBLOCK keeps a FIFO from blocking the open; the check below then refuses it.
    fd = os.open(real_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidRequestError(f"local video {shown_path!r} is not a regular file")
    return os.fdopen(fd, "rb")


# --- S3 -------------------------------------------------------------------------------------

_s3_clients: dict[tuple[Optional[str], Optional[str], float], Any] = {}
_s3_clients_lock = threading.Lock()


def _fetch_s3(uri: str, config: SourceConfig, limits: VideoLimits) -> bytes:
    bucket, key = _split_s3_uri(uri)
    if config.s3_allowed_buckets is not None and bucket not in config.s3_allowed_buckets:
        raise ForbiddenSourceError(f"S3 bucket {bucket!r} is not allowed by this deployment")
    client = _s3_client(config.s3_endpoint_url, config.timeout_s)
    return _with_retries(lambda: _get_s3_object(client, bucket, key, limits), config, uri)


def _s3_client(endpoint_url: Optional[str], timeout_s: float) -> Any:
    """A boto3 S3 client per (endpoint, timeout), created once and shared (clients are thread-safe).

    With no configured endpoint boto3 resolves one itself; the environment's endpoint variables
    are part of the cache key so changing them yields a fresh client. Credentials are resolved
    when a client is created.
    """
    env_endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    cache_key = (endpoint_url, env_endpoint, timeout_s)
    with _s3_clients_lock:
        if cache_key not in _s3_clients:
            # A session per client: boto3's default session is not safe to share across threads.
            _s3_clients[cache_key] = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, config=_boto_config(timeout_s)
            )
        return _s3_clients[cache_key]


def _boto_config(timeout_s: float) -> BotoConfig:
    # botocore's own retries are off: _with_retries owns the policy, so it is the same for
    # every source and bounded by SourceConfig.
    return BotoConfig(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )


def _get_s3_object(client: Any, bucket: str, key: str, limits: VideoLimits) -> bytes:
    """One attempt: GET the object, refuse it by its ContentLength before reading the body."""
    uri = f"s3://{bucket}/{key}"
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            _check_declared_size(response.get("ContentLength"), limits, uri)
            return _read_capped(body.read, limits, uri)
        finally:
            body.close()
    except boto_errors.ClientError as e:
        raise _s3_client_error(e, bucket, uri) from None
    except _BOTO_TRANSIENT_ERRORS as e:
        raise _TransientError(str(e)) from None
    except boto_errors.ParamValidationError as e:
        raise InvalidRequestError(f"invalid S3 location {uri!r}: {e}") from None
    except boto_errors.BotoCoreError as e:  # no credentials, no region...: configuration
        raise UnavailableError(f"S3 is not usable to read {uri}: {e}") from None


def _s3_client_error(error: boto_errors.ClientError, bucket: str, uri: str) -> Exception:
    """Map an error S3 answered with to our error (or to _TransientError)."""
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in _S3_TRANSIENT_CODES or status == 429 or status >= 500:
        return _TransientError(f"S3 answered {code or 'an error'} (HTTP {status})")
    if code == "NoSuchBucket":
        return SourceNotFoundError(f"S3 bucket {bucket!r} does not exist")
    if code in ("NoSuchKey", "NotFound") or status == 404:
        return SourceNotFoundError(f"{uri} does not exist")
    if code == "AccessDenied" or status == 403:
        return ForbiddenSourceError(f"S3 denied access to {uri} ({code})")
    return UnavailableError(f"S3 refused {uri}: {code} (HTTP {status})")


# --- https ----------------------------------------------------------------------------------


def _fetch_https(url: str, config: SourceConfig, limits: VideoLimits) -> bytes:
    _check_https_url(url, config.https_allowlist)
    opener = urllib.request.build_opener(_AllowlistedRedirects(config.https_allowlist))
    return _with_retries(lambda: _get_https(opener, url, config.timeout_s, limits), config, url)


def _check_https_url(url: str, allowlist: tuple[str, ...]) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as e:
        raise InvalidRequestError(f"malformed URL {url!r}: {e}") from None
    if parts.scheme.lower() != "https":
        raise ForbiddenSourceError(f"{url!r} is not an https:// URL")
    if not parts.hostname:
        raise InvalidRequestError(f"malformed URL {url!r}: no host")
    if parts.hostname not in {host.lower() for host in allowlist}:
        raise ForbiddenSourceError(f"host {parts.hostname!r} is not on the https allowlist")


class _AllowlistedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to https on an allowlisted host, so no listed host can bounce a
    fetch to one this deployment may not reach."""

    def __init__(self, allowlist: tuple[str, ...]):
        super().__init__()
        self._allowlist = allowlist

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        _check_https_url(newurl, self._allowlist)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _get_https(
    opener: urllib.request.OpenerDirector, url: str, timeout_s: float, limits: VideoLimits
) -> bytes:
    """One attempt: GET the URL, refuse it by its Content-Length, then stream under the cap."""
    try:
        with opener.open(url, timeout=timeout_s) as response:
            _check_declared_size(_content_length(response), limits, url)
            return _read_capped(response.read, limits, url)
    except urllib.error.HTTPError as e:
        e.close()
        raise _https_status_error(e.code, url) from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLCertVerificationError):
            raise UnavailableError(f"{url}: TLS certificate not trusted ({e.reason})") from None
        raise _TransientError(str(e.reason)) from None
    except (http.client.HTTPException, OSError) as e:  # timeouts, resets, cut-off bodies
        raise _TransientError(f"{type(e).__name__}: {e}") from None


def _content_length(response: http.client.HTTPResponse) -> Optional[int]:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _https_status_error(status: int, url: str) -> Exception:
    if status in (404, 410):
        return SourceNotFoundError(f"{url} does not exist (HTTP {status})")
    if status in (401, 403):
        return ForbiddenSourceError(f"{url} denied access (HTTP {status})")
    if status in (408, 429) or status >= 500:
        return _TransientError(f"HTTP {status}")
    return UnavailableError(f"{url} answered HTTP {status}")

