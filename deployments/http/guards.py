"""Checks at the door, before a route reads anything: the API key (before the body), and, around every
route, that no number in the request is NaN or infinite.

`Authenticate` is ASGI middleware: an unauthenticated `/v1` request is answered 401 without one byte of
its body being read, and an authenticated one carries its `Tenant` in `request.state.tenant`.
`EdgeRoute` is the route class of every router: it refuses non-finite numbers (JSON's `NaN`, a form's
`inf`) with 422 wherever they sit in the validated arguments, models and lists included.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel

from deployments.http.errors import ApiError, ASGIApp, Receive, Scope, Send, error_response
from infra.tenancy import OPEN, KeyRing

PROTECTED_PREFIX = "/v1"


class Authenticate:
    """Resolve `Authorization: Bearer <key>` to a tenant for `/v1` paths, or answer 401 unread."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        tenant = OPEN if self.keys.open else self._tenant(scope)
        if tenant is None:
            response = error_response(
                401,
                "unauthorized",
                "missing or invalid API key (Authorization: Bearer <key>)",
                path=str(scope.get("path", "")),
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, receive, send)

    def _tenant(self, scope: Scope) -> Any:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.keys.resolve(token.strip())


def non_finite_at(value: object, where: str = "") -> str | None:
    """The location of the first NaN/Inf in `value` (floats, models, mappings, sequences), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where or "value"
    if isinstance(value, BaseModel):
        items: Any = ((name, getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple | set | frozenset):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite_at(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _checked(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    if not inspect.iscoroutinefunction(endpoint):
        return endpoint  # every route here is async; a sync one would be checked by hand

    @functools.wraps(endpoint)
    async def checked(*args: Any, **kwargs: Any) -> Any:
        where = non_finite_at(kwargs)
        if where is not None:
            raise ApiError(
                422, "invalid_request", f"{where}: must be a finite number (not NaN or infinity)", param=where
            )
        return await endpoint(*args, **kwargs)

    return checked


class EdgeRoute(APIRoute):
    """Every route's endpoint behind the non-finite number check."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, _checked(endpoint), **kwargs)
