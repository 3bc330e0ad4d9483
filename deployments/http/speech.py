"""OpenAI-compatible `/v1/audio/speech` logic: request schema, sentence streaming, response encodings."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from infra.audio import Audio, encode
from models.tts import split_sentences

SpeechFormat = Literal["mp3", "wav", "flac", "pcm"]
MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}
SPEECH_MODELS = {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "hibari"}
MAX_INPUT_CHARS = 4096


class SpeechRequest(BaseModel):
    """OpenAI's speech request. `voice`: a stock voice name or a registered `voice_id` (GET /v1/voices)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="`tts-1`, `tts-1-hd`, `gpt-4o-mini-tts` or `hibari`: all the stock TTS.")
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    voice: str = Field(min_length=1, max_length=100)
    response_format: SpeechFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)


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


async def sentences_audio(synthesize: Callable[[str], Awaitable[Audio]], text: str) -> AsyncIterator[Audio]:
    """Synthesize sentence by sentence, all sent at once (they may land on different replicas), yielded
    in order as soon as each is ready."""
    calls = [asyncio.ensure_future(synthesize(piece)) for piece in split_sentences(text)]
    try:
        for call in calls:
            yield await call
    finally:
        for call in calls:
            call.cancel()


async def encoded_stream(
    request: SpeechRequest, first: Audio, rest: AsyncIterator[Audio]
) -> AsyncIterator[bytes]:
    """The response body. WAV and PCM stream sentence by sentence; MP3 and FLAC are encoded once at the
    end (their headers describe the whole file: concatenated MP3 files stop most decoders after the
    first one's frame count)."""
    fmt = request.response_format
    if fmt in ("flac", "mp3"):
        chunks = [first] + [audio async for audio in rest]
        joined = Audio(np.concatenate([a.samples for a in chunks], axis=1), first.sample_rate)
        yield await asyncio.to_thread(encode, joined, fmt)
        return
    if fmt == "wav":
        yield streaming_wav_header(first.sample_rate)
    async for audio in _chain(first, rest):
        yield pcm16(audio)


async def _chain(first: Audio, rest: AsyncIterator[Audio]) -> AsyncIterator[Audio]:
    yield first
    async for audio in rest:
        yield audio
