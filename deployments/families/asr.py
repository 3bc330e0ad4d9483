"""The Whisper ASR deployment: concurrent transcriptions of one language batched into one model call, and
streamed transcriptions whose segments go out as their windows are decoded."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, Field
from ray import serve

from deployments.families.client import DeploymentClient, ModelCallTimeoutError
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from deployments.metrics import record_batch
from infra.audio import Audio
from infra.settings import load_settings
from models.types import ModelFault, TranscribeOptions, TranscribeTask, Transcript

WORDS = TranscribeOptions(word_timestamps=True)  # a handle call's default: Whisper's own


class ASRUserConfig(BaseModel):
    max_batch_size: int = Field(default=8, ge=1, le=64)
    batch_wait_timeout_s: float = Field(default=0.05, ge=0.0, le=5.0)
    beam_size: int = Field(default=5, ge=1, le=10)


@dataclass(frozen=True)
class TranscriptionCall:
    """One queued `transcribe`: calls with equal `options` share a model call."""

    audio: Audio
    options: TranscribeOptions


@serve.deployment(
    name="ASR",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=16,
    max_queued_requests=128,
    health_check_period_s=10,
)
@answers_faults
class ASRDeployment(ModelHost):
    def __init__(self, model_uri: str, device: str = "auto") -> None:
        from models.whisper import Whisper

        self.model = self.load_model(Whisper.from_pretrained, model_uri, device)
        self.beam_size = 5

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ASRUserConfig.model_validate(user_config)
        self.beam_size = config.beam_size
        self._batch.set_max_batch_size(config.max_batch_size)  # type: ignore[attr-defined]
        self._batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[attr-defined]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "english_only": self.model.english_only}

    def supported_languages(self) -> list[str]:
        return list(self.model.supported_languages)

    async def transcribe(self, audio: Audio, options: TranscribeOptions = WORDS) -> Transcript:
        """Transcript with segments (and word timestamps, seconds, unless `options` turn them off);
        `ValueError` for an unknown language."""
        result: Transcript | Exception = await self._batch(TranscriptionCall(audio, options))
        if isinstance(result, Exception):
            raise result
        return result

    async def transcribe_stream(
        self, audio: Audio, options: TranscribeOptions = WORDS
    ) -> AsyncGenerator[Transcript, None]:
        """`transcribe`, streamed (call it through `handle.options(stream=True)`): first a transcript with no
        segments (the detected language and the duration; a `ValueError` for an unknown language comes
        instead), then one transcript per segment, each holding that segment alone, as soon as Whisper
        has decoded its window. Not batched with other calls: windows are decoded one after another."""
        stream = await asyncio.to_thread(
            self.model.stream, audio, beam_size=self.beam_size, **options.whisper_kwargs()
        )
        head = Transcript(
            stream.language, stream.language_probability, stream.duration_s, (), stream.language_name
        )
        yield head
        while (segment := await asyncio.to_thread(next, stream.segments, None)) is not None:
            yield replace(head, segments=(segment,))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _batch(self, calls: list[TranscriptionCall]) -> list[Transcript | Exception]:
        record_batch(len(calls))
        groups: dict[TranscribeOptions, list[int]] = defaultdict(list)
        for i, call in enumerate(calls):
            groups[call.options].append(i)
        results: list[Transcript | Exception] = [ValueError("not transcribed")] * len(calls)
        for options, indices in groups.items():
            audios = [calls[i].audio for i in indices]
            try:
                transcripts = await asyncio.to_thread(
                    self.model.transcribe_batch, audios, beam_size=self.beam_size, **options.whisper_kwargs()
                )
            except ValueError as e:  # bad language: that group's callers get the error, not the others
                transcripts = [e] * len(indices)
            for i, transcript in zip(indices, transcripts, strict=True):
                results[i] = transcript
        return results


class ASRClient(DeploymentClient):
    """Typed client of `ASRDeployment`."""

    async def transcribe(
        self,
        *,
        audio: Audio,
        language: str | None = None,
        word_timestamps: bool = False,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: TranscribeTask = "transcribe",
    ) -> Transcript:
        options = TranscribeOptions(language, word_timestamps, temperature, prompt, task)
        transcript: Transcript = await self._call("transcribe", audio=audio, options=options)
        return transcript

    async def transcribe_stream(
        self,
        *,
        audio: Audio,
        language: str | None = None,
        word_timestamps: bool = False,
        temperature: float = 0.0,
        prompt: str | None = None,
        task: TranscribeTask = "transcribe",
    ) -> AsyncGenerator[Transcript, None]:
        """`ASRDeployment.transcribe_stream` over a streaming handle: the head (no segments), then one
        transcript per decoded segment. Each piece must come within `model_call_timeout_s`; a piece that
        does not, or a caller that stops early or is cancelled, cancels the stream on the replica."""
        options = TranscribeOptions(language, word_timestamps, temperature, prompt, task)
        pieces = self._handle.options(stream=True).transcribe_stream.remote(audio=audio, options=options)
        timeout_s = load_settings().model_call_timeout_s
        ended = False
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout_s):
                        piece: Transcript = await anext(pieces)
                except StopAsyncIteration:
                    ended = True
                    return
                except TimeoutError:
                    raise ModelCallTimeoutError(self.deployment, "transcribe_stream", timeout_s) from None
                if isinstance(piece, ModelFault):  # the replica's error, as data (faults.py)
                    ended = True  # the stream has ended on the replica
                    raise piece.error(self.deployment)
                yield piece
        finally:
            if not ended:  # timed out, failed, cancelled, or the caller stopped reading
                pieces.cancel()
