"""What error bodies may say: a sweep of error paths for internals (Ray's wrapped exceptions, tracebacks,
pids, ANSI colours, file paths, memory addresses), overload as 503 + Retry-After, and long speech
streamed whole with a bounded number of sentences at the TTS."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from infra.audio import Audio
from models.types import INTERNAL_FAULT_MESSAGE, ModelInputError, ModelInternalError
from tests.deployments.http.conftest import ASRDouble, EdgeFactory, FakeTTS, tone_wav

RAY_TEXT = (
    "\x1b[36mray::ServeReplica:soundstage:TTS.handle_request()\x1b[39m (pid=4242, ip=10.0.3.7, "
    "actor_id=9f8e7d6c5b4a)\nTraceback (most recent call last):\n"
    '  File "/home/ray/soundstage/models/tts.py", '
    "line 88, in synthesize\nValueError: nothing to say"
)
MARKERS = re.compile(r"ray::|Traceback|pid=|\x1b\[|File \"|/home/|\.py\b|0x[0-9a-f]{6,}|actor_id")


class RayTaskError(ValueError):
    """Stands in for Ray's `RayTaskError(ValueError)`: its text is the replica's traceback."""

    def __str__(self) -> str:
        return RAY_TEXT


class BackPressureError(Exception):
    """Named like Serve's `ray.serve.exceptions.BackPressureError` (the edge maps it by name)."""


class LeakyTTS(FakeTTS):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def synthesize(self, *, text: str, voice: str, speed: float = 1.0) -> Audio:
        raise self.error


class LeakyASR(ASRDouble):
    async def transcribe(
        self,
        *,
        audio: Audio,
        language: str | None = None,
        word_timestamps: bool = False,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: str = "transcribe",
    ) -> None:
        raise RayTaskError()


def assert_clean(status: int, body: str) -> None:
    assert status < 500 or status == 503, (status, body)
    assert not MARKERS.search(body), body


def test_error_paths_carry_no_internals(edge: EdgeFactory) -> None:
    leaky = edge(tts=LeakyTTS(RayTaskError()), asr=LeakyASR())
    broken = edge(tts=LeakyTTS(RuntimeError(RAY_TEXT)))
    speech = {"model": "tts-1", "input": "Hello there.", "voice": "alloy"}
    answers = [
        leaky.post("/v1/audio/speech", json=speech),
        leaky.post(
            "/v1/audio/transcriptions", files={"file": ("a.wav", tone_wav())}, data={"language": "xx"}
        ),
        leaky.post("/v1/uploads", files={"file": ("a.wav", b"RIFF garbage that is not audio at all")}),
        leaky.post("/v1/uploads", files={"file": ("a.wav", tone_wav()[:5000])}),
        leaky.post("/v1/jobs/music", content=b'{"prompt": ', headers={"Content-Type": "application/json"}),
        leaky.post("/v1/jobs/music", json={"prompt": "x" * 100_000}),
        leaky.get("/v1/jobs/%1b%5b31mTraceback"),
        leaky.get("/v1/jobs/" + "a" * 32),
        leaky.delete("/v1/voices/%2e%2e"),
        leaky.get("/no/such/route"),
        leaky.put("/v1/jobs"),
        leaky.post("/v1/jobs/separate", data={"url": "http://127.0.0.1:9/a.wav"}),
    ]
    for r in answers:
        assert_clean(r.status_code, r.text)
        assert "error" in r.json(), r.text
    fault = broken.post("/v1/audio/speech", json=speech)
    assert fault.status_code == 500 and fault.json()["error"] == {  # OpenAI's shape on /v1/audio/*
        "message": "internal server error",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }


def test_backpressure_is_503_with_retry_after(edge: EdgeFactory) -> None:
    client = edge(tts=LeakyTTS(BackPressureError("queue full: ray::TTS pid=1")))
    r = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": "alloy"})
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert r.json()["error"]["code"] == "overloaded"
    assert_clean(r.status_code, r.text)


class BoundedTTS(FakeTTS):
    """A TTS whose queue holds 8: one call more at once is refused, as Serve's max_queued_requests does."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.peak = 0

    async def synthesize(self, *, text: str, voice: str, speed: float = 1.0) -> Audio:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.active > 8:
                raise BackPressureError("full")
            await asyncio.sleep(0.001)
            return Audio(np.full((1, 80), 0.1, dtype=np.float32), 8000)
        finally:
            self.active -= 1


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_thousand_sentence_speech_is_complete(edge: EdgeFactory, fmt: str) -> None:
    tts = BoundedTTS()
    text = " ".join(["Hi."] * 1000)
    r = edge(tts=tts).post(
        "/v1/audio/speech", json={"model": "tts-1", "input": text, "voice": "alloy", "response_format": fmt}
    )
    assert r.status_code == 200
    header = 44 if fmt == "wav" else 0
    samples = 240 if fmt == "pcm" else 80  # OpenAI's `pcm` is 24 kHz: 80 samples at 8 kHz are 240
    assert len(r.content) == header + 1000 * samples * 2  # every sentence, 16-bit samples
    assert tts.peak <= 8


def test_typed_model_faults_map_to_4xx_words_and_a_generic_500(edge: EdgeFactory) -> None:
    """What the typed clients raise for a deployment's `ModelFault` (tests/deployments/test_model_faults.py
    checks the clients on the stack): bad input → 422 (400 on OpenAI's routes) with the model's words and
    the field at fault; a model failure → 500 with the generic message."""
    refused = ModelInputError("TTS", "invalid_input", "text 0 has nothing to pronounce", "text")
    speech = {"model": "tts-1", "input": "Hello there.", "voice": "alloy"}
    r = edge(tts=LeakyTTS(refused)).post("/v1/audio/speech", json=speech)
    assert r.status_code == 400 and r.json()["error"]["message"] == "text 0 has nothing to pronounce"
    assert r.json()["error"]["code"] == "invalid_input" and r.json()["error"]["param"] == "text"
    failed = ModelInternalError("TTS", "model_error", INTERNAL_FAULT_MESSAGE)
    r = edge(tts=LeakyTTS(failed)).post("/v1/audio/speech", json=speech)
    assert r.status_code == 500 and r.json()["error"]["message"] == INTERNAL_FAULT_MESSAGE
    assert r.json()["error"]["code"] == "model_error"
    assert_clean(422, r.text)
