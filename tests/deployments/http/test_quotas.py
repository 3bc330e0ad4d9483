"""Per-key quotas: requests per minute, concurrent jobs and audio-seconds per day, each configurable per
key, counted in the object store so two ingress replicas (two apps over one store) share one total;
over a limit → 429 `quota_exceeded` with `Retry-After` and a message naming the limit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deployments.http.api import build_http_app
from deployments.http.services import Services
from infra.jobs import JobStore
from infra.quotas import QuotaStore
from infra.settings import QuotaLimits, Settings
from infra.storage import Storage
from tests.deployments.http.conftest import FakeTTS, RecordingRunner, bearer, keyed, tone_wav
from tests.pipelines.test_stages import models_with

Clock = list[float]
Response = Any  # TestClient's response (its httpx flavour varies)
Replicas = Callable[..., tuple[TestClient, TestClient, Clock]]


@pytest.fixture
def own(settings: Settings) -> Storage:
    """A bucket of this test's own: a tenant's concurrency slots outlive the test that held them."""
    store = Storage(settings.model_copy(update={"s3_bucket": f"quotas-{uuid.uuid4().hex[:8]}"}))
    store.ensure_bucket()
    return store


@pytest.fixture
def replicas(own: Storage) -> Iterator[Replicas]:
    """Two apps over one store (two ingress replicas), on one movable clock starting at `start`."""
    opened: list[TestClient] = []
    settings, storage = own.settings, own

    def make(
        quotas: dict[str, QuotaLimits], start: float, **clients: object
    ) -> tuple[TestClient, TestClient, Clock]:
        clock = [start]
        used = keyed(settings).model_copy(update={"quotas": quotas})

        def app() -> TestClient:
            models = models_with(**({"tts": FakeTTS()} | clients))
            services = Services(used, storage, JobStore(storage), models, RecordingRunner())
            # Only the quota windows move with the test's clock: the jobs keep real times, so the
            # session's store lists them among everyone else's as usual.
            services.quotas = QuotaStore(storage, clock=lambda: clock[0])
            client = TestClient(build_http_app(services), raise_server_exceptions=False)
            opened.append(client)
            return client

        return app(), app(), clock

    yield make
    for client in opened:
        client.close()


def refused(r: Response, limit: str) -> int:
    """The `Retry-After` of a 429 naming `limit`."""
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "quota_exceeded" and limit in error["message"]
    return int(r.headers["Retry-After"])


def separate(client: TestClient, who: str, seconds: float = 1.0, key: str | None = None) -> Response:
    headers = bearer(who) | ({"Idempotency-Key": key} if key else {})
    return client.post("/v1/jobs/separate", files={"file": ("a.wav", tone_wav(seconds))}, headers=headers)


def test_requests_per_minute_across_replicas(replicas: Replicas) -> None:
    one, two, clock = replicas({"alice": QuotaLimits(requests_per_minute=4)}, 1_800_000_010.0)
    for client in (one, two, one, two):
        assert client.get("/v1/jobs", headers=bearer("alice")).status_code == 200
    retry = refused(two.get("/v1/jobs", headers=bearer("alice")), "requests_per_minute")
    assert retry == 50  # the rest of the minute
    refused(one.get("/v1/jobs", headers=bearer("alice")), "requests_per_minute")
    assert one.get("/v1/jobs", headers=bearer("bob")).status_code == 200  # bob has the default
    assert one.get("/healthz").status_code == 200  # outside /v1: not counted
    openai = one.get("/v1/models", headers=bearer("alice"))  # OpenAI's error shape on its routes
    error = openai.json()["error"]
    assert openai.status_code == 429 and error["code"] == "quota_exceeded" and "type" in error
    clock[0] += 50
    assert two.get("/v1/jobs", headers=bearer("alice")).status_code == 200  # a new minute


def test_concurrent_jobs_across_replicas(replicas: Replicas) -> None:
    limits = QuotaLimits(concurrent_jobs=2, requests_per_minute=None)
    one, two, clock = replicas({"alice": limits}, 1_800_100_000.0)
    first = separate(one, "alice", key="k1")
    assert first.status_code == 202, first.text
    assert separate(two, "alice", key="k1").status_code == 200  # a resubmission holds no second slot
    assert separate(two, "alice", seconds=1.5).status_code == 202
    assert refused(separate(one, "alice", seconds=2.0), "concurrent_jobs") >= 1
    assert separate(one, "bob").status_code == 202  # bob's slots are his own
    job_id = first.json()["id"]
    assert one.delete(f"/v1/jobs/{job_id}", headers=bearer("alice")).status_code == 202
    clock[0] += 61  # past the reservation window: a slot now counts only while its job is active
    assert separate(two, "alice", seconds=2.0).status_code == 202
    refused(separate(one, "alice", seconds=2.5), "concurrent_jobs")


def test_audio_seconds_per_day(replicas: Replicas) -> None:
    limits = QuotaLimits(audio_seconds_per_day=3.0, concurrent_jobs=None)
    one, two, clock = replicas({"alice": limits}, 20_836 * 86_400.0 + 3600)  # 01:00 UTC
    assert separate(one, "alice", 1.0).status_code == 202
    assert separate(two, "alice", 1.5).status_code == 202
    assert separate(one, "alice", 0.5).status_code == 202  # 3.0 s: full
    retry = refused(separate(two, "alice", 1.0), "audio_seconds_per_day")
    assert retry == 23 * 3600  # until midnight UTC
    assert separate(one, "bob", 1.0).status_code == 202
    clock[0] += 23 * 3600
    assert separate(two, "alice", 1.0).status_code == 202  # a new day


class NoSpeech:
    """Double of `VADClient`: finds no speech."""

    deployment = "VAD"

    async def detect(self, **_: object) -> list[object]:
        return []


def test_synchronous_routes_charge_the_audio_they_process(replicas: Replicas) -> None:
    limits = QuotaLimits(audio_seconds_per_day=2.0)
    one, two, _ = replicas({"alice": limits}, 20_840 * 86_400.0, vad=NoSpeech())

    def vad(client: TestClient, seconds: float) -> Response:
        wav = {"file": ("a.wav", tone_wav(seconds))}
        return client.post("/v1/vad", files=wav, headers=bearer("alice"))

    assert vad(one, 1.5).status_code == 200
    refused(vad(two, 1.0), "audio_seconds_per_day")  # 2.5 s > 2.0 s
    assert vad(two, 0.5).status_code == 200  # exactly 2.0 s


def test_an_idempotent_resubmission_gets_its_job_whatever_the_limits(replicas: Replicas) -> None:
    limits = QuotaLimits(concurrent_jobs=1, audio_seconds_per_day=1.0, requests_per_minute=None)
    one, two, _ = replicas({"alice": limits}, 1_800_200_000.0)
    first = separate(one, "alice", key="again")
    assert first.status_code == 202, first.text
    refused(separate(one, "alice", seconds=0.5), "concurrent_jobs")  # alice is at both limits now
    again = separate(two, "alice", key="again")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    conflict = separate(two, "alice", seconds=0.5, key="again")  # the same key for another input
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"
    assert separate(one, "bob", key="again").json()["id"] != first.json()["id"]  # keys are per tenant


def test_a_seedless_resubmission_is_the_same_job(replicas: Replicas) -> None:
    """Admission fixes a missing seed; the same request again (still without one) is the same job."""
    one, two, _ = replicas({}, 1_800_300_000.0)
    body = {"prompt": "a calm loop", "duration_s": 1.0}
    headers = bearer("alice") | {"Idempotency-Key": "seedless"}
    first = one.post("/v1/jobs/music", json=body, headers=headers)
    assert first.status_code == 202, first.text
    again = two.post("/v1/jobs/music", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
    reseeded = {**body, "seed": first.json()["request"]["seed"] + 1}
    other = two.post("/v1/jobs/music", json=reseeded, headers=headers)
    assert other.status_code == 409


def test_speech_is_charged_the_audio_it_generates(replicas: Replicas, own: Storage) -> None:
    """Plain and SSE speech count the seconds they generated (FakeTTS: 0.1 s a sentence) against the
    day's audio-seconds; a request whose estimate no longer fits is refused before any synthesis."""
    start = 20_900 * 86_400.0 + 7200
    one, two, _ = replicas({"alice": QuotaLimits(audio_seconds_per_day=10.0)}, start)
    key = f"quotas/alice/audio/{int(start // 86_400)}"
    speech = {"model": "tts-1", "voice": "alloy", "response_format": "wav"}
    plain = one.post(
        "/v1/audio/speech", json=speech | {"input": "Hello there. How are you?"}, headers=bearer("alice")
    )
    assert plain.status_code == 200, plain.text
    assert json.loads(own.get_bytes(key)) == pytest.approx(0.2)  # two sentences, estimate settled
    sse = two.post(
        "/v1/audio/speech", json=speech | {"input": "Hi.", "stream_format": "sse"}, headers=bearer("alice")
    )
    assert sse.status_code == 200 and "speech.audio.done" in sse.text
    assert json.loads(own.get_bytes(key)) == pytest.approx(0.3)
    QuotaStore(own, clock=lambda: start).charge_audio("alice", 9.65, None)  # 9.95 s used
    over = one.post("/v1/audio/speech", json=speech | {"input": "Hello there."}, headers=bearer("alice"))
    assert refused(over, "audio_seconds_per_day") == 22 * 3600
    assert json.loads(own.get_bytes(key)) == pytest.approx(9.95)  # a refusal charges nothing
    assert (
        one.post("/v1/audio/speech", json=speech | {"input": "Hello."}, headers=bearer("bob")).status_code
        == 200
    )
