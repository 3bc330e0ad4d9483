"""HTTP edge rules for the ingress: JSON error bodies `{error: {code, message}}`, body-size limit."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra import audio as audio_io
from infra.audio import AudioError
from infra.uploads import UploadNotFoundError
from infra.voice_store import VoiceNotFoundError
from pipelines.engine.kinds import AdmissionError

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiError(Exception):
    """An error the client can act on: an HTTP status, a stable code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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
    return None


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message, **extra}})


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as JSON with a 4xx code unless the server itself is at fault (then 500)."""

    async def _client_error(_: Request, e: Exception) -> JSONResponse:
        mapped = domain_error(e)
        assert mapped is not None
        return error_response(mapped.status, mapped.code, mapped.message)

    for error_type in (ApiError, AdmissionError, UploadNotFoundError, VoiceNotFoundError, AudioError):
        app.add_exception_handler(error_type, _client_error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        code = (
            "malformed_json"
            if any(err.get("type") == "json_invalid" for err in errors)
            else "invalid_request"
        )
        details = json.loads(json.dumps(errors, default=str))
        return error_response(422, code, _validation_message(errors), details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(e.status_code, code, str(e.detail))

    @app.exception_handler(Exception)
    async def _fault(request: Request, e: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")


class BodySizeLimit:
    """Reject request bodies over `max_bytes` with 413, by Content-Length or while streaming."""

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
        body = await self._read_body(receive, limit)
        if body is None:
            await self._reject(scope, receive, send, limit)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive, limit: int) -> bytes | None:
        """The whole body, or None as soon as it grows past the limit (chunked uploads included)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(
            413, "body_too_large", f"request body exceeds {limit} bytes (or has a bad Content-Length)"
        )
        await response(scope, receive, send)
