"""The HTTP app in-process: `build_http_app` over the real embedded S3 store, in-process doubles of the
model clients and a runner double that records what it was handed. No Ray cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from deployments.http.api import build_http_app
from deployments.http.services import Services
from infra.audio import Audio, encode
from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage
from infra.tenancy import key_digest
from models.types import ModelInfo
from pipelines.engine.clients import ModelCard
from tests.pipelines.test_stages import models_with

KEYS = {"alice": "alice-secret-key", "bob": "bob-secret-key", "root": "admin-secret-key"}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def keyed(settings: Settings) -> Settings:
    """`settings` with alice and bob as tenants (their keys stored as digests) and root as admin."""
    return settings.model_copy(
        update={
            "api_key_hashes": [f"{n}:{key_digest(KEYS[n])}" for n in ("alice", "bob")],
            "admin_key_hashes": [f"root:{key_digest(KEYS['root'])}"],
        }
    )


class RecordingRunner:
    """Double of the JobRunner handle: `submit.remote(job_id)` records the id."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        runner = self

        class _Submit:
            async def remote(self, job_id: str) -> None:
                runner.submitted.append(job_id)

        self.submit = _Submit()


class FakeTTS:
    """Double of `TTSClient`: 0.1 s of a tone per sentence."""

    deployment = "TTS"

    def __init__(self) -> None:
        self.calls = 0

    async def info(self) -> ModelCard:
        return ModelCard(
            deployment="TTS", model=ModelInfo("fake/tts", "r1", "debug-random"), sample_rate=8000
        )

    async def voices(self) -> list[str]:
        return ["alloy"]

    async def synthesize(self, *, text: str, voice: str, speed: float = 1.0) -> Audio:
        self.calls += 1
        return Audio(np.full((1, 800), 0.1, dtype=np.float32), 8000)


class ASRDouble:
    """What every `ASRClient` double has: the deployment's name and a debug card; subclasses add
    `transcribe`."""

    deployment = "ASR"

    async def info(self) -> ModelCard:
        return ModelCard(
            deployment="ASR", model=ModelInfo("fake/asr", "r1", "debug-random"), sample_rate=16000
        )


def tone_wav(seconds: float = 1.0, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return encode(Audio((0.5 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), rate), "wav")


EdgeFactory = Callable[..., TestClient]


@pytest.fixture
def edge(settings: Settings, storage: Storage) -> Iterator[EdgeFactory]:
    """`edge(settings=…, **clients)`: a TestClient over the app; unnamed model clients fail if used."""
    opened: list[TestClient] = []

    def make(settings_: Settings | None = None, runner: Any = None, **clients: object) -> TestClient:
        used = settings_ or settings
        store = Storage(used) if settings_ is not None else storage
        services = Services(
            settings=used,
            storage=store,
            jobs=JobStore(store),
            models=models_with(**({"tts": FakeTTS()} | clients)),
            runner=runner or RecordingRunner(),
        )
        client = TestClient(build_http_app(services), raise_server_exceptions=False)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()
