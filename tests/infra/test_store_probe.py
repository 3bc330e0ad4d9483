"""infra/store_probe.py: a store must refuse stale conditional writes with 412, or start-up fails.

SeaweedFS (the session's store) honours them and passes. For the failure path this file runs a tiny S3
look-alike over real HTTP that ignores `If-None-Match` and/or `If-Match`: such stores exist in the wild,
but none can be installed here, so this fake (and only it) stands in for them. It speaks just the
object PUT/GET/DELETE the probe sends and never checks signatures.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra.embedded_s3 import free_port
from infra.settings import Settings
from infra.storage import Storage
from infra.store_probe import PROBE_PREFIX, StoreProbeError, probe_conditional_writes


def test_seaweedfs_passes_and_leaves_nothing_behind(storage: Storage) -> None:
    probe_conditional_writes(storage)
    assert list(storage.list_keys(PROBE_PREFIX)) == []


class CarelessStore(BaseHTTPRequestHandler):
    """Object PUT/GET/DELETE that honours only the conditions listed in `server.honoured`."""

    server: CarelessServer
    protocol_version = "HTTP/1.1"  # answers boto's `Expect: 100-continue` at once (else it waits 1 s)

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        objects, key = self.server.objects, self.path.split("?")[0]
        honoured = self.server.honoured
        if "If-None-Match" in honoured and self.headers.get("If-None-Match") == "*" and key in objects:
            return self._answer(412, b"<Error><Code>PreconditionFailed</Code></Error>")
        expected = self.headers.get("If-Match")
        if "If-Match" in honoured and expected is not None and _etag(objects.get(key)) != expected:
            return self._answer(412, b"<Error><Code>PreconditionFailed</Code></Error>")
        objects[key] = body
        self._answer(200, b"", etag=_etag(body))

    def do_GET(self) -> None:
        body = self.server.objects.get(self.path.split("?")[0])
        if body is None:
            return self._answer(404, b"<Error><Code>NoSuchKey</Code></Error>")
        self._answer(200, body, etag=_etag(body))

    def do_DELETE(self) -> None:
        self.server.objects.pop(self.path.split("?")[0], None)
        self._answer(204, b"")

    def _answer(self, status: int, body: bytes, etag: str | None = None) -> None:
        self.send_response(status)
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class CarelessServer(ThreadingHTTPServer):
    def __init__(self, honoured: set[str]) -> None:
        super().__init__(("127.0.0.1", free_port()), CarelessStore)
        self.honoured = honoured
        self.objects: dict[str, bytes] = {}


def _etag(body: bytes | None) -> str | None:
    return None if body is None else f'"{hashlib.md5(body).hexdigest()}"'


@pytest.fixture
def careless(request: pytest.FixtureRequest) -> Iterator[tuple[Storage, CarelessServer]]:
    server = CarelessServer(set(request.param))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    settings = Settings(s3_endpoint_url=endpoint, s3_access_key_id="k", s3_secret_access_key="s")  # type: ignore[arg-type]
    try:
        yield Storage(settings), server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("careless", "lacks", "has"),
    [
        ((), ["create-only", "compare-and-swap"], []),
        (("If-None-Match",), ["compare-and-swap: a PUT with `If-Match` and a wrong ETag"], ["create-only"]),
        (("If-Match",), ["create-only: a PUT with `If-None-Match: *`"], ["compare-and-swap"]),
    ],
    indirect=["careless"],
    ids=["ignores-both", "ignores-if-match", "ignores-if-none-match"],
)
def test_a_store_that_ignores_conditions_is_refused(
    careless: tuple[Storage, CarelessServer], lacks: list[str], has: list[str]
) -> None:
    storage, server = careless
    with pytest.raises(StoreProbeError) as error:
        probe_conditional_writes(storage)
    message = str(error.value)
    assert storage.settings.s3_endpoint_url in message  # type: ignore[operator]
    for lack in lacks:
        assert lack in message
    for fine in has:
        assert f"{fine}:" not in message
    assert server.objects == {}, "the probe key is deleted even when the probe fails"


@pytest.mark.parametrize("careless", [("If-None-Match", "If-Match")], indirect=True)
def test_the_fake_itself_passes_when_it_honours_both(careless: tuple[Storage, CarelessServer]) -> None:
    """The fake's failures above come from the ignored headers, not from the fake being broken."""
    probe_conditional_writes(careless[0])


def test_an_unreachable_store_is_named(settings: Settings) -> None:
    dead = Storage(settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}))
    with pytest.raises(StoreProbeError, match=f"{dead.settings.s3_endpoint_url}.*failed the"):
        probe_conditional_writes(dead)
