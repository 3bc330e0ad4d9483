"""The shared half of every typed model client: the deployment's handle, its name and its card."""

from __future__ import annotations

from typing import Any

from models.types import GeneratedAudio, Sampling
from pipelines.engine.clients import ModelCard


class DeploymentClient:
    """Holds one deployment's handle (a bound deployment in `build_app`, which Serve replaces by its
    `DeploymentHandle` when the client reaches a replica) and talks to it with keyword arguments only."""

    def __init__(self, handle: Any, deployment: str) -> None:
        self._handle = handle
        self._deployment = deployment

    @property
    def deployment(self) -> str:
        return self._deployment

    async def info(self) -> ModelCard:
        return ModelCard.from_info(self._deployment, await self._handle.info.remote())


class TextToAudioDeploymentClient(DeploymentClient):
    """Client of a deployment whose `generate(prompt, duration_s, seed, sampling)` makes one clip
    (MusicGen, AudioGen, Stable Audio): a `TextToAudioClient`."""

    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio:
        result: GeneratedAudio = await self._handle.generate.remote(
            prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling
        )
        return result
