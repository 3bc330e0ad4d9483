"""`/healthz` answers while every thread of the event loop's default pool is busy (uploads being
validated and copied to S3 hold one each for seconds: bench/ingress_memory.py)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from deployments.http.api import build_http_app
from deployments.http.services import Services
from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage
from tests.deployments.http.conftest import RecordingRunner
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
