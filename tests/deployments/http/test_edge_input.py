"""Hostile input at the edge, in-process: non-finite numbers, decompression bombs, truncated containers,
encoded path ids, bodies of unauthenticated requests. Each answer is a JSON 4xx, never a 5xx or a redirect."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from infra.settings import Settings
from tests.deployments.http.conftest import EdgeFactory, bearer, keyed, tone_wav


def test_nan_duration_on_music_is_422(edge: EdgeFactory) -> None:
    client = edge()
    for raw in ('{"prompt": "drums", "duration_s": NaN}', '{"prompt": "drums", "duration_s": Infinity}'):
        r = client.post("/v1/jobs/music", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_request"


def test_non_finite_form_number_is_422(edge: EdgeFactory) -> None:
    r = edge().post("/v1/jobs/separate", files={"file": ("a.wav", tone_wav())}, data={"segment_s": "nan"})
    assert r.status_code == 422 and "finite" in r.json()["error"]["message"], r.text


def test_bomb_upload_is_413_naming_the_limit(edge: EdgeFactory, settings: Settings) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((20 * 192_000, 8), dtype=np.int16), 192_000, format="FLAC")
    client = edge(settings.model_copy(update={"max_decoded_samples": 1_000_000}))
    r = client.post("/v1/uploads", files={"file": ("bomb.flac", buffer.getvalue())})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "audio_too_large"
    assert "limit of 1000000 samples" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "rate, channels, code",
    [(384_000, 1, "audio_sample_rate_unsupported"), (8000, 9, "audio_too_many_channels")],
)
def test_rate_and_channel_caps_are_422(edge: EdgeFactory, rate: int, channels: int, code: str) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((rate // 10, channels), dtype=np.int16), rate, format="WAV")
    r = edge().post("/v1/uploads", files={"file": ("x.wav", buffer.getvalue())})
    assert (r.status_code, r.json()["error"]["code"]) == (422, code)


def test_truncated_wav_is_refused_by_uploads_and_jobs(edge: EdgeFactory) -> None:
    data = tone_wav(2.0)
    client = edge()
    for route in ("/v1/uploads", "/v1/jobs/separate"):
        r = client.post(route, files={"file": ("cut.wav", data[: len(data) // 3])})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_audio"
        assert "data chunk declares" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "path", ["/v1/jobs/%2e%2e%2f", "/v1/jobs/%2F", "/v1/jobs/..", "/v1/jobs/", "/v1/uploads/"]
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_encoded_path_ids_are_404_json_never_redirects(edge: EdgeFactory, path: str, method: str) -> None:
    r = edge().request(method, path, follow_redirects=False)
    assert r.status_code in (404, 405), (path, r.status_code, r.headers)
    assert "location" not in r.headers
    assert r.json()["error"]["code"] in ("not_found", "job_not_found", "method_not_allowed")


def test_malformed_job_id_is_404_job_not_found(edge: EdgeFactory) -> None:
    r = edge().get("/v1/jobs/not-a-job-id")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "job_not_found")


def test_unauthenticated_request_is_refused_before_its_body_is_read(
    settings: Settings, edge: EdgeFactory
) -> None:
    client = edge(keyed(settings))
    app = client.app
    declared = 200 * 1024 * 1024
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/uploads",
        "raw_path": b"/v1/uploads",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"content-length", str(declared).encode()),
            (b"authorization", b"Bearer wrong-key"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }

    async def call() -> None:
        await app(scope, receive, send)  # type: ignore[arg-type]

    asyncio.run(call())
    assert sent[0]["status"] == 401
    assert reads == 0


def test_bodies_stream_and_the_limit_holds_without_content_length(
    settings: Settings, edge: EdgeFactory
) -> None:
    client = edge(settings.model_copy(update={"max_request_bytes": 4096}))

    def chunks() -> Any:
        for _ in range(64):
            yield b" " * 1024

    r = client.post("/v1/jobs/music", content=chunks(), headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")


def test_keys_are_checked_and_healthz_is_open(settings: Settings, edge: EdgeFactory) -> None:
    client = edge(keyed(settings))
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/jobs", headers=bearer("alice")).status_code == 200
