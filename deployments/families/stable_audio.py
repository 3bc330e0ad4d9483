"""The Stable Audio Open deployment: the fast non-autoregressive generator (music and sound effects)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from ray import serve

from deployments.families.client import TextToAudioDeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from models.types import GeneratedAudio, Sampling


@serve.deployment(
    name="StableAudio",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=2,
    max_queued_requests=32,
    health_check_period_s=10,
)
@answers_faults
class StableAudioDeployment(ModelHost):
    def __init__(self, model_uri: str, device: str = "auto") -> None:
        from models.stable_audio import StableAudio

        self.model = self.load_model(StableAudio.from_pretrained, model_uri, device)

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "channels": self.model.channels,
            "max_duration_s": self.model.max_duration_s,
        }

    async def generate(
        self,
        prompt: str,
        duration_s: float,
        seed: int | None = None,
        sampling: Sampling | None = None,
    ) -> GeneratedAudio:
        """One stereo clip `[2, T]` of `duration_s` seconds (at most `max_duration_s`)."""
        seed = secrets.randbelow(2**31) if seed is None else seed
        (audio,) = await asyncio.to_thread(
            self.model.generate,
            [prompt],
            duration_s=duration_s,
            seed=seed,
            **(sampling or Sampling()).stable_audio_kwargs(),
        )
        return GeneratedAudio(audio=audio, seed=seed, model=self.model.info)


class StableAudioClient(TextToAudioDeploymentClient):
    """Typed client of `StableAudioDeployment` (a `TextToAudioClient`)."""
