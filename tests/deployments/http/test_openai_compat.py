"""The OpenAI-compatible routes in-process, driven by the `openai` SDK itself over the app's TestClient:
the model list, voice names, errors in OpenAI's shape (and soundstage's own shape elsewhere), speech
`speed`/`pcm`/SSE, transcription `temperature`/`prompt`/`verbose_json`/streaming. Model clients are
in-process doubles (the real models: tests/deployments/test_openai_sdk.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from infra.audio import Audio
from infra.settings import OPENAI_VOICE_NAMES, Settings
from models.types import ModelInfo, Segment, Transcript, Word
from pipelines.engine.clients import ModelCard
from tests.deployments.http.conftest import KEYS, ASRDouble, EdgeFactory, keyed, tone_wav

RATE = 8000  # the doubles' TTS rate, so `pcm` has to be resampled to 24 kHz


class RecordingTTS:
    """Double of `TTSClient` with one stock voice, `heart`: 0.1 s of a tone per sentence, 0.1 s / speed."""

    deployment = "TTS"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def info(self) -> ModelCard:
        return ModelCard(
            deployment="TTS", model=ModelInfo("fake/tts", "r1", "debug-random"), sample_rate=RATE
        )

    async def voices(self) -> list[str]:
        return ["heart"]

    async def synthesize(self, *, text: str, voice: str, speed: float = 1.0) -> Audio:
        self.calls.append({"text": text, "voice": voice, "speed": speed})
        return Audio(np.full((1, round(800 / speed)), 0.1, dtype=np.float32), RATE)


SEGMENTS = (
    Segment(0.0, 1.0, "Hello there.", (Word(0.0, 0.5, "Hello", 0.9), Word(0.5, 1.0, "there.", 0.8)),
            seek=0, tokens=(50364, 2425, 456), temperature=0.0, avg_logprob=-0.2, compression_ratio=0.9,
            no_speech_prob=0.01),
    Segment(1.0, 2.0, "General Kenobi.", (), seek=100, tokens=(6996,), avg_logprob=-0.4),
)  # fmt: skip


class RecordingASR(ASRDouble):
    """Double of `ASRClient`: records its options, answers a fixed two-segment transcript."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def transcribe(
        self,
        *,
        audio: Audio,
        language: str | None = None,
        word_timestamps: bool = False,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: str = "transcribe",
    ) -> Transcript:
        self.calls.append({"language": language, "temperature": temperature, "prompt": prompt, "task": task})
        return Transcript("en", 1.0, 2.0, SEGMENTS)

    async def transcribe_stream(
        self,
        *,
        audio: Audio,
        language: str | None = None,
        word_timestamps: bool = False,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: str = "transcribe",
    ) -> AsyncGenerator[Transcript, None]:
        self.calls.append({"language": language, "temperature": temperature, "prompt": prompt, "task": task})
        yield Transcript("en", 1.0, 2.0, ())
        for segment in SEGMENTS:
            yield Transcript("en", 1.0, 2.0, (segment,))


