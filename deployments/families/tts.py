"""The stock-voice TTS deployment (CPU, hibari): one sentence per call, so the ingress can stream."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from deployments.families.client import DeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from infra.audio import Audio


@serve.deployment(
    name="TTS",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=8,
    max_queued_requests=512,
    health_check_period_s=10,
)
@answers_faults
class TTSDeployment(ModelHost):
    def __init__(self, model_uri: str = "pkg://hibari-tts") -> None:
        from models.tts import StockTTS

        self.model = self.load_model(StockTTS.from_pretrained, model_uri, "cpu")

    def info(self) -> dict[str, Any]:
        return {**super().info(), "voices": self.voices(), "default_voice": self.model.default_voice}

    def voices(self) -> list[str]:
        return list(self.model.voices.names())

    async def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Audio:
        """Speech `[1, T]` at 24 kHz; `ValueError` for blank text or speed outside [0.25, 4];
        `UnknownVoiceError` (a `KeyError`) for a voice not in the catalogue."""
        (audio,) = await asyncio.to_thread(self.model.synthesize, [text], voice=voice, speed=speed)
        return audio


class TTSClient(DeploymentClient):
    """Typed client of `TTSDeployment`."""

    async def synthesize(self, *, text: str, voice: str, speed: float = 1.0) -> Audio:
        audio: Audio = await self._call("synthesize", text=text, voice=voice, speed=speed)
        return audio

    async def voices(self) -> list[str]:
        names: list[str] = await self._call("voices")
        return names
