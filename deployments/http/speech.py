"""OpenAI-compatible `/v1/audio/speech` logic: request schema, sentence streaming, response encodings."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployments.http.errors import overload_error
from infra import av_codec
from infra.audio import Audio, encode, resample
from models.tts import split_sentences

SpeechFormat = Literal["mp3", "opus", "aac", "wav", "flac", "pcm"]
PCM_RATE = 24000  # OpenAI's `pcm`: 24 kHz mono s16le, whatever rate the voice renders at
MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
    "opus": av_codec.MEDIA_TYPES["opus"],
    "aac": av_codec.MEDIA_TYPES["aac"],
}
MAX_INPUT_CHARS = 4096


class SpeechRequest(BaseModel):
    """OpenAI's speech request. `voice`: a stock voice name or a registered `voice_id` (GET /v1/voices)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="`tts-1`, `tts-1-hd`, `gpt-4o-mini-tts` or `hibari`: all the stock TTS.")
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    voice: str = Field(
        min_length=1,
        max_length=100,
        description="A stock voice, an OpenAI voice name (mapped by SOUNDSTAGE_OPENAI_VOICES) or a voice_id.",
    )
    instructions: str | None = Field(
        default=None,
        max_length=MAX_INPUT_CHARS,
        description="Accepted and not used: the stock TTS and the cloned voices have no style prompt.",
    )
    response_format: SpeechFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0, description="Stock voices only (a voice_id: 1.0).")
    stream_format: Literal["audio", "sse"] = Field(
        default="audio",
        description="`audio`: the bytes; `sse`: `speech.audio.delta` events (base64), `speech.audio.done`.",
    )


def pcm16(audio: Audio) -> bytes:
    """Little-endian signed 16-bit mono samples (OpenAI's `pcm`: 24 kHz, no header)."""
    clipped = np.clip(audio.samples[0], -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def streaming_wav_header(sample_rate: int) -> bytes:
    """A PCM16 mono WAV header with unknown (maximal) sizes, as streamed WAVs use."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", unknown))
    )


SENTENCES_IN_FLIGHT = 4  # sentences of one request at the TTS at once (they may land on different replicas)
OVERLOAD_RETRIES = 3


async def sentences_audio(
    synthesize: Callable[[str], Awaitable[Audio]], text: str, in_flight: int = SENTENCES_IN_FLIGHT
) -> AsyncIterator[Audio]:
    """Synthesize sentence by sentence, at most `in_flight` ahead of the one being sent, yielded in
    order as soon as each is ready. A long input never floods the TTS queues, and a sentence the TTS
    refused for being full is retried (with a short backoff) instead of cutting the stream."""
    pieces = iter(split_sentences(text))
    window: deque[asyncio.Task[Audio]] = deque()

    def top_up() -> None:
        while len(window) < in_flight and (piece := next(pieces, None)) is not None:
            window.append(asyncio.ensure_future(_patient(synthesize, piece)))

    try:
        top_up()
        while window:
            audio = await window.popleft()
            top_up()
            yield audio
    finally:
        for call in window:
            call.cancel()


async def _patient(synthesize: Callable[[str], Awaitable[Audio]], piece: str) -> Audio:
    for attempt in range(OVERLOAD_RETRIES):
        try:
            return await synthesize(piece)
        except Exception as e:
            if overload_error(e) is None or attempt == OVERLOAD_RETRIES - 1:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


async def encoded_stream(
    request: SpeechRequest, first: Audio, rest: AsyncIterator[Audio]
) -> AsyncIterator[bytes]:
    """The response body. WAV and PCM stream sentence by sentence; MP3, FLAC, Opus (Ogg) and AAC (ADTS)
    are encoded once at the end (their headers describe the whole file: concatenated MP3 files stop most
    decoders after the first one's frame count)."""
    fmt = request.response_format
    if fmt in ("flac", "mp3", "opus", "aac"):
        chunks = [first] + [audio async for audio in rest]
        joined = Audio(np.concatenate([a.samples for a in chunks], axis=1), first.sample_rate)
        if fmt == "opus" or fmt == "aac":
            yield await asyncio.to_thread(av_codec.encode, joined, fmt)
        elif fmt == "flac" or fmt == "mp3":
            yield await asyncio.to_thread(encode, joined, fmt)
        return
    if fmt == "wav":
        yield streaming_wav_header(first.sample_rate)
    async for audio in _chain(first, rest):
        yield pcm16(resample(audio, PCM_RATE) if fmt == "pcm" else audio)


async def sse_events(audio: AsyncIterator[bytes], characters: int) -> AsyncIterator[bytes]:
    """OpenAI's speech SSE: one `speech.audio.delta` per encoded chunk (base64), then `speech.audio.done`
    with usage (input characters, no tokens: this TTS has none)."""
    async for chunk in audio:
        yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode("ascii")})
    usage = {"input_tokens": characters, "output_tokens": 0, "total_tokens": characters}
    yield _event({"type": "speech.audio.done", "usage": usage})


def _event(body: dict[str, object]) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


async def _chain(first: Audio, rest: AsyncIterator[Audio]) -> AsyncIterator[Audio]:
    yield first
    async for audio in rest:
        yield audio
