"""The `openai` SDK against the running local stack (real TTS voice, Whisper base): model list, OpenAI
voice names, speech `speed`/`pcm`/SSE, transcription `prompt`/`temperature`/`verbose_json`/streaming,
and errors in OpenAI's shape. The same calls over in-process doubles: tests/deployments/http/
test_openai_compat.py."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import openai
import pytest

from tests.wer import word_error_rate

pytestmark = pytest.mark.ray

TEXT = "The ferry leaves at nine in the morning. Bring a warm coat and something to read."


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused-locally", max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def speech_wav(client: openai.OpenAI) -> bytes:
    return client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input=TEXT, response_format="wav"
    ).read()


def test_models_list_and_deployments(client: openai.OpenAI, base_url: str) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"whisper-1", "gpt-4o-transcribe", "tts-1", "gpt-4o-mini-tts"} <= ids
    assert client.models.retrieve("whisper-1").owned_by == "soundstage"
    deployments = httpx.get(f"{base_url}/v1/deployments", timeout=60).json()["deployments"]
    assert {"ASR", "TTS"} <= {d["deployment"] for d in deployments}


def test_openai_voice_speaks_and_transcribes_back(client: openai.OpenAI, speech_wav: bytes) -> None:
    verbose = client.audio.transcriptions.create(
        model="gpt-4o-transcribe",
        file=("speech.wav", speech_wav),
        response_format="verbose_json",
        prompt="Ferry timetable.",
        temperature=0.2,
    )
    assert word_error_rate(TEXT, verbose.text) <= 0.15, verbose.text
    assert verbose.segments
    for segment in verbose.segments:
        assert segment.tokens and segment.avg_logprob < 0 and segment.compression_ratio > 0
        assert 0.0 <= segment.no_speech_prob <= 1.0 and segment.temperature >= 0.2 and segment.seek >= 0


def test_transcription_stream(client: openai.OpenAI, speech_wav: bytes) -> None:
    events = list(
        client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech_wav), stream=True)
    )
    assert events[-1].type == "transcript.text.done" and len(events) >= 2
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert deltas == events[-1].text and word_error_rate(TEXT, deltas) <= 0.15


def test_speed_pcm_and_sse(client: openai.OpenAI) -> None:
    def pcm(speed: float) -> np.ndarray:
        audio = client.audio.speech.create(
            model="tts-1", voice="nova", input=TEXT, response_format="pcm", speed=speed
        ).read()
        return np.frombuffer(audio, dtype="<i2")

    normal, fast = pcm(1.0), pcm(2.0)
    assert normal.size / 24000 > 2.0  # 24 kHz samples: a few seconds of speech
    assert 0.4 < fast.size / normal.size < 0.65
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="nova", input=TEXT, response_format="pcm", stream_format="sse"
    ) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    streamed = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert np.array_equal(np.frombuffer(streamed, dtype="<i2"), normal)


def test_errors_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=9.0)
    assert bad.value.param == "speed" and bad.value.type == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="whisper-9", file=("a.wav", b"RIFF"))


def test_translation_and_phone_containers(client: openai.OpenAI, speech_wav: bytes) -> None:
    from infra.audio import decode
    from tests.infra.test_av_codec import muxed

    m4a = muxed(decode(speech_wav), "ipod", "aac")
    translated = client.audio.translations.create(model="whisper-1", file=("speech.m4a", m4a))
    assert word_error_rate(TEXT, translated.text) <= 0.15, translated.text  # English stays English
    opus = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="opus").read()
    back = client.audio.transcriptions.create(model="whisper-1", file=("speech.opus", opus))
    assert opus[:4] == b"OggS" and word_error_rate(TEXT, back.text) <= 0.15, back.text


def test_include_logprobs(client: openai.OpenAI, speech_wav: bytes) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("s.wav", speech_wav), include=["logprobs"], response_format="json"
    )
    assert result.logprobs and len(result.logprobs) == len(result.text.split())
    assert all(p.logprob is not None and p.logprob <= 0 for p in result.logprobs)
