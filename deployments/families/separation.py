"""The Demucs separation deployment: one HTDemucs per replica, one segment per call (the pipeline fans
long inputs out over replicas and joins the stems)."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from deployments.families.client import DeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from infra.audio import Audio


@serve.deployment(
    name="Separation",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=2,
    max_queued_requests=256,
    health_check_period_s=10,
)
@answers_faults
class SeparationDeployment(ModelHost):
    def __init__(self, model_uri: str, device: str = "auto") -> None:
        from models.demucs import Demucs

        self.model = self.load_model(Demucs.from_pretrained, model_uri, device)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "sources": list(self.model.sources), "segment_s": self.model.segment_s}

    async def separate(self, audio: Audio) -> dict[str, Audio]:
        """Stems keyed by name, each `[C, T]` at the model's sample rate (input resampled to it)."""
        stems: dict[str, Audio] = await asyncio.to_thread(self.model.separate, audio)
        return stems


class SeparationClient(DeploymentClient):
    """Typed client of `SeparationDeployment`."""

    async def separate(self, *, audio: Audio) -> dict[str, Audio]:
        stems: dict[str, Audio] = await self._call("separate", audio=audio)
        return stems
