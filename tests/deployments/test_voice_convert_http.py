"""Singing voice conversion on the stack: the SVC deployment through its handle, voice models registered
over HTTP (an uploaded converted folder and a URI), and `POST /v1/jobs/voice-convert` end to end. The
content encoder and the voice are `debug` random-init weights (no RVC weights ship offline), so the
output is checked for structure, provenance, the instrumental left untouched, and the F0 it follows."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from infra.audio import Audio, encode
from infra.client import SoundstageClient

pytestmark = pytest.mark.ray
RATE = 48000


def sung(seconds: float, gap: tuple[float, float] | None = None) -> Audio:
    """A 220 Hz 'voice' at 48 kHz, silent inside `gap` (s)."""
    t = np.arange(round(seconds * RATE)) / RATE
    voice = 0.3 * np.sin(2 * math.pi * 220.0 * t)
    if gap is not None:
        voice = voice * ~((t >= gap[0]) & (t < gap[1]))
    return Audio(voice[None].astype(np.float32), RATE)


def backing(seconds: float) -> Audio:
    noise = np.random.default_rng(1).uniform(-0.2, 0.2, (2, round(seconds * RATE)))
    return Audio(noise.astype(np.float32), RATE)


def wav16(audio: Audio) -> bytes:
    return encode(audio, "wav", bits=16)


def upload(base_url: str, data: bytes) -> str:
    response = httpx.post(f"{base_url}/v1/uploads", files={"file": ("in.wav", data, "audio/wav")}, timeout=60)
    assert response.status_code == 201, response.text
    return str(response.json()["upload_id"])


def convert(base_url: str, song: bytes, **fields: Any) -> dict[str, Any]:
    files = {"file": ("song.wav", song, "audio/wav")}
    response = httpx.post(f"{base_url}/v1/jobs/voice-convert", files=files, data=fields, timeout=60)
    assert response.status_code == 202, response.text
    return SoundstageClient(base_url).wait(response.json()["id"], timeout_s=300)


def pcm16(url: str) -> tuple[np.ndarray, Any]:
    body = httpx.get(url).content
    return sf.read(io.BytesIO(body), dtype="int16", always_2d=True)[0].T, sf.info(io.BytesIO(body))


def median_f0(base_url: str, data: bytes) -> float:
    contour = httpx.post(
        f"{base_url}/v1/pitch", files={"file": ("v.wav", data, "audio/wav")}, timeout=60
    ).json()
    return float(np.median([f for f, v in zip(contour["f0_hz"], contour["voiced"], strict=True) if v]))


@pytest.fixture(scope="module")
def uploaded_voice(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A debug voice saved as a converted folder and registered by upload (pushed to the model store)."""
    from models.svc import VoiceModel

    folder: Path = tmp_path_factory.mktemp("voice")
    VoiceModel.load("debug").save(folder)
    files = {
        "config": ("config.json", (folder / "config.json").read_bytes(), "application/json"),
        "weights": (
            "model.safetensors",
            (folder / "model.safetensors").read_bytes(),
            "application/octet-stream",
        ),
    }
    response = httpx.post(f"{base_url}/v1/svc-voices", files=files, data={"name": "alto"}, timeout=60)
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["source"] == "upload" and record["uri"].endswith(
        f"svc-voices/{record['voice_model_id']}/model/"
    )
    return str(record["voice_model_id"])


def test_the_svc_deployment_answers_its_handle(stack: object) -> None:
    from ray import serve

    from models.types import PitchContour

    handle = serve.get_deployment_handle("SVC", app_name="soundstage")
    times = np.arange(0.0, 0.5, 0.016)
    contour = PitchContour(
        times, np.full(times.size, 300.0), np.ones(times.size), np.ones(times.size, bool), 0.016
    )
    result = handle.convert.remote(sung(0.5), contour, "debug", 0, 3).result()
    assert result.audio.samples.shape == (1, 20000) and result.audio.sample_rate == 40000
    assert (result.voice.weights, result.encoder.weights, result.seed) == ("debug-random", "debug-random", 3)
    info = handle.info.remote().result()
    assert (
        info["gpu_share"] == 0.25 and info["weights"] == "debug-random" and "debug" in info["voices_loaded"]
    )


