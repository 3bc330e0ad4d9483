"""`url` inputs at the edge: the SSRF guard (pinned address, blocked ranges, ports, general errors) and
the total deadline; a slow-drip server holds no thread, so `/healthz` answers meanwhile."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deployments.http import url_inputs
from deployments.http.errors import ApiError
from infra.settings import Settings
from tests.deployments.http.conftest import EdgeFactory


class _Drip(socketserver.BaseRequestHandler):
    """Answers 200 with a long Content-Length, then one byte every 0.2 s (for at most 10 s)."""

    def handle(self) -> None:
        self.request.recv(65536)
        try:
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(50):
                self.request.sendall(b"R")
                time.sleep(0.2)
        except OSError:
            pass


class _NotFound(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")


def serve(handler: type[socketserver.BaseRequestHandler]) -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/clip.wav"
    server.shutdown()
    server.server_close()


@pytest.fixture
def drip_url() -> Iterator[str]:
    yield from serve(_Drip)


@pytest.fixture
def not_found_url() -> Iterator[str]:
    yield from serve(_NotFound)


def fetch(url: str, settings: Settings) -> bytes:
    body, _ = asyncio.run(url_inputs.fetch_url(url, settings))
    with body:
        return body.read()


def fake_dns(monkeypatch: pytest.MonkeyPatch, *answers: list[str]) -> list[str]:
    """`socket.getaddrinfo` answering `answers[i]` on the i-th call (the last one after that)."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        addresses = answers[min(len(asked), len(answers) - 1)]
        asked.append(host)
        family = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET  # noqa: E731
        return [(family(a), socket.SOCK_STREAM, 6, "", (a, port or 0)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_connects_to_the_address_it_checked(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    asked = fake_dns(monkeypatch, ["93.184.216.34"], ["127.0.0.1"])  # a rebinding resolver
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def download(target: str, host: str, extensions: dict[str, str], *_: Any) -> None:
        seen.append((target, host, extensions))

    monkeypatch.setattr(url_inputs, "_download", download)
    guarded = settings.model_copy(update={"allow_private_urls": False})
    asyncio.run(url_inputs.fetch_url("https://media.example.com/a.wav?sig=1", guarded))
    assert asked == ["media.example.com"]  # resolved once; nothing resolves it again
    assert seen == [
        ("https://93.184.216.34/a.wav?sig=1", "media.example.com", {"sni_hostname": "media.example.com"})
    ]


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["93.184.216.34", "10.0.0.7"],
        ["64:ff9b::a9fe:a9fe"],
        ["2002:a9fe:a9fe::1"],
        ["::ffff:169.254.169.254"],
    ],
)
def test_private_nat64_and_6to4_addresses_are_refused(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, addresses: list[str]
) -> None:
    fake_dns(monkeypatch, addresses)
    with pytest.raises(ApiError) as error:
        fetch("http://media.example.com/a.wav", settings.model_copy(update={"allow_private_urls": False}))
    assert (error.value.status, error.value.code) == (422, "url_not_allowed")
    assert not any(a in error.value.message for a in addresses)


def test_ports_outside_the_allowed_list_are_refused_before_any_lookup(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    asked = fake_dns(monkeypatch, ["93.184.216.34"])
    guarded = settings.model_copy(update={"allow_private_urls": False})
    with pytest.raises(ApiError) as error:
        fetch("http://media.example.com:6379/a.wav", guarded)
    assert error.value.code == "url_not_allowed" and asked == []
    allowed = guarded.model_copy(update={"url_allowed_ports": [6379]})
    monkeypatch.setattr(url_inputs, "_download", lambda *a: asyncio.sleep(0))
    fetch("http://media.example.com:6379/a.wav", allowed)


def test_upstream_errors_are_answered_in_general_words(not_found_url: str, settings: Settings) -> None:
    with pytest.raises(ApiError) as error:
        fetch(not_found_url, settings.model_copy(update={"allow_private_urls": True}))
    assert error.value.code == "url_fetch_failed"
    assert error.value.message == url_inputs.FETCH_FAILED and "404" not in error.value.message


def test_a_slow_drip_fetch_ends_at_the_total_deadline(drip_url: str, settings: Settings) -> None:
    start = time.monotonic()
    with pytest.raises(ApiError) as error:
        fetch(drip_url, settings.model_copy(update={"allow_private_urls": True, "url_fetch_timeout_s": 1.0}))
    assert error.value.code == "url_fetch_failed"
    assert time.monotonic() - start < 3.0


def test_healthz_answers_while_slow_drip_fetches_are_in_flight(
    drip_url: str, settings: Settings, edge: EdgeFactory
) -> None:
    app = edge(settings.model_copy(update={"allow_private_urls": True, "url_fetch_timeout_s": 4.0})).app

    async def scenario() -> tuple[float, list[int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            fetches = [
                asyncio.create_task(client.post("/v1/jobs/separate", data={"url": drip_url}))
                for _ in range(40)
            ]
            await asyncio.sleep(0.5)
            start = time.monotonic()
            health = await client.get("/healthz")
            waited = time.monotonic() - start
            assert health.status_code == 200
            answers = await asyncio.gather(*fetches)
            return waited, [r.status_code for r in answers]

    waited, statuses = asyncio.run(scenario())
    assert waited < 1.0, f"/healthz took {waited:.2f} s behind 40 slow fetches"
    assert set(statuses) == {422}
