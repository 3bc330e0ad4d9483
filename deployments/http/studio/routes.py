"""`GET /studio`: the studio page and its static files, with a Content-Security-Policy.

The files are this package's `static/` folder, read once at import: a request names one of them or
gets 404 (no path is joined from the request, so nothing outside the folder can be reached). The page
itself holds no data: it calls `/v1` with the key the user typed, so `/studio` needs no key.

The policy allows scripts and styles from the ingress only (no inline code, no `eval`), and media, images
and `fetch` from the ingress and from the object store's origin, where the presigned result URLs point
(the origin of a presigned URL for a scratch key: the same client signs every result URL).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import Response

from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.services import Svc
from infra.storage import Storage

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
ORIGIN_PROBE_KEY = "system/studio/origin"  # only signed, never written or read

router = APIRouter(route_class=EdgeRoute, tags=["studio"], include_in_schema=False)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str


def static_files(root: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every servable file under `root`, read once, by its path relative to `root` (`js/api.js`)."""
    return {
        path.relative_to(root).as_posix(): StaticFile(path.read_bytes(), MEDIA_TYPES[path.suffix])
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in MEDIA_TYPES
    }


FILES = static_files()


def store_origin(storage: Storage) -> str:
    """`scheme://host[:port]` of the presigned result URLs (S3 endpoint, public endpoint or AWS)."""
    parts = urlsplit(storage.presigned_url(ORIGIN_PROBE_KEY, expires_s=60))
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(store: str) -> str:
    """The studio's policy: code from the ingress only; audio, images and fetches also from `store`."""
    directives = {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": f"'self' {store}",
        "media-src": f"'self' {store}",
        "connect-src": f"'self' {store}",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def studio_headers(storage: Storage) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(store_origin(storage)),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


def file_response(name: str, storage: Storage) -> Response:
    found = FILES.get(name)
    if found is None:
        raise ApiError(404, "not_found", "no such studio file")
    return Response(found.body, media_type=found.media_type, headers=studio_headers(storage))


@router.get("/studio")
async def studio_page(svc: Svc) -> Response:
    """The studio page."""
    return file_response("index.html", svc.storage)


@router.get("/studio/{name:path}")
async def studio_file(name: str, svc: Svc) -> Response:
    """A static file of the page (`/studio/` itself is the page)."""
    return file_response(name or "index.html", svc.storage)
