"""Music jobs steered by an upload, over HTTP on the local stack (`debug` weights): a melody reference
(MusicGen-Melody) and a clip to continue (MusicGen), then the bad requests.

Expected audio is computed in this process with the same `debug` models (random-init from a fixed seed,
so the same weights as the replicas'). The pipeline's mastering stage applies one gain to the whole clip,
so results are compared to those expectations up to a positive gain.
"""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from infra.audio import Audio, decode, encode
from infra.client import SoundstageClient
from models.musicgen import MusicGen
from models.musicgen_melody import MusicGenMelody

pytestmark = pytest.mark.ray

PROMPT = "slow piano ballad"
UNKNOWN_UPLOAD = "0123456789abcdef" * 2


def sine(frequency_hz: float, seconds: float, sample_rate: int) -> Audio:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return Audio((0.5 * np.sin(2 * np.pi * frequency_hz * t))[None].astype(np.float32), sample_rate)


@pytest.fixture(scope="module")
def client(base_url: str) -> SoundstageClient:
    return SoundstageClient(base_url)


def upload(base_url: str, audio: Audio) -> tuple[str, bytes]:
    """Store `audio` as a float WAV upload; returns its upload id and the bytes sent."""
    data = encode(audio, "wav")
    response = httpx.post(f"{base_url}/v1/uploads", files={"file": ("clip.wav", data, "audio/wav")})
    assert response.status_code == 201, response.text
    assert response.json()["duration_s"] == pytest.approx(audio.duration_s)
    return str(response.json()["upload_id"]), data


def run_job(client: SoundstageClient, body: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray, int]:
    """Submit a music job, wait for it, fetch its audio through the presigned URL."""
    job = client.wait(
        client.submit("music", {"prompt": PROMPT, "format": "wav", **body})["id"], timeout_s=240
    )
    audio = httpx.get(job["result"]["audio"]["url"])
    assert audio.status_code == 200
    samples, rate = sf.read(io.BytesIO(audio.content), dtype="float32", always_2d=True)
    return job, samples.T, rate


def assert_equal_up_to_gain(actual: np.ndarray, expected: np.ndarray) -> None:
    gain = float(np.vdot(actual, expected) / np.vdot(expected, expected))
    assert gain > 0
    # Equal codes decode to equal audio up to float rounding (~1e-6); one other code differs by ~1e-2.
    np.testing.assert_allclose(actual, gain * expected, rtol=0, atol=1e-4)


def test_continuation_starts_with_the_clip_and_lasts_duration_s(
    client: SoundstageClient, base_url: str
) -> None:
    clip = sine(440.0, 1.0, 32000)
    upload_id, data = upload(base_url, clip)
    job, samples, rate = run_job(client, {"duration_s": 2.0, "seed": 3, "continue_upload_id": upload_id})
    metadata = job["result"]["metadata"]
    assert metadata["weights"] == "debug-random"
    assert metadata["conditioning"] == {"kind": "continuation", "upload_id": upload_id}
    assert job["request"]["continue_upload_id"] == upload_id
    assert rate == 32000 and samples.shape == (1, 64000)  # duration_s is the total length
    # The contract: the result starts with the codec's reconstruction of the clip (seed-independent),
    # then continues it. The reconstruction comes from the same debug model run here.
    (local,) = MusicGen.from_pretrained("debug", device="cpu").continue_audio(
        decode(data), [PROMPT], duration_s=2.0, seed=metadata["generation_seed"]
    )
    head = clip.num_samples
    assert_equal_up_to_gain(samples[:, :head], local.samples[:, :head])
    assert_equal_up_to_gain(samples, local.samples)


def test_melody_job_follows_the_uploaded_melody(client: SoundstageClient, base_url: str) -> None:
    a4, _ = upload(base_url, sine(440.0, 2.0, 44100))
    c4, _ = upload(base_url, sine(261.63, 2.0, 44100))
    body = {"duration_s": 1.0, "seed": 5}
    job, on_a, rate = run_job(client, {**body, "melody_upload_id": a4})
    _, on_c, _ = run_job(client, {**body, "melody_upload_id": c4})
    metadata = job["result"]["metadata"]
    assert metadata["weights"] == "debug-random" and metadata["model"]["model_id"] == "debug"
    assert metadata["conditioning"] == {"kind": "melody", "upload_id": a4}
    assert rate == 32000 and on_a.shape == on_c.shape == (1, 32000)
    # Same prompt and seed, another melody: other music.
    assert not np.allclose(on_a, on_c, rtol=0, atol=1e-3)
    (local,) = MusicGenMelody.from_pretrained("debug", device="cpu").generate(
        [PROMPT], melody=sine(440.0, 2.0, 44100), duration_s=1.0, seed=metadata["generation_seed"]
    )
    assert_equal_up_to_gain(on_a, local.samples)


def test_melody_and_continuation_are_exclusive(base_url: str) -> None:
    body = {"prompt": "x", "melody_upload_id": UNKNOWN_UPLOAD, "continue_upload_id": UNKNOWN_UPLOAD}
    response = httpx.post(f"{base_url}/v1/jobs/music", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert "at most one" in response.json()["error"]["message"]


@pytest.mark.parametrize("field", ["melody_upload_id", "continue_upload_id"])
def test_unknown_upload_is_404(base_url: str, field: str) -> None:
    response = httpx.post(
        f"{base_url}/v1/jobs/music", json={"prompt": "x", "duration_s": 2.0, field: UNKNOWN_UPLOAD}
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "upload_not_found"


@pytest.mark.parametrize("field", ["melody_upload_id", "continue_upload_id"])
def test_conditioning_needs_musicgen(base_url: str, field: str) -> None:
    body = {"prompt": "x", "duration_s": 1.0, "model": "stable-audio", field: UNKNOWN_UPLOAD}
    response = httpx.post(f"{base_url}/v1/jobs/music", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert "musicgen" in response.json()["error"]["message"]


@pytest.mark.parametrize("duration_s", [0.5, 1.0, 1.05])
def test_continuation_must_be_longer_than_the_clip(base_url: str, duration_s: float) -> None:
    upload_id, _ = upload(base_url, sine(330.0, 1.0, 16000))
    body = {"prompt": "x", "duration_s": duration_s, "continue_upload_id": upload_id}
    response = httpx.post(f"{base_url}/v1/jobs/music", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "clip_too_long"


def test_melody_longer_than_30_s_is_rejected(base_url: str) -> None:
    upload_id, _ = upload(base_url, sine(330.0, 31.0, 8000))
    body = {"prompt": "x", "duration_s": 1.0, "melody_upload_id": upload_id}
    response = httpx.post(f"{base_url}/v1/jobs/music", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "melody_too_long"
