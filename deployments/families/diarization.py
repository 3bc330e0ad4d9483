"""The diarization deployment: VAD regions (from the VAD deployment) → windowed resemblyzer embeddings
→ spectral clustering (infra/dsp/diarization.py)."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.families.client import DeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from deployments.families.vad import VADClient
from infra.audio import Audio
from infra.dsp.diarization import diarize
from infra.dsp.regions import Turn


@serve.deployment(
    name="Diarizer",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=4,
    max_queued_requests=64,
    health_check_period_s=10,
)
@answers_faults
class DiarizerDeployment(ModelHost):
    def __init__(self, vad: VADClient, model_uri: str = "pkg://resemblyzer", device: str = "auto") -> None:
        from models.speaker import SpeakerEncoder

        self.vad = vad
        self.model = self.load_model(SpeakerEncoder.from_pretrained, model_uri, device)

    async def diarize(self, audio: Audio, num_speakers: int | None = None) -> list[Turn]:
        """Who speaks when: turns `[start, end, speaker]` (seconds, `SPEAKER_00`… by first appearance)."""
        regions = await self.vad.detect(audio=audio)
        embeddings, windows = await asyncio.to_thread(self.model.embed_windows, audio, regions)
        return await asyncio.to_thread(diarize, regions, embeddings, windows, num_speakers)


class DiarizerClient(DeploymentClient):
    """Typed client of `DiarizerDeployment`."""

    async def diarize(self, *, audio: Audio, num_speakers: int | None = None) -> list[Turn]:
        turns: list[Turn] = await self._call("diarize", audio=audio, num_speakers=num_speakers)
        return turns