class GatedASR(RecordingASR):
    """Double of `ASRClient` whose stream decodes (yields) segment i only once the test has read delta
    i - 1, and logs each decode. Its unary `transcribe` is its own stream, collected. A route that sent
    nothing before the whole decode would never open the gate: the wait gives up (a hang guard, not a
    timing check) and the request fails."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.read = [threading.Event() for _ in SEGMENTS]

    async def transcribe_stream(self, **options: Any) -> AsyncGenerator[Transcript, None]:
        yield Transcript("en", 1.0, 2.0, ())
        for i, segment in enumerate(SEGMENTS):
            if i and not await asyncio.to_thread(self.read[i - 1].wait, 30):
                raise RuntimeError(f"delta {i - 1} was never read: the route waits for the whole decode")
            self.log.append(f"decoded {i}")
            yield Transcript("en", 1.0, 2.0, (segment,))

    async def transcribe(self, **options: Any) -> Transcript:
        pieces = [piece async for piece in self.transcribe_stream(**options)]
        return Transcript("en", 1.0, 2.0, tuple(s for piece in pieces for s in piece.segments))


@pytest.fixture
def tts() -> RecordingTTS:
    return RecordingTTS()


@pytest.fixture
def asr() -> RecordingASR:
    return RecordingASR()


@pytest.fixture
def http(edge: EdgeFactory, tts: RecordingTTS, asr: RecordingASR) -> TestClient:
    return edge(tts=tts, asr=asr)


@pytest.fixture
def client(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)


def speak(client: openai.OpenAI, **kwargs: Any) -> bytes:
    args = {"model": "tts-1", "voice": "alloy", "input": "One sentence. And another one."} | kwargs
    return client.audio.speech.create(**args).read()


# Models ------------------------------------------------------------------------------------------


def test_models_list_in_openai_shape(client: openai.OpenAI, http: TestClient) -> None:
    ids = [m.id for m in client.models.list()]
    assert set(ids) == {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "hibari"} | {
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
    }
    body = http.get("/v1/models").json()
    assert body["object"] == "list"
    assert (
        set(body["data"][0]) == {"id", "object", "created", "owned_by"}
        and body["data"][0]["object"] == "model"
    )
    assert client.models.retrieve("gpt-4o-mini-transcribe").id == "gpt-4o-mini-transcribe"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-5")
    assert missing.value.body == {
        "message": "the model 'gpt-5' does not exist",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe", "whisper-1"])
def test_transcription_model_aliases(client: openai.OpenAI, model: str) -> None:
    result = client.audio.transcriptions.create(model=model, file=("a.wav", tone_wav()))
    assert result.text == "Hello there. General Kenobi."


def test_speech_model_aliases_and_unknown_model(client: openai.OpenAI) -> None:
    assert speak(client, model="gpt-4o-mini-tts")
    with pytest.raises(openai.NotFoundError) as unknown:
        speak(client, model="tts-2")
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"


# Voices ------------------------------------------------------------------------------------------


def test_every_openai_voice_speaks_with_the_stock_voice(client: openai.OpenAI, tts: RecordingTTS) -> None:
    for voice in OPENAI_VOICE_NAMES:
        speak(client, voice=voice, input="Hi.")
    assert {call["voice"] for call in tts.calls} == {"heart"}
    assert len(tts.calls) == len(OPENAI_VOICE_NAMES)


def test_voice_table_is_a_setting(settings: Settings, edge: EdgeFactory, tts: RecordingTTS) -> None:
    class TwoVoices(RecordingTTS):
        async def voices(self) -> list[str]:
            return ["heart", "emma"]

    two = TwoVoices()
    http = edge(settings.model_copy(update={"openai_voices": {"nova": "emma"}}), tts=two)
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http, max_retries=0)
    speak(client, voice="nova")
    speak(client, voice="heart")
    assert [c["voice"] for c in two.calls] == ["emma", "emma", "heart", "heart"]
    with pytest.raises(openai.BadRequestError) as unmapped:
        speak(client, voice="alloy")  # not in this table
    assert unmapped.value.code == "unknown_voice" and unmapped.value.param == "voice"


# Errors ------------------------------------------------------------------------------------------


def test_invalid_parameters_are_400_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as fast:
        speak(client, speed=9.0)
    assert fast.value.status_code == 400 and fast.value.param == "speed"
    assert fast.value.type == "invalid_request_error" and fast.value.code == "invalid_request"
    with pytest.raises(openai.BadRequestError) as fmt:
        speak(client, response_format="ogg")
    assert fmt.value.param == "response_format"
    with pytest.raises(openai.BadRequestError) as hot:
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", tone_wav()), temperature=1.5)
    assert hot.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as nan:
        client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", tone_wav()), extra_body={"temperature": "nan"}
        )
    assert nan.value.param == "temperature"


def test_audio_errors_keep_their_status(client: openai.OpenAI, http: TestClient) -> None:
    with pytest.raises(openai.APIStatusError) as unsupported:
        client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", b"not audio at all, not even close")
        )
    assert unsupported.value.status_code == 415 and unsupported.value.code == "audio_format_unsupported"
    body = http.post("/v1/audio/nope", json={}).json()
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_auth_and_body_size_errors_in_openai_shape(settings: Settings, edge: EdgeFactory) -> None:
    http = edge(keyed(settings.model_copy(update={"max_request_bytes": 2048})))
    anonymous = openai.OpenAI(
        base_url="http://testserver/v1", api_key="wrong", http_client=http, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as denied:
        anonymous.models.list()
    assert denied.value.status_code == 401 and denied.value.type == "invalid_request_error"
    alice = openai.OpenAI(
        base_url="http://testserver/v1", api_key=KEYS["alice"], http_client=http, max_retries=0
    )
    assert alice.models.list().data
    r = http.post(
        "/v1/audio/speech", json={"input": "x" * 4000}, headers={"Authorization": f"Bearer {KEYS['alice']}"}
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


def test_own_routes_keep_the_soundstage_shape(http: TestClient) -> None:
    r = http.post("/v1/jobs/music", json={"prompt": "x", "duration_s": -1})
    assert (
        r.status_code == 422
        and set(r.json()["error"]) >= {"code", "message"}
        and "type" not in r.json()["error"]
    )
    assert "type" not in http.get("/v1/nope").json()["error"]


# Speech parameters --------------------------------------------------------------------------------


def test_speed_reaches_the_stock_voice(client: openai.OpenAI, tts: RecordingTTS) -> None:
    normal, fast = speak(client, response_format="pcm"), speak(client, response_format="pcm", speed=2.0)
    assert [c["speed"] for c in tts.calls] == [1.0, 1.0, 2.0, 2.0]
    assert len(fast) == pytest.approx(len(normal) / 2, rel=0.01)


def test_instructions_are_accepted(client: openai.OpenAI) -> None:
    assert speak(client, instructions="Speak like a pirate.", response_format="wav")[:4] == b"RIFF"


def test_pcm_is_24_khz(client: openai.OpenAI) -> None:
    pcm = np.frombuffer(speak(client, response_format="pcm"), dtype="<i2")
    assert pcm.size == 2 * 2400  # two sentences of 0.1 s at 24 kHz (rendered at 8 kHz)


def test_speech_sse_events(client: openai.OpenAI) -> None:
    whole = speak(client, response_format="pcm")
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input="One sentence. And another one.",
        response_format="pcm", stream_format="sse",
    ) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 2 + ["speech.audio.done"]
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == whole
    assert events[-1]["usage"]["input_tokens"] > 0


# Transcription parameters -------------------------------------------------------------------------


def test_temperature_and_prompt_reach_the_asr(client: openai.OpenAI, asr: RecordingASR) -> None:
    client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", tone_wav()), temperature=0.4, prompt="Kenobi, Obi-Wan."
    )
    assert asr.calls[-1] == {
        "language": None,
        "temperature": 0.4,
        "prompt": "Kenobi, Obi-Wan.",
        "task": "transcribe",
    }


def test_verbose_json_segments_carry_the_decoder_facts(client: openai.OpenAI) -> None:
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", tone_wav()), response_format="verbose_json",
        timestamp_granularities=["segment", "word"],
    )  # fmt: skip
    assert verbose.segments is not None and verbose.words is not None
    first, second = verbose.segments
    assert (first.seek, first.tokens, first.avg_logprob, first.compression_ratio) == (
        0,
        [50364, 2425, 456],
        -0.2,
        0.9,
    )
    assert (first.no_speech_prob, first.temperature, second.seek, second.id) == (0.01, 0.0, 100, 1)
    assert [w.word for w in verbose.words] == ["Hello", "there."]


def test_transcription_stream_events(client: openai.OpenAI) -> None:
    stream = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", tone_wav()), stream=True)
    events = list(stream)
    assert [e.type for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    deltas = "".join(e.delta for e in events[:-1] if e.type == "transcript.text.delta")
    done = events[-1]
    assert done.type == "transcript.text.done" and done.text == deltas == "Hello there. General Kenobi."


def test_each_delta_is_sent_before_the_next_segment_is_decoded(edge: EdgeFactory) -> None:
    asr = GatedASR()
    http = edge(asr=asr)
    form = {"model": "whisper-1", "stream": "true"}
    with http.stream(
        "POST", "/v1/audio/transcriptions", files={"file": ("a.wav", tone_wav())}, data=form
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                asr.log.append(event["type"])
                if event["type"] == "transcript.text.delta":
                    asr.read[asr.log.count("transcript.text.delta") - 1].set()
    delta, done = "transcript.text.delta", "transcript.text.done"
    assert asr.log == ["decoded 0", delta, "decoded 1", delta, done]


# Containers (PyAV) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "container", "codec"), [("a.m4a", "ipod", "aac"), ("a.webm", "webm", "libopus")]
)
def test_phone_and_browser_uploads_transcribe(
    client: openai.OpenAI, name: str, container: str, codec: str
) -> None:
    from tests.infra.test_av_codec import muxed, sine

    result = client.audio.transcriptions.create(
        model="whisper-1", file=(name, muxed(sine(), container, codec))
    )
    assert result.text == "Hello there. General Kenobi."


@pytest.mark.parametrize(("fmt", "magic"), [("opus", b"OggS"), ("aac", b"\xff\xf1")])
def test_opus_and_aac_speech(client: openai.OpenAI, http: TestClient, fmt: str, magic: bytes) -> None:
    from infra.audio import decode

    audio = speak(client, response_format=fmt)
    # Two sentences of 0.1 s; AAC adds its encoder delay (1024 samples) and pads to whole frames.
    assert audio.startswith(magic) and 0.2 - 0.01 <= decode(audio).duration_s <= 0.2 + 2048 / RATE
    r = http.post(
        "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": fmt}
    )
    assert r.headers["content-type"].startswith({"opus": "audio/ogg", "aac": "audio/aac"}[fmt])


def test_translations_ask_whisper_to_translate(client: openai.OpenAI, asr: RecordingASR) -> None:
    translated = client.audio.translations.create(
        model="whisper-1", file=("a.wav", tone_wav()), prompt="News."
    )
    assert translated.text == "Hello there. General Kenobi."
    assert asr.calls[-1] == {"language": None, "temperature": 0.0, "prompt": "News.", "task": "translate"}
    verbose = client.audio.translations.create(
        model="whisper-1", file=("a.wav", tone_wav()), response_format="verbose_json", temperature=0.3
    )
    assert verbose.segments and verbose.segments[0].tokens == [50364, 2425, 456]
    assert verbose.to_dict()["task"] == "translate" and asr.calls[-1]["temperature"] == 0.3
    with pytest.raises(openai.NotFoundError):
        client.audio.translations.create(model="whisper-9", file=("a.wav", tone_wav()))


def test_include_logprobs_gives_word_log_probabilities(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", tone_wav()), include=["logprobs"], response_format="json"
    )
    assert result.logprobs is not None
    assert [(p.token, round(p.logprob or 0, 4)) for p in result.logprobs] == [
        ("Hello", -0.1054),
        ("there.", -0.2231),
    ]
