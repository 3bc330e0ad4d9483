"""OpenAI-compatible speech (`/v1/audio/speech`) with the bundled offline voice, checked by transcribing
the audio back with the ASR deployment (the local profile's Whisper base)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.wer import word_error_rate

pytestmark = pytest.mark.ray

TEXT = (
    "Welcome to the evening news. Heavy rain is expected across the northern valleys tonight. "
    "Drivers should take care on the mountain roads, and ferries may leave later than planned. "
    "Tomorrow will be brighter, with sunshine in the afternoon and a light breeze from the west."
)


def transcribe(base_url: str, audio: bytes, filename: str) -> str:
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions", files={"file": (filename, audio)}, timeout=120
    )
    assert response.status_code == 200, response.text
    return str(response.json()["text"])


def test_openai_client_speech_round_trips_through_asr(base_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused-locally")
    speech = client.audio.speech.create(model="tts-1", voice="heart", input=TEXT, response_format="mp3")
    audio = speech.read()
    assert len(TEXT.split()) >= 40
    wer = word_error_rate(TEXT, transcribe(base_url, audio, "speech.mp3"))
    assert wer <= 0.10, f"WER {wer:.1%}"


@pytest.mark.parametrize("fmt", ["wav", "flac", "pcm"])
def test_formats(base_url: str, fmt: str) -> None:
    body = {
        "model": "hibari",
        "voice": "heart",
        "input": "One short sentence. And a second one.",
        "response_format": fmt,
    }
    response = httpx.post(f"{base_url}/v1/audio/speech", json=body, timeout=120)
    assert response.status_code == 200, response.text
    if fmt == "pcm":
        samples = np.frombuffer(response.content, dtype="<i2")
        assert samples.size > 24000 and response.headers["content-type"] == "audio/pcm"
        return
    data, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 24000 and data.shape[0] > 24000 and np.isfinite(data).all()


def test_speed_changes_duration(base_url: str) -> None:
    def seconds(speed: float) -> float:
        body = {"model": "tts-1", "voice": "heart", "input": TEXT, "response_format": "pcm", "speed": speed}
        return len(httpx.post(f"{base_url}/v1/audio/speech", json=body, timeout=120).content) / 2 / 24000

    assert seconds(1.6) < 0.8 * seconds(1.0)


BAD_SPEECH: list[tuple[str, dict[str, Any]]] = [
    ("empty input", {"input": ""}),
    ("blank input", {"input": "   "}),
    ("nothing to say", {"input": "?!... --"}),
    ("over-long input", {"input": "word " * 1000}),
    ("unknown voice", {"voice": "darth"}),
    ("unknown format", {"response_format": "ogg"}),  # opus and aac are served (PyAV)
    ("unknown model", {"model": "tts-9000"}),
    ("speed out of range", {"speed": 9}),
]


@pytest.mark.parametrize(("case", "change"), BAD_SPEECH, ids=[c[0] for c in BAD_SPEECH])
def test_bad_speech_requests_are_4xx(base_url: str, case: str, change: dict[str, Any]) -> None:
    body = {"model": "tts-1", "voice": "heart", "input": "Hello there.", **change}
    response = httpx.post(f"{base_url}/v1/audio/speech", json=body, timeout=60)
    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()
