"""Model errors cross the handle boundary as data, on the real stack: a deployment answers a
`ModelFault` (code, message, field) instead of raising, the typed client raises `ModelInputError` or
`ModelInternalError` in the caller's process, and the edge answers a 4xx with the model's own clean
words (or a generic 500) without a trace of Ray's wrapping (replica names, pids, addresses, tracebacks)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import numpy as np
import pytest

from deployments.families.asr import ASRClient
from deployments.families.tts import TTSClient
from infra.audio import Audio
from models.types import INTERNAL_FAULT_MESSAGE, ModelFault, ModelInputError, ModelInternalError

pytestmark = pytest.mark.ray
MARKERS = re.compile(
    r"ray::|Traceback|pid=|\x1b\[|File \"|/home/|\.py\b|0x[0-9a-f]{6,}|actor_id|ServeReplica"
)


def handle(name: str) -> Any:
    from ray import serve

    return serve.get_deployment_handle(name, app_name="soundstage")


def tone(seconds: float = 1.0, rate: int = 16000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * 220.0 * t))[None].astype(np.float32), rate)


def test_typed_clients_raise_typed_errors(stack: object) -> None:
    asyncio.run(typed_errors())


async def typed_errors() -> None:
    tts = TTSClient(handle("TTS"), "TTS")
    with pytest.raises(ModelInputError) as bad:
        await tts.synthesize(text="!!! ???", voice="heart")
    assert bad.value.code == "invalid_input" and "nothing to pronounce" in bad.value.message
    assert bad.value.deployment == "TTS" and not MARKERS.search(str(bad.value))
    with pytest.raises(ModelInputError) as unknown:
        await tts.synthesize(text="Hello.", voice="no-such-voice")
    assert "no-such-voice" in unknown.value.message and not MARKERS.search(unknown.value.message)
    with pytest.raises(ModelInternalError) as failed:  # a bug's error (not a value of ours): no details
        await tts.synthesize(text=123, voice="heart")  # type: ignore[arg-type]
    assert failed.value.code == "model_error" and str(failed.value) == INTERNAL_FAULT_MESSAGE
    asr = ASRClient(handle("ASR"), "ASR")
    with pytest.raises(ModelInputError) as language:
        await asr.transcribe(audio=tone(), language="xx")
    assert not MARKERS.search(language.value.message)
    assert (await tts.synthesize(text="Hello.", voice="heart")).num_samples > 0  # the replica is fine


def test_a_raw_handle_gets_the_fault_as_a_value(stack: object) -> None:
    fault = handle("TTS").synthesize.remote("...").result()
    assert isinstance(fault, ModelFault) and not fault.internal and fault.code == "invalid_input"


def test_http_answers_the_models_words_without_rays(base_url: str) -> None:
    speech = {"model": "tts-1", "input": "!!! ???", "voice": "alloy"}
    r = httpx.post(f"{base_url}/v1/audio/speech", json=speech, timeout=60)
    assert r.status_code == 400, r.text  # 422 in OpenAI's shape
    error = r.json()["error"]
    assert error["code"] == "invalid_input" and error["param"] == "input"
    assert "nothing to pronounce" in error["message"] and not MARKERS.search(r.text)
