"""The voice-cloning deployment (CSM): speak text in a registered voice (reference clip + transcript)."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.families.client import DeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from infra.audio import Audio
from models.types import VoiceReference


@serve.deployment(
    name="VoiceClone",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=4,
    max_queued_requests=128,
    health_check_period_s=10,
)
@answers_faults
class VoiceCloneDeployment(ModelHost):
    def __init__(self, model_uri: str, device: str = "auto") -> None:
        from models.voice_clone import VoiceCloner

        self.model = self.load_model(VoiceCloner.from_pretrained, model_uri, device)

    async def synthesize(self, text: str, reference: VoiceReference, seed: int = 0) -> Audio:
        """`text` spoken in the reference's voice, `[1, T]` at 24 kHz (at most 20 s per sentence)."""
        (audio,) = await asyncio.to_thread(self.model.synthesize, [text], reference, seed=seed)
        return audio


class VoiceCloneClient(DeploymentClient):
    """Typed client of `VoiceCloneDeployment`."""

    async def synthesize(self, *, text: str, reference: VoiceReference) -> Audio:
        audio: Audio = await self._call("synthesize", text=text, reference=reference)
        return audio
