"""The singing-voice-conversion deployment: one content encoder per replica, voice models loaded on first
use by URI and kept (least recently used dropped past `MAX_VOICES`), one segment per call (the
voice-convert job fans long songs out over replicas)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from ray import serve

from deployments.families.client import DeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from infra.audio import Audio
from infra.model_store import resolve_model_uri
from infra.settings import load_settings
from models.types import ConvertedVoice, PitchContour

MAX_VOICES = 8  # voice models kept per replica (a v2 40 kHz voice is ~55 MB of float32)


@serve.deployment(
    name="SVC",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=2,
    max_queued_requests=256,
    health_check_period_s=10,
)
@answers_faults
class SVCDeployment(ModelHost):
    def __init__(self, model_uri: str, device: str = "auto") -> None:
        from models.svc import SingingVoiceConverter

        self.model = self.load_model(SingingVoiceConverter.from_pretrained, model_uri, device)
        self._voices: OrderedDict[str, Any] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}

    def info(self) -> dict[str, Any]:
        return {**super().info(), "voices_loaded": list(self._voices)}

    async def _voice(self, uri: str) -> Any:
        """The `VoiceModel` for `uri` (debug, s3://, hf://, a folder), loaded once per replica."""
        async with self._loading.setdefault(uri, asyncio.Lock()):
            if uri not in self._voices:
                settings = load_settings()
                resolved = await asyncio.to_thread(resolve_model_uri, uri, settings)
                self._voices[uri] = await asyncio.to_thread(
                    self.model.load_voice,
                    resolved.source,
                    revision=resolved.revision,
                    cache_dir=settings.model_cache_dir,
                )
                while len(self._voices) > MAX_VOICES:
                    self._voices.popitem(last=False)
            self._voices.move_to_end(uri)
            return self._voices[uri]

    async def convert(
        self, audio: Audio, pitch: PitchContour, voice_uri: str, speaker: int = 0, seed: int = 0
    ) -> ConvertedVoice:
        """`audio` `[C, T]` sung by the voice model at `voice_uri` along `pitch` (Hz, already transposed):
        `[1, T']` at the voice model's rate, the input's duration."""
        voice = await self._voice(voice_uri)
        converted: ConvertedVoice = await asyncio.to_thread(
            self.model.convert, audio, voice=voice, pitch=pitch, speaker=speaker, seed=seed
        )
        return converted


class SVCClient(DeploymentClient):
    """Typed client of `SVCDeployment`."""

    async def convert(
        self, *, audio: Audio, pitch: PitchContour, voice_uri: str, speaker: int, seed: int
    ) -> ConvertedVoice:
        converted: ConvertedVoice = await self._call(
            "convert", audio=audio, pitch=pitch, voice_uri=voice_uri, speaker=speaker, seed=seed
        )
        return converted
