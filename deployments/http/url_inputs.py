"""Job inputs given by `url`: fetched once, at submission, by the ingress, then validated and kept as an
upload like a sent file, so the job never depends on the remote server staying up.

Only `http` and `https`, no redirects, the upload size limit while reading, one total deadline for the
whole fetch (name lookup, connect, every read), async I/O so a slow server holds no thread, and the body
spooled to disk past 1 MB. Unless `SOUNDSTAGE_ALLOW_PRIVATE_URLS` is set, the SSRF guard is on: the port
must be in `SOUNDSTAGE_URL_ALLOWED_PORTS`, every address the host resolves to must be public (NAT64,
6to4 and IPv4-mapped ranges count as not public), and the connection goes to the address that was
checked (the Host header and TLS name stay the URL's), so a second lookup cannot rebind it elsewhere.
Failures are answered in general words: no upstream status, exception name or address (no port scan).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import tempfile
from typing import BinaryIO, cast
from urllib.parse import unquote, urlsplit

import httpx

from deployments.http.errors import ApiError
from infra.net_guard import is_public, pinned_url, resolve
from infra.settings import Settings

_SPOOL_BYTES = 1024 * 1024
FETCH_FAILED = "could not fetch `url`: no complete 200 answer from its server within the deadline"
NOT_ALLOWED = "`url` is not allowed: its host must be public and its port one of the allowed ports"


async def fetch_url(url: str, settings: Settings) -> tuple[BinaryIO, str | None]:
    """The body at `url` (a spooled file, at its start) and a filename from its path; a 4xx `ApiError`
    when it cannot or may not be read."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(422, "invalid_url", "`url` must be an absolute http(s) URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ApiError(422, "invalid_url", "`url` has an invalid port") from None
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (the caller closes it)
    body = cast(BinaryIO, spool)
    try:
        async with asyncio.timeout(settings.url_fetch_timeout_s):
            target, extensions = url, {}
            if not settings.allow_private_urls:
                if port not in settings.url_allowed_ports:
                    raise ApiError(422, "url_not_allowed", NOT_ALLOWED)
                address = await checked_address(parts.hostname, port)
                target, extensions = pinned_url(url, address), {"sni_hostname": parts.hostname}
            await _download(target, parts.netloc, extensions, settings, body)
    except TimeoutError:
        body.close()
        raise ApiError(422, "url_fetch_failed", FETCH_FAILED) from None
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body, unquote(parts.path.rsplit("/", 1)[-1]) or None


async def checked_address(host: str, port: int) -> str:
    """One address of `host`, after every address it resolves to was checked to be public."""
    addresses = await resolve(host, port)
    if not addresses:
        raise ApiError(422, "url_fetch_failed", FETCH_FAILED)
    if not all(is_public(address) for address in addresses):
        raise ApiError(422, "url_not_allowed", NOT_ALLOWED)
    return addresses[0]


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle takes tens of milliseconds of CPU, which a
    context per fetch would spend on the event loop."""
    return httpx.create_ssl_context()


async def _download(
    target: str, host_header: str, extensions: dict[str, str], settings: Settings, body: BinaryIO
) -> None:
    limit = settings.max_upload_bytes
    client = httpx.AsyncClient(verify=_tls(), follow_redirects=False, trust_env=False, timeout=None)
    async with client:
        try:
            request = client.build_request(
                "GET", target, headers={"Host": host_header}, extensions=extensions
            )
            response = await client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    raise ApiError(422, "url_fetch_failed", FETCH_FAILED)
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ApiError(413, "audio_too_large", f"the body at `url` exceeds {limit} bytes")
                    body.write(chunk)
            finally:
                await response.aclose()
        except httpx.HTTPError:
            raise ApiError(422, "url_fetch_failed", FETCH_FAILED) from None