def test_voice_models_register_list_refuse_and_delete(base_url: str, uploaded_voice: str) -> None:
    by_uri = httpx.post(f"{base_url}/v1/svc-voices", data={"name": "hub", "uri": "hf://org/singer@main"})
    assert by_uri.status_code == 201 and by_uri.json()["source"] == "uri"
    listed = [v["voice_model_id"] for v in httpx.get(f"{base_url}/v1/svc-voices").json()["voice_models"]]
    assert {uploaded_voice, by_uri.json()["voice_model_id"]} <= set(listed)
    local = httpx.post(f"{base_url}/v1/svc-voices", data={"uri": "/etc/models/singer"})
    assert local.status_code == 422 and local.json()["error"]["code"] == "invalid_voice_model"
    files = {
        "config": ("config.json", b"{}", "application/json"),
        "weights": ("model.safetensors", b"x", "a/b"),
    }
    assert httpx.post(f"{base_url}/v1/svc-voices", files=files).status_code == 422
    assert httpx.delete(f"{base_url}/v1/svc-voices/{by_uri.json()['voice_model_id']}").status_code == 204
    gone = httpx.post(
        f"{base_url}/v1/jobs/voice-convert",
        files={"file": ("s.wav", wav16(sung(1.0)), "audio/wav")},
        data={"voice_model": by_uri.json()["voice_model_id"]},
    )
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "voice_model_not_found"


def test_a_separated_song_converts_end_to_end(base_url: str, uploaded_voice: str) -> None:
    song = Audio(sung(4.0).samples + backing(4.0).samples, RATE)
    job = convert(base_url, wav16(song), voice_model=uploaded_voice, segment_s=5, profile="quality")
    result = job["result"]
    meta = result["metadata"]
    assert (meta["weights"], meta["voice"]["weights"], meta["separation"]["weights"]) == ("debug-random",) * 3
    assert meta["segments"] == 1 and meta["profile"] == "quality" and meta["voice"]["revision"] is None
    mix, info = pcm16(result["audio"]["url"])
    assert (info.format, info.subtype, info.samplerate, mix.shape) == ("FLAC", "PCM_24", 48000, (2, 4 * RATE))
    assert result["vocals"]["channels"] == 1


def test_bypassed_separation_keeps_the_instrumental_and_transposes_the_f0(
    base_url: str, uploaded_voice: str
) -> None:
    """Vocals and instrumental given apart: the mix equals the instrumental where nothing is sung, and
    the converted vocals follow the SwiftF0 contour an octave up (220 Hz sung → 440 Hz)."""
    instrumental = backing(3.0)
    fields = {
        "voice_model": uploaded_voice,
        "semitones": 12,
        "instrumental_upload_id": upload(base_url, wav16(instrumental)),
    }
    result = convert(base_url, wav16(sung(3.0, gap=(1.0, 2.0))), **fields)["result"]
    mix, info = pcm16(result["audio"]["url"])
    given = sf.read(io.BytesIO(wav16(instrumental)), dtype="int16")[0].T
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 48000)  # balanced
    unsung = slice(round(1.1 * RATE), round(1.9 * RATE))
    assert np.array_equal(mix[:, unsung], given[:, unsung])
    assert not np.array_equal(mix[:, :RATE], given[:, :RATE])
    assert result["metadata"]["median_f0_hz"] == pytest.approx(440.0, rel=0.02)
    vocals = httpx.get(result["vocals"]["url"]).content
    assert median_f0(base_url, vocals) == pytest.approx(440.0, rel=0.02)
