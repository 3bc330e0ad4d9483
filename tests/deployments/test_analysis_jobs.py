"""Separation and pitch-shift jobs end to end: upload → job → stems / shifted audio via presigned URLs."""

from __future__ import annotations

import io
import math
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from infra.audio import Audio, encode
from infra.client import SoundstageClient
from infra.storage import Storage

pytestmark = pytest.mark.ray


def chord_wav(seconds: float = 12.0, rate: int = 44100, channels: int = 2) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * math.pi * f * t) for f in (220.0, 277.2, 329.6)) / 6
    return encode(Audio(np.tile(tone, (channels, 1)).astype(np.float32), rate), "wav")


def sine_wav(freq: float, seconds: float = 2.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return encode(Audio((0.5 * np.sin(2 * math.pi * freq * t))[None].astype(np.float32), rate), "wav")


def fetch(url: str) -> tuple[np.ndarray, int]:
    data, rate = sf.read(io.BytesIO(httpx.get(url).content), dtype="float32", always_2d=True)
    return data.T, rate


def submit(base_url: str, path: str, data: bytes, key: str | None = None, **fields: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    files = {"file": ("input.wav", data, "audio/wav")}
    return httpx.post(f"{base_url}{path}", files=files, data=fields, headers=headers, timeout=60)


def test_separation_job_fans_out_segments_and_stores_stems(base_url: str) -> None:
    client = SoundstageClient(base_url)
    response = submit(base_url, "/v1/jobs/separate", chord_wav(), segment_s=5, overlap_s=1, format="flac")
    assert response.status_code == 202, response.text
    job = client.wait(response.json()["id"], timeout_s=300)
    result = job["result"]
    assert set(result) == {"drums", "bass", "other", "vocals", "metadata"}
    assert result["metadata"]["weights"] == "debug-random" and result["metadata"]["segments"] == 3
    for name in ("drums", "bass", "other", "vocals"):
        samples, rate = fetch(result[name]["url"])
        assert rate == 44100 and samples.shape == (2, 12 * 44100) and np.isfinite(samples).all()
        assert result[name]["key"] == f"outputs/{job['id']}/a1/{name}.flac"


def test_vocals_mode_and_idempotent_file_resubmission(base_url: str) -> None:
    client = SoundstageClient(base_url)
    data = chord_wav(seconds=6.0)
    first = submit(base_url, "/v1/jobs/separate", data, key="sep-1", mode="vocals", segment_s=5)
    again = submit(base_url, "/v1/jobs/separate", data, key="sep-1", mode="vocals", segment_s=5)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    job = client.wait(first.json()["id"], timeout_s=300)
    assert {"vocals", "no_vocals"} <= set(job["result"])


def test_pitch_shift_job_moves_f0(base_url: str) -> None:
    client = SoundstageClient(base_url)
    response = submit(base_url, "/v1/jobs/pitch-shift", sine_wav(220.0), semitones=12)
    assert response.status_code == 202, response.text
    job = client.wait(response.json()["id"], timeout_s=120)
    shifted = httpx.get(job["result"]["audio"]["url"]).content
    contour = submit(base_url, "/v1/pitch", shifted).json()
    voiced = [f for f, v in zip(contour["f0_hz"], contour["voiced"], strict=True) if v]
    assert abs(float(np.median(voiced)) - 440.0) / 440.0 < 0.02


@pytest.mark.parametrize(
    ("path", "fields", "status"),
    [
        ("/v1/jobs/separate", {"overlap_s": 4, "segment_s": 6}, 422),
        ("/v1/jobs/separate", {"mode": "karaoke"}, 422),
        ("/v1/jobs/separate", {"format": "aiff"}, 422),
        ("/v1/jobs/pitch-shift", {"semitones": 30}, 422),
        ("/v1/jobs/pitch-shift", {}, 422),
    ],
)
def test_bad_job_fields(base_url: str, path: str, fields: dict[str, Any], status: int) -> None:
    response = submit(base_url, path, sine_wav(220.0), **fields)
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_unknown_upload_is_404(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/jobs/separate", data={"upload_id": "f" * 32})
    assert response.status_code == 404 and response.json()["error"]["code"] == "upload_not_found"


def test_input_by_url(base_url: str, storage: Storage) -> None:
    """The ingress fetches the URL (here a presigned URL of the embedded S3 server) at submission."""
    storage.put_bytes("test-inputs/chord.wav", chord_wav(seconds=6.0))
    url = storage.presigned_url("test-inputs/chord.wav")
    response = httpx.post(f"{base_url}/v1/jobs/separate", data={"url": url, "segment_s": 5}, timeout=60)
    assert response.status_code == 202, response.text
    job = SoundstageClient(base_url).wait(response.json()["id"], timeout_s=300)
    samples, rate = fetch(job["result"]["vocals"]["url"])
    assert rate == 44100 and samples.shape == (2, 6 * 44100)
    both = submit(base_url, "/v1/jobs/separate", chord_wav(seconds=1.0), url=url)
    assert both.status_code == 422 and both.json()["error"]["code"] == "input_required"
    missing = httpx.post(
        f"{base_url}/v1/jobs/separate", data={"url": storage.presigned_url("test-inputs/none.wav")}
    )
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "url_fetch_failed"
