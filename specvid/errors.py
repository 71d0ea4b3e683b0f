"""The SpecVid error hierarchy.

Every error a user can cause or meet carries an HTTP status, so the REST layer turns it into a
JSON answer without guessing, and every error pickles (it crosses Ray process boundaries).
"""

from __future__ import annotations

import math


class SpecVidError(Exception):
    """Base class: a message for the user plus the HTTP status that describes it."""

    status_code: int = 500
    code: str = "internal_error"
    # The code OpenAI's API gives the same condition, where the project's differs (the
    # OpenAI-compatible route answers with it, so OpenAI clients recognise the error).
    openai_code: str | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        # Subclasses keep the one-argument constructor, so pickling by (class, message) is exact.
        return (type(self), (self.message,))

    def to_dict(self, openai: bool = False) -> dict:
        """The error body; `openai`: as the OpenAI-compatible route answers it (OpenAI's code)."""
        code = self.openai_code if openai and self.openai_code else self.code
        return {"error": {"code": code, "message": self.message, "status": self.status_code}}


class InvalidRequestError(SpecVidError):
    """The request itself is malformed or asks for something out of range."""

    status_code = 400
    code = "invalid_request"


class ContextLengthError(InvalidRequestError):
    """The prompt, the video and `max_tokens` together do not fit the context (a 400, as OpenAI's
    API and vLLM answer it: the request can be fixed by asking for fewer tokens)."""

    code = "context_too_long"
    openai_code = "context_length_exceeded"


class InvalidVideoError(InvalidRequestError):
    """The bytes are not a decodable video (corrupt, truncated, empty, not a video)."""

    code = "invalid_video"


class UnauthorizedError(SpecVidError):
    """The request carries no API key, or a wrong one."""

    status_code = 401
    code = "unauthorized"


class NotFoundError(SpecVidError):
    """No such route."""

    status_code = 404
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """The request names a model this deployment does not serve."""

    code = "model_not_found"


class MethodNotAllowedError(SpecVidError):
    """The route exists, but not for this HTTP method."""

    status_code = 405
    code = "method_not_allowed"


class ForbiddenSourceError(SpecVidError):
    """The video source is outside what this deployment may read."""

    status_code = 403
    code = "forbidden_source"


class SourceNotFoundError(SpecVidError):
    """The video source names an object or file that does not exist."""

    status_code = 404
    code = "source_not_found"


class TooLargeError(SpecVidError):
    """The input exceeds a configured cap (bytes, duration, frames, pixels, tokens)."""

    status_code = 413
    code = "too_large"


class UnavailableError(SpecVidError):
    """A dependency (storage, a worker replica) could not serve the request right now."""

    status_code = 503
    code = "unavailable"


class OverloadedError(UnavailableError):
    """The deployment is at its admission limit: the request was refused before any work.

    Carries how long the client should wait before trying again (HTTP `Retry-After`).
    """

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self):
        return (type(self), (self.message, self.retry_after_s))

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}  # whole seconds, never sooner


class RequestTimeoutError(SpecVidError):
    """The request did not finish within the deployment's time limit (its work was stopped)."""

    status_code = 504
    code = "timeout"


class SessionLostError(UnavailableError):
    """A worker no longer holds the session a request refers to (restart, eviction).

    Recoverable: the caller re-prefills that worker from the committed tokens.
    """

    code = "session_lost"


class ModelLoadError(SpecVidError):
    """A model spec could not be turned into a loaded model."""

    status_code = 500
    code = "model_load_error"
