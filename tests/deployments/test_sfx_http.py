"""Sound effects (AudioGen) and Stable Audio Open jobs, `debug` weights, end to end over HTTP."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile as sf

from infra.client import SoundstageClient

pytestmark = pytest.mark.ray


def fetch(url: str) -> tuple[np.ndarray, int]:
    data, rate = sf.read(io.BytesIO(httpx.get(url).content), dtype="float32", always_2d=True)
    return data.T, rate


def test_sfx_job_with_audiogen(base_url: str) -> None:
    client = SoundstageClient(base_url)
    job = client.submit("sfx", {"prompt": "a door creaks open", "duration_s": 1.0, "seed": 4})
    assert job["request"]["model"] == "audiogen"
    done = client.wait(job["id"], timeout_s=180)
    metadata = done["result"]["metadata"]
    assert metadata["weights"] == "debug-random" and metadata["sample_rate"] == 16000
    samples, rate = fetch(done["result"]["audio"]["url"])
    assert rate == 16000 and samples.shape == (1, 16000)
    assert metadata["quality"]["regenerations"] == len(metadata["quality"]["attempts"]) - 1
    png = httpx.get(done["result"]["spectrogram"]["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


@pytest.mark.parametrize("kind", ["music", "sfx"])
def test_stable_audio_is_selectable(base_url: str, kind: str) -> None:
    client = SoundstageClient(base_url)
    body = {"prompt": "rain on a tin roof", "duration_s": 0.5, "seed": 1, "model": "stable-audio", "steps": 2}
    done = client.wait(client.submit(kind, body)["id"], timeout_s=180)
    samples, rate = fetch(done["result"]["audio"]["url"])
    assert rate == 44100 and samples.shape == (2, 22050) and np.isfinite(samples).all()
    assert done["result"]["metadata"]["weights"] == "debug-random"


@pytest.mark.parametrize(
    ("kind", "body", "code"),
    [
        ("music", {"prompt": "x", "model": "stable-audio", "duration_s": 5.0}, "duration_too_long"),
        ("sfx", {"prompt": "x", "model": "musicgen"}, "invalid_request"),
        ("music", {"prompt": "x", "model": "audiogen"}, "invalid_request"),
        ("sfx", {"prompt": "", "duration_s": 1.0}, "invalid_request"),
        ("sfx", {"prompt": "x", "steps": 0}, "invalid_request"),
    ],
)
def test_bad_generation_requests(base_url: str, kind: str, body: dict[str, object], code: str) -> None:
    response = httpx.post(f"{base_url}/v1/jobs/{kind}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
