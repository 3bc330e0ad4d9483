"""The soundscape job over HTTP on the local stack, `debug` AudioGen: placement and gains measured on
the stored mix, stems ZIP and per-layer takes by presigned URL, bad requests refused with 422."""

from __future__ import annotations

import io
import zipfile

import httpx
import numpy as np
import pytest
import soundfile as sf

from infra.client import SoundstageClient

pytestmark = pytest.mark.ray
RATE = 16000  # debug AudioGen
FRAME = 320  # 20 ms
LAYERS = [
    {"prompt": "footsteps on gravel", "start_s": 0.3, "duration_s": 0.7, "gain_db": 0.0},
    {"prompt": "a car horn", "start_s": 1.5, "duration_s": 0.6, "gain_db": -9.0},
    {
        "prompt": "a bird chirps",
        "start_s": 2.6,
        "duration_s": 0.5,
        "gain_db": -3.0,
        "loop": True,
        "clip_s": 0.25,
    },
]


def fetch(url: str) -> np.ndarray:
    data, rate = sf.read(io.BytesIO(httpx.get(url).content), dtype="float32", always_2d=True)
    assert rate == RATE
    return data.T


def first_sound_s(samples: np.ndarray, after_s: float) -> float:
    """Start of the first 20 ms frame from `after_s` that is not digital silence."""
    first = round(after_s * RATE) // FRAME
    frames = samples[0, : samples.shape[1] // FRAME * FRAME].reshape(-1, FRAME)[first:]
    return (first + int(np.flatnonzero(np.abs(frames).max(axis=1) > 0)[0])) * FRAME / RATE


def level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64))))


def test_soundscape_places_and_gains_layers(base_url: str) -> None:
    client = SoundstageClient(base_url)
    job = client.submit("soundscape", {"duration_s": 3.5, "layers": LAYERS, "seed": 3})
    done = client.wait(job["id"], timeout_s=240)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["metadata"]["weights"] == "debug-random"
    mix = fetch(result["audio"]["url"])
    assert mix.shape == (1, round(3.5 * RATE))
    offsets = []
    for layer, entry in zip(LAYERS, result["layers"], strict=True):
        start = float(layer["start_s"])  # type: ignore[arg-type]
        end = start + float(layer["duration_s"])  # type: ignore[arg-type]
        assert abs(first_sound_s(mix, start - 0.25) - start) <= FRAME / RATE
        assert not mix[:, round(end * RATE) + 1 : round((end + 0.1) * RATE)].any()  # silent after it
        take = fetch(entry["audio"]["url"])
        inside = mix[:, round((start + 0.02) * RATE) : round((end - 0.02) * RATE)]
        offsets.append(level_db(inside) - level_db(take) - float(layer["gain_db"]))  # type: ignore[arg-type]
    assert max(offsets) - min(offsets) < 1.0  # every layer at its gain relative to the others (dB)
    archive = zipfile.ZipFile(io.BytesIO(httpx.get(result["stems"]["url"]).content))
    assert archive.namelist() == ["layer-00.wav", "layer-01.wav", "layer-02.wav"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            '{"duration_s": 2, "layers": [{"prompt": "x", "start_s": 1.5, "duration_s": 1}]}',
            "layers.0.duration_s",
        ),
        ('{"duration_s": 2, "layers": [{"prompt": "x", "start_s": NaN, "duration_s": 1}]}', "start_s"),
        (
            '{"duration_s": 2, "layers": [{"prompt": "x", "start_s": 0, "duration_s": 1, "gain_db": 40}]}',
            "gain_db",
        ),
        ('{"duration_s": 2, "layers": []}', "layers"),
        (
            '{"duration_s": 100, "layers": [{"prompt": "x", "start_s": 0, "duration_s": 90}]}',
            "layers.0.duration_s",
        ),
    ],
)
def test_bad_soundscapes_are_refused_naming_the_field(base_url: str, body: str, field: str) -> None:
    response = httpx.post(
        f"{base_url}/v1/jobs/soundscape", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]
