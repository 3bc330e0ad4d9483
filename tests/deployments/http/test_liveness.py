"""`/healthz` answers while every thread of the event loop's default pool is busy (uploads being
validated and copied to S3 hold one each for seconds: bench/ingress_memory.py), and the ingress's pools
are sized by `ingress_threads`, not by Ray's default for the replica's CPUs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread
import httpx

from deployments.http.api import build_http_app
from deployments.http.services import Services
from infra.audio import Audio
from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage
from tests.deployments.http.conftest import FakeTTS, RecordingRunner
from tests.pipelines.test_stages import models_with


def test_healthz_answers_while_the_default_pool_is_full(settings: Settings, storage: Storage) -> None:
    app = build_http_app(Services(settings, storage, JobStore(storage), models_with(), RecordingRunner()))
    release = threading.Event()

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(2))
        busy = [asyncio.to_thread(release.wait, 30) for _ in range(2)]  # as two long uploads would
        holders = asyncio.gather(*busy)
        await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
                response = await asyncio.wait_for(client.get("/healthz"), timeout=10)
        finally:
            release.set()
            await holders
        return response.status_code

    assert asyncio.run(scenario()) == 200


class HeldTTS(FakeTTS):
    """A TTS double whose every sentence blocks one thread of the event loop's default pool until
    `parties` of them block at once (as a slow decode or S3 call would hold a thread)."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)

    async def synthesize(self, *, text: str, voice: str, speed: float = 1.0) -> Audio:
        await asyncio.to_thread(self.barrier.wait)
        return await super().synthesize(text=text, voice=voice, speed=speed)


def test_more_blocking_requests_than_rays_default_pool_complete(settings: Settings, storage: Storage) -> None:
    """Ray gives a 0.5-CPU replica's loop 5 threads; the app's lifespan sizes them from `ingress_threads`.
    12 requests that each need a thread at the same moment all finish, and /healthz answers meanwhile."""
    held = 12
    tts = HeldTTS(held)
    used = settings.model_copy(update={"ingress_threads": 16})
    app = build_http_app(Services(used, storage, JobStore(storage), models_with(tts=tts), RecordingRunner()))
    speech = {"model": "tts-1", "input": "Hello there.", "voice": "alloy", "response_format": "wav"}

    async def scenario() -> tuple[list[int], int, int]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(5))  # what Ray's replica sets up at 0.5 CPU
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://edge", timeout=30) as client:
                calls = [client.post("/v1/audio/speech", json=speech) for _ in range(held)]
                speaking = asyncio.gather(*calls)
                await asyncio.sleep(0.1)
                health = await asyncio.wait_for(client.get("/healthz"), timeout=10)
                answers = await speaking
            tokens = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
        return [r.status_code for r in answers], health.status_code, tokens

    statuses, health, tokens = asyncio.run(scenario())
    assert statuses == [200] * held and health == 200
    assert tokens == 16  # anyio's limit (the framework's sync work) follows the setting too
