"""A transcription stream that fails after its 200 has started ends with an `error` event carrying a
clean message, never a silent cut and never the exception's own text (through Ray it names replicas,
pids and paths). Pure: `text_events` over hand-made pieces."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from deployments.http.transcripts import text_events
from models.types import ModelInputError, ModelInternalError, Segment, Transcript

HEAD = Transcript("en", 0.99, 60.0, ())
FIRST = Transcript("en", 0.99, 60.0, (Segment(0.0, 30.0, "hello there", (), tokens=(1, 2)),))


def events(pieces: AsyncIterator[Transcript]) -> list[dict[str, object]]:
    async def collect() -> list[bytes]:
        return [chunk async for chunk in text_events(pieces)]

    chunks = asyncio.run(collect())
    return [json.loads(chunk.decode().removeprefix("data: ")) for chunk in chunks]


async def failing_after_one(error: Exception) -> AsyncIterator[Transcript]:
    yield HEAD
    yield FIRST
    raise error


def test_an_internal_failure_mid_stream_is_a_generic_error_event() -> None:
    secret = "ray::ServeReplica:soundstage:ASR pid=4242 ip=10.0.0.7 /srv/app/models/whisper.py"
    got = events(failing_after_one(RuntimeError(secret)))
    assert [e["type"] for e in got] == ["transcript.text.delta", "error"]
    assert got[1]["error"] == {
        "code": "stream_failed",
        "message": "transcription failed part-way; retry the request",
    }
    assert "pid" not in json.dumps(got)


def test_a_model_input_fault_mid_stream_keeps_the_models_words() -> None:
    fault = ModelInputError("ASR", "audio_too_long", "this window cannot be decoded", None)
    got = events(failing_after_one(fault))
    assert got[-1] == {
        "type": "error",
        "error": {"code": "audio_too_long", "message": "this window cannot be decoded"},
    }


def test_a_model_internal_fault_mid_stream_is_generic_as_its_500_would_be() -> None:
    fault = ModelInternalError("ASR", "model_failed", "the model failed", None)
    got = events(failing_after_one(fault))
    assert got[-1]["error"] == {
        "code": "stream_failed",
        "message": "transcription failed part-way; retry the request",
    }


def test_a_whole_stream_ends_with_done() -> None:
    async def whole() -> AsyncIterator[Transcript]:
        yield HEAD
        yield FIRST

    got = events(whole())
    assert [e["type"] for e in got] == ["transcript.text.delta", "transcript.text.done"]
    assert got[1]["text"] == "hello there"
