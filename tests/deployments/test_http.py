"""The HTTP API end to end on the real local stack: Ray Serve app, runner, MusicGen (debug), embedded S3."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from infra.client import SoundstageClient

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def client(base_url: str) -> SoundstageClient:
    return SoundstageClient(base_url)


def wait_for(
    client: SoundstageClient, job_id: str, statuses: tuple[str, ...], timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {statuses}: {client.job(job_id)}")


def test_music_job_end_to_end(client: SoundstageClient, storage: Any) -> None:
    submitted = client.submit(
        "music", {"prompt": "calm ambient pad", "duration_s": 2.0, "seed": 7, "format": "flac"}
    )
    assert submitted["status"] == "queued" and submitted["status_url"].endswith(submitted["id"])
    job = client.wait(submitted["id"], timeout_s=120)
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["attempt"] == 1
    assert [s["name"] for s in job["stages"]] == ["generate", "quality", "master", "spectrogram", "store"]
    result = job["result"]
    metadata = result["metadata"]
    assert metadata["weights"] == "debug-random" and metadata["model"]["weights"] == "debug-random"
    assert metadata["seed"] == 7 and metadata["format"] == "flac"
    assert metadata["duration_s"] == pytest.approx(2.0)
    # The result is fetched through its presigned URL with plain HTTP, no credentials.
    audio = httpx.get(result["audio"]["url"])
    assert audio.status_code == 200
    samples, rate = sf.read(io.BytesIO(audio.content), dtype="float32", always_2d=True)
    assert rate == metadata["sample_rate"] == 32000
    assert samples.shape == (64000, 1) and np.isfinite(samples).all()
    stored_meta = json.loads(httpx.get(result["metadata"]["url"]).content)
    assert stored_meta["seed"] == 7 and "loudness_lufs" in stored_meta
    assert result["audio"]["key"] == f"outputs/{job['id']}/a1/audio.flac"
    # The debug model's noise may fail the quality check: regenerated at most twice, never failing the job.
    quality = stored_meta["quality"]
    assert 0 <= quality["regenerations"] <= 2 and len(quality["attempts"]) == quality["regenerations"] + 1
    assert stored_meta["mastering"]["true_peak_after_dbtp"] <= -1.0
    spectrogram = httpx.get(result["spectrogram"]["url"])
    assert spectrogram.status_code == 200 and spectrogram.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_same_seed_same_audio(client: SoundstageClient) -> None:
    body = {"prompt": "a drum loop", "duration_s": 1.0, "seed": 123}
    first = client.wait(client.submit("music", body)["id"])
    second = client.wait(client.submit("music", body)["id"])
    a = httpx.get(first["result"]["audio"]["url"]).content
    b = httpx.get(second["result"]["audio"]["url"]).content
    assert first["id"] != second["id"] and a == b


def test_seed_is_chosen_and_recorded_when_omitted(client: SoundstageClient) -> None:
    job = client.submit("music", {"prompt": "anything", "duration_s": 0.5})
    assert isinstance(job["request"]["seed"], int)
    done = client.wait(job["id"])
    assert done["result"]["metadata"]["seed"] == job["request"]["seed"]


def test_idempotent_resubmission(client: SoundstageClient, base_url: str) -> None:
    body = {"prompt": "idempotent groove", "duration_s": 0.5, "seed": 1}
    headers = {"Idempotency-Key": "test-idem-1"}
    first = httpx.post(f"{base_url}/v1/jobs/music", json=body, headers=headers)
    again = httpx.post(f"{base_url}/v1/jobs/music", json=body, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    conflict = httpx.post(f"{base_url}/v1/jobs/music", json={**body, "seed": 2}, headers=headers)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"
    client.wait(first.json()["id"])


def test_cancel_running_job(client: SoundstageClient, base_url: str, storage: Any) -> None:
    job = client.submit("music", {"prompt": "a very long piece", "duration_s": 40.0, "seed": 3})
    wait_for(client, job["id"], ("running",))
    cancelled = httpx.delete(f"{base_url}/v1/jobs/{job['id']}")
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
    final = wait_for(client, job["id"], ("cancelled", "succeeded", "failed"), timeout_s=180)
    assert final["status"] == "cancelled"
    assert final["result"] is None
    assert not list(storage.list_keys(f"outputs/{job['id']}/"))
    again = httpx.delete(f"{base_url}/v1/jobs/{job['id']}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def test_list_jobs(client: SoundstageClient) -> None:
    job = client.submit("music", {"prompt": "listed", "duration_s": 0.5})
    client.wait(job["id"])
    listed = client.jobs(status="succeeded", limit=200)["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    assert all(j["status"] == "succeeded" for j in listed)


def test_models_endpoint_reports_weights_and_gpu_share(client: SoundstageClient) -> None:
    deployments = {d["deployment"]: d for d in client.deployments()["deployments"]}
    assert set(deployments) >= {"Ingress", "JobRunner", "MusicGen"}
    music = deployments["MusicGen"]
    assert music["status"] == "HEALTHY" and music["replicas"].get("RUNNING", 0) >= 1
    assert music["model"]["weights"] == "debug-random" and music["model"]["model_id"] == "debug"
    assert music["model"]["gpu_share"] == 0.25  # placed on the cluster's logical GPU


def test_openapi_docs(base_url: str) -> None:
    spec = httpx.get(f"{base_url}/openapi.json").json()
    assert "/v1/jobs/music" in spec["paths"]
    assert httpx.get(f"{base_url}/docs").status_code == 200


BAD_REQUESTS = [
    ("empty prompt", {"prompt": "   ", "duration_s": 1.0}, 422, "invalid_request"),
    ("missing prompt", {"duration_s": 1.0}, 422, "invalid_request"),
    ("duration over the limit", {"prompt": "x", "duration_s": 61.0}, 422, "duration_too_long"),
    ("negative duration", {"prompt": "x", "duration_s": -1}, 422, "invalid_request"),
    ("unknown format", {"prompt": "x", "format": "aiff"}, 422, "invalid_request"),
    ("wrong type", {"prompt": "x", "duration_s": "long"}, 422, "invalid_request"),
    ("unknown field", {"prompt": "x", "tempo": 120}, 422, "invalid_request"),
    ("seed out of range", {"prompt": "x", "seed": -5}, 422, "invalid_request"),
]


@pytest.mark.parametrize(("case", "body", "status", "code"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_json_bodies_are_4xx(
    base_url: str, case: str, body: dict[str, Any], status: int, code: str
) -> None:
    response = httpx.post(f"{base_url}/v1/jobs/music", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_malformed_json_unknown_job_oversize_body(base_url: str) -> None:
    malformed = httpx.post(
        f"{base_url}/v1/jobs/music", content=b'{"prompt": "x",', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422 and malformed.json()["error"]["code"] == "malformed_json"
    for job_id in ("0" * 32, "not-a-job-id", "..%2F..%2Fetc"):
        missing = httpx.get(f"{base_url}/v1/jobs/{job_id}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] in (
            "job_not_found",
            "not_found",
        )
    huge = httpx.post(f"{base_url}/v1/jobs/music", content=b"{" + b" " * 200_000 + b"}")
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    chunked = httpx.post(
        f"{base_url}/v1/jobs/music",
        content=(b" " * 1000 for _ in range(200)),  # no Content-Length: counted while streaming
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "body_too_large"
    unknown_route = httpx.get(f"{base_url}/v1/nothing-here")
    assert unknown_route.status_code == 404 and "error" in unknown_route.json()
    bad_status = httpx.get(f"{base_url}/v1/jobs", params={"status": "exploded"})
    assert bad_status.status_code == 422
    # After all of that, the service is healthy.
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}
