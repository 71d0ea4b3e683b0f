"""The HTTP surface around the router: the FastAPI app, API keys, body limits, the error format.

Every answer that is not a success has the project's error body,
`{"error": {"code", "message", "status"}}`, with the matching HTTP status: unknown routes (404),
wrong methods (405), bad JSON, too deep or too large bodies (400 / 413), missing or wrong API
keys (401), and anything unexpected (500, logged with its traceback, never shown).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.remote import unwrap
from specvid.config import Limits
from specvid.errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    SpecVidError,
    TooLargeError,
    UnauthorizedError,
)

logger = logging.getLogger("ray.serve")
OPEN_ROUTES = frozenset({"/healthz"})
OPENAI_ROUTE = "/v1/chat/completions"

api = FastAPI(title="SpecVid", description="Speculative decoding for Video-LLMs")


def configure(api_key: Optional[str], limits: Limits) -> None:
    """What the middleware checks; set once by the router replica that owns this app."""
    api.state.api_key = api_key
    api.state.limits = limits


def api_key_from_env(name: str) -> Optional[str]:
    return os.environ.get(name) or None


def error_response(error: BaseException, openai: bool = False) -> JSONResponse:
    """The error's JSON body and status; `openai`: on the OpenAI-compatible route, which names
    conditions with OpenAI's codes where they differ (`context_length_exceeded`)."""
    error = unwrap(error)
    if not isinstance(error, SpecVidError):
        logger.error("unexpected error", exc_info=error)
        error = SpecVidError(f"internal error: {type(error).__name__}")
    return JSONResponse(error.to_dict(openai), status_code=error.status_code, headers=getattr(error, "headers", None))


def is_openai_route(path: str) -> bool:
    return path.rstrip("/").endswith(OPENAI_ROUTE)


class _RequestGuard:
    """API key and declared body size, checked before any route runs or any body is read.

    A plain ASGI middleware, so streamed answers and client disconnects pass through untouched.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            path, root = scope["path"], scope.get("root_path", "")
            if root and path.startswith(root):  # routes are matched below the route prefix
                path = path[len(root) :]
            refusal = _refusal(path, headers)
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refusal(path: str, headers: dict[str, str]) -> Optional[SpecVidError]:
    expected = getattr(api.state, "api_key", None)
    if expected is not None and path not in OPEN_ROUTES:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        # Constant-time comparison: the time taken says nothing about how much of a key matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
            return UnauthorizedError("missing or wrong API key: send 'Authorization: Bearer <key>'")
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > _limits().max_body_bytes):
        return _body_too_large(declared, _limits())
    return None


def _limits() -> Limits:
    return getattr(api.state, "limits", None) or Limits()


api.add_middleware(_RequestGuard)


def _body_too_large(size: str, limits: Limits) -> SpecVidError:
    if not size.isdigit():
        return InvalidRequestError(f"Content-Length {size!r} is not a number")
    return TooLargeError(f"the body has {size} bytes; the limit is {limits.max_body_bytes} (limits.max_body_bytes)")


@api.exception_handler(SpecVidError)
async def _specvid_error(request: Request, error: SpecVidError) -> JSONResponse:
    return error_response(error, is_openai_route(request.url.path))


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    return error_response(InvalidRequestError(str(error)))


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    return error_response(error, is_openai_route(request.url.path))


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if error.status_code == 404:
        return error_response(NotFoundError(f"no route {request.url.path}"))
    if error.status_code == 405:
        return error_response(MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}"))
    generic = SpecVidError(str(error.detail))
    generic.status_code, generic.code = error.status_code, "http_error"
    return error_response(generic)


async def json_body(request: Request) -> Any:
    """The request's JSON body, refused when too large, malformed or nested too deep."""
    limits = _limits()
    data = await request.body()
    if len(data) > limits.max_body_bytes:  # a chunked body declares no length up front
        raise _body_too_large(str(len(data)), limits)
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequestError("the request body is not valid JSON") from None
    except RecursionError:
        raise InvalidRequestError(f"the JSON body nests deeper than {limits.max_json_depth} levels") from None
    if json_depth(body) > limits.max_json_depth:
        raise InvalidRequestError(f"the JSON body nests deeper than {limits.max_json_depth} levels")
    return body


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in children)
    return deepest
