"""The edge when the object store is down: 503 + Retry-After within the edge's short tolerance, never a
500 (before, an unreachable store was a 500 after botocore's own retries). In-process app; the store is a
closed local port (nothing listens on it), standing in for an outage."""

from __future__ import annotations

import time

from infra.embedded_s3 import free_port
from infra.settings import Settings
from tests.deployments.http.conftest import EdgeFactory


def test_an_unreachable_store_is_503_with_retry_after(edge: EdgeFactory, settings: Settings) -> None:
    down = settings.model_copy(
        update={
            "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
            "s3_outage_tolerance_s": 1.0,
            "s3_connect_timeout_s": 0.5,
        }
    )
    client = edge(down)
    started = time.monotonic()
    for response in (
        client.get("/v1/jobs/" + "ab" * 16),
        client.post("/v1/jobs/music", json={"prompt": "calm pad", "duration_s": 1.0}),
        client.get("/v1/jobs"),
    ):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert response.json()["error"]["code"] == "storage_unavailable"
    assert time.monotonic() - started < 30
