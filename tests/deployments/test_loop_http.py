"""Loop jobs over HTTP on the shared local stack: upload → loop job → presigned URL → exact length;
a finished loop job's output as the source of another; refusals at submission."""

from __future__ import annotations

import io

import httpx
import pytest
import soundfile as sf

from infra.audio import encode
from infra.client import SoundstageClient
from tests.pipelines.test_loop import RATE, groove

pytestmark = pytest.mark.ray


def post_loop(base_url: str, **fields: object) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/jobs/loop", data={k: str(v) for k, v in fields.items()}, timeout=60)


def frames_at(url: str) -> tuple[int, int]:
    with sf.SoundFile(io.BytesIO(httpx.get(url, timeout=60).content)) as f:
        return f.frames, f.samplerate


def test_loop_job_from_an_upload_and_then_from_its_own_output(base_url: str) -> None:
    client = SoundstageClient(base_url)
    files = {"file": ("groove.wav", encode(groove(), "wav"), "audio/wav")}
    uploaded = httpx.post(f"{base_url}/v1/uploads", files=files, timeout=60)
    assert uploaded.status_code == 201, uploaded.text
    response = post_loop(
        base_url, upload_id=uploaded.json()["upload_id"], target_duration_s=90.5, format="flac"
    )
    assert response.status_code == 202, response.text
    job = client.wait(response.json()["id"], timeout_s=300)
    audio, loop = job["result"]["audio"], job["result"]["metadata"]["loop"]
    assert frames_at(audio["url"]) == (round(90.5 * RATE), RATE)
    assert audio["duration_s"] == 90.5 and abs(loop["loop_s"] - 4.0) < 1e-3

    again = post_loop(base_url, job_id=job["id"], target_duration_s=12, crossfade_s=0.02)
    assert again.status_code == 202, again.text
    second = client.wait(again.json()["id"], timeout_s=300)
    assert second["result"]["metadata"]["source"] == {
        "job_id": job["id"],
        "output": "audio",
        "sample_rate": RATE,
        "channels": 2,
        "duration_s": 90.5,
    }
    assert frames_at(second["result"]["audio"]["url"]) == (12 * RATE, RATE)


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"upload_id": "ab" * 16, "target_duration_s": 36001}, 422, "duration_too_long"),
        ({"upload_id": "ab" * 16, "target_duration_s": 60, "format": "mp3"}, 422, "format_not_streamable"),
        ({"job_id": "cd" * 16, "target_duration_s": 60}, 404, "source_job_not_found"),
        ({"upload_id": "ef" * 16, "target_duration_s": 60}, 404, "upload_not_found"),
        ({"target_duration_s": 60}, 422, "input_required"),
    ],
)
def test_loop_refusals(base_url: str, fields: dict[str, object], status: int, code: str) -> None:
    response = post_loop(base_url, **fields)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
