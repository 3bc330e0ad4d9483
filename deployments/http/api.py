"""The FastAPI app shared by the ingress's route classes: limits, error handlers, API-key check.

(No `from __future__ import annotations` in route modules: FastAPI must see real annotations on the
`serve.ingress` methods.)
"""

import functools
from typing import Annotated

from fastapi import Depends, FastAPI, Header

from deployments.http.errors import ApiError, BodySizeLimit, Scope, install_error_handlers
from infra.settings import Settings, load_settings

# Multipart bodies carry audio files; the form fields around a file need a little room of their own.
_MULTIPART_OVERHEAD = 1024 * 1024


@functools.cache
def settings() -> Settings:
    """This process's settings (a replica reads its `SOUNDSTAGE_*` from its runtime_env)."""
    return load_settings()


def body_limit(scope: Scope) -> int:
    """Multipart requests (audio uploads) may be as large as an upload; JSON bodies stay small."""
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
    if content_type.startswith(b"multipart/form-data"):
        return settings().max_upload_bytes + _MULTIPART_OVERHEAD
    return settings().max_request_bytes


app = FastAPI(
    title="soundstage",
    version="0.1.0",
    description="AI audio models on Ray Serve: durable generation jobs, results in S3 via presigned URLs.",
)
app.add_middleware(BodySizeLimit, max_bytes=body_limit)
install_error_handlers(app)


def require_api_key(authorization: Annotated[str | None, Header()] = None) -> None:
    """If `SOUNDSTAGE_API_KEYS` is set, `/v1` wants `Authorization: Bearer <key>`."""
    keys = settings().api_keys
    if not keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or token not in keys:
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)")


Authorized = Depends(require_api_key)
