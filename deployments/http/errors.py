"""HTTP edge rules for the ingress: JSON error bodies, body-size limit.

soundstage's own routes answer `{error: {code, message}}`. The OpenAI-compatible routes (`/v1/audio/*`,
`/v1/models`) answer in OpenAI's shape, `{error: {message, type, param, code}}`, and with 400 where
soundstage says 422 (OpenAI has no 422): `error_response` picks the shape from the request path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.families.client import ModelStartingError
from infra import audio as audio_io
from infra.audio import AudioError
from infra.storage import TransientStorageError
from infra.uploads import UploadNotFoundError
from infra.voice_store import VoiceNotFoundError
from models.types import ModelCallError, ModelInputError
from pipelines.engine.kinds import AdmissionError

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiError(Exception):
    """An error the client can act on: an HTTP status, a stable code and a message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.param = param  # the request field at fault, where one is (OpenAI's error `param`)


# Too big to take: 413; a container we do not read: 415; every other bad audio file: 422.
_AUDIO_STATUS = {audio_io.AudioTooLargeError: 413, audio_io.UnsupportedAudioFormatError: 415}


def domain_error(error: Exception) -> ApiError | None:
    """The HTTP error a typed domain error maps to (None: not a client error)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, AdmissionError):
        return ApiError(error.status, error.code, str(error))
    if isinstance(error, UploadNotFoundError | VoiceNotFoundError):
        return ApiError(404, error.code, str(error))
    if isinstance(error, AudioError):
        return ApiError(_AUDIO_STATUS.get(type(error), 422), error.code, str(error))
    if isinstance(error, ModelInputError):  # the model's own words about its input (no Ray text)
        return ApiError(422, error.code, error.message, param=error.field)
    if isinstance(error, ModelCallError):  # the model failed: generic, the details are in its log
        return ApiError(500, error.code, error.message)
    return None


# OpenAI's error `type`: `invalid_request_error` for every 4xx but 429 (`requests`), `server_error` for 5xx.
_OPENAI_TYPES = {429: "requests"}


def is_openai_path(path: str) -> bool:
    """The OpenAI-compatible routes: `/v1/audio/*` and `/v1/models[/{id}]`."""
    return path.startswith(("/v1/audio/", "/v1/models/")) or path == "/v1/models"


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    path: str = "",
    param: str | None = None,
    **extra: Any,
) -> JSONResponse:
    """The error body for a request to `path`: OpenAI's shape on the OpenAI routes, ours elsewhere."""
    if is_openai_path(path):
        status = 400 if status == 422 else status
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    else:
        body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(status_code=status, content=body, headers=headers)


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as JSON with a 4xx code unless the server itself is at fault (then 500)."""

    async def _client_error(request: Request, e: Exception) -> JSONResponse:
        mapped = domain_error(e)
        assert mapped is not None
        return error_response(
            mapped.status,
            mapped.code,
            mapped.message,
            mapped.headers,
            path=request.url.path,
            param=mapped.param,
        )

    client_errors = (ApiError, AdmissionError, UploadNotFoundError, VoiceNotFoundError, AudioError)
    for error_type in (*client_errors, ModelCallError):
        app.add_exception_handler(error_type, _client_error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        code = (
            "malformed_json"
            if any(err.get("type") == "json_invalid" for err in errors)
            else "invalid_request"
        )
        # Where and what only: a value the client sent is not echoed (it may be huge, or NaN, which
        # JSON cannot carry), nor the validator's context.
        details = [
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "type": str(err.get("type", "")),
                "msg": str(err.get("msg", "")),
            }
            for err in errors
        ]
        path = request.url.path
        param = _param(errors[0]) if errors else None
        return error_response(422, code, _validation_message(errors), path=path, param=param, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code, message = _HTTP_ERRORS.get(e.status_code, ("http_error", "the request cannot be served"))
        return error_response(e.status_code, code, message, path=request.url.path)

    @app.exception_handler(Exception)
    async def _fault(request: Request, e: Exception) -> JSONResponse:
        path = request.url.path
        overloaded = overload_error(e)
        if overloaded is not None:
            logger.warning("overloaded on %s %s: %s", request.method, path, type(e).__name__)
            return error_response(
                overloaded.status, overloaded.code, overloaded.message, overloaded.headers, path=path
            )
        logger.exception("unhandled error on %s %s", request.method, path)
        return error_response(500, "internal_error", "internal server error", path=path)


def _param(error: Any) -> str | None:
    """The request field a validation error is about (OpenAI's `param`): `voice`, `speed`, …"""
    where = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
    return ".".join(where) or None


# Starlette's own errors (no route, wrong method, a body the parser could not read), in our words.
_HTTP_ERRORS = {
    400: ("bad_request", "the request could not be parsed"),
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "method not allowed on this resource"),
}
RETRY_AFTER_S = 1
_OVERLOADED = {"BackPressureError", "DeploymentUnavailableError", "ReplicaUnavailableError"}


STORE_RETRY_AFTER_S = 5


def overload_error(error: BaseException) -> ApiError | None:
    """503 + `Retry-After` when a model deployment refused the call for being full (Serve's
    `BackPressureError`), had no replica, or is starting from zero replicas (`model_starting`), or the
    object store is unreachable; None for anything
    else. Serve's errors are matched by name: the edge maps what Serve raises without its text."""
    if isinstance(error, TransientStorageError):
        return ApiError(
            503,
            "storage_unavailable",
            "the object store is unreachable; retry after the delay in Retry-After",
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        )
    if isinstance(error, ModelStartingError):
        return ApiError(
            503,
            "model_starting",
            f"{error}; retry after the delay in Retry-After",
            headers={"Retry-After": str(error.retry_after_s)},
        )
    if type(error).__name__ in _OVERLOADED:
        return ApiError(
            503,
            "overloaded",
            "the model deployments are at capacity; retry after the delay in Retry-After",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return None


class _BodyTooLarge(Exception):
    """Raised into the app by `BodySizeLimit`'s receive once the body passes its limit."""


class BodySizeLimit:
    """Reject request bodies over `max_bytes` with 413, by Content-Length or while streaming.

    Nothing is buffered here: the body flows to the route as it arrives (multipart files are spooled to
    disk by the form parser), counted on the way. Past the limit the app's next read fails and whatever
    it answers is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: Callable[[Scope], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._reject(scope, receive, send, limit)
            return
        size = 0
        exceeded = False
        started = False

        async def counted() -> Message:
            nonlocal size, exceeded
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a failed read; the 413 goes instead
            started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counted, guarded_send)
        if exceeded and not started:
            await self._reject(scope, receive, send, limit)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(
            413,
            "body_too_large",
            f"request body exceeds {limit} bytes (or has a bad Content-Length)",
            path=str(scope.get("path", "")),
        )
        await response(scope, receive, send)
