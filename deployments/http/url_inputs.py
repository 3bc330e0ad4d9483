"""Job inputs given by `url`: fetched once, at submission, by the ingress, then validated and kept as an
upload like a sent file, so the job never depends on the remote server staying up.

Only `http` and `https`, no redirects, the upload size limit while reading, a timeout. Unless
`SOUNDSTAGE_ALLOW_PRIVATE_URLS` is set, the host must resolve to public addresses only: a URL must not
be a way to make the cluster call its own services or a cloud metadata endpoint (SSRF).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import unquote, urlsplit

import httpx

from deployments.http.errors import ApiError
from infra.settings import Settings

_CHUNK = 1024 * 1024


def fetch_url(url: str, settings: Settings) -> tuple[bytes, str | None]:
    """The body at `url` and a filename from its path; 4xx `ApiError` when it cannot or may not be read."""
    host = _checked_host(url)
    if not settings.allow_private_urls:
        _refuse_private(host)
    try:
        with httpx.stream("GET", url, timeout=settings.url_fetch_timeout_s, follow_redirects=False) as r:
            if r.status_code != 200:
                raise ApiError(422, "url_fetch_failed", f"GET {_shown(url)} answered {r.status_code}")
            data = _read_limited(r, settings.max_upload_bytes)
    except httpx.HTTPError as e:
        raise ApiError(422, "url_fetch_failed", f"GET {_shown(url)} failed: {type(e).__name__}") from e
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or None
    return data, name


def _checked_host(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(422, "invalid_url", "`url` must be an absolute http(s) URL")
    return parts.hostname


def _refuse_private(host: str) -> None:
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise ApiError(422, "url_fetch_failed", f"cannot resolve {host!r}") from e
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            raise ApiError(422, "url_not_allowed", f"{host!r} resolves to a non-public address")


def _read_limited(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "audio_too_large", f"the body at `url` exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _shown(url: str) -> str:
    """The URL without its query (presigned URLs carry credentials there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
