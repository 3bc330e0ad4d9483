"""The voice-activity deployment (CPU): silero-vad speech regions."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.families.client import DeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from infra.audio import Audio
from infra.dsp.regions import SpeechRegion


@serve.deployment(
    name="VAD",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=8,
    max_queued_requests=128,
    health_check_period_s=10,
)
@answers_faults
class VADDeployment(ModelHost):
    def __init__(self, model_uri: str = "pkg://silero-vad") -> None:
        from models.vad import VoiceActivityDetector

        self.model = self.load_model(VoiceActivityDetector.from_pretrained, model_uri, "cpu")

    async def detect(
        self,
        audio: Audio,
        threshold: float = 0.5,
        min_speech_s: float = 0.25,
        min_silence_s: float = 0.3,
        pad_s: float = 0.05,
    ) -> list[SpeechRegion]:
        """Speech regions (seconds), in order; `ValueError` for thresholds out of range."""
        return await asyncio.to_thread(
            self.model.detect,
            audio,
            threshold=threshold,
            min_speech_s=min_speech_s,
            min_silence_s=min_silence_s,
            pad_s=pad_s,
        )


class VADClient(DeploymentClient):
    """Typed client of `VADDeployment` (defaults: silero-vad's)."""

    async def detect(
        self,
        *,
        audio: Audio,
        threshold: float = 0.5,
        min_speech_s: float = 0.25,
        min_silence_s: float = 0.3,
        pad_s: float = 0.05,
    ) -> list[SpeechRegion]:
        regions: list[SpeechRegion] = await self._call(
            "detect",
            audio=audio,
            threshold=threshold,
            min_speech_s=min_speech_s,
            min_silence_s=min_silence_s,
            pad_s=pad_s,
        )
        return regions
