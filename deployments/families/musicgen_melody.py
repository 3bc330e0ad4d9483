"""The MusicGen-Melody deployment: text + a reference melody (its chroma) to music, one request per call.

Not batched: the wrapper conditions a whole batch on one melody, and transformers lets MusicGen-Melody
attend to the padding of shorter prompts, so batching requests would change their audio. Calls run one
at a time per replica (`max_ongoing_requests` small), in a worker thread, off the replica's event loop.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from typing import Any

from ray import serve

from deployments.families.client import DeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from infra.audio import Audio
from models.types import GeneratedAudio, Sampling


@serve.deployment(
    name="MusicGenMelody",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=4,
    max_queued_requests=32,
    health_check_period_s=10,
)
@answers_faults
class MusicGenMelodyDeployment(ModelHost):
    def __init__(self, model_uri: str, device: str = "auto") -> None:
        from models.musicgen_melody import MusicGenMelody

        self.model = self.load_model(MusicGenMelody.from_pretrained, model_uri, device)
        # One generation at a time: concurrent ones would split the replica's (capped) GPU memory.
        self._model_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "channels": self.model.channels}

    async def generate(
        self,
        prompt: str,
        duration_s: float,
        seed: int | None = None,
        sampling: Sampling | None = None,
        melody: Audio | None = None,
    ) -> GeneratedAudio:
        """One clip `[C, T]` of `duration_s` seconds following `melody` `[C', T']` (any rate; its first
        30 s are used); without a melody, text-only. Bad settings or audio raise ValueError."""
        seed = secrets.randbelow(2**31) if seed is None else seed
        settings = (sampling or Sampling()).delayed_codebook_kwargs()
        audio = await asyncio.to_thread(self._generate_one, prompt, melody, duration_s, seed, settings)
        return GeneratedAudio(audio=audio, seed=seed, model=self.model.info)

    def _generate_one(
        self, prompt: str, melody: Audio | None, duration_s: float, seed: int, settings: dict[str, Any]
    ) -> Audio:
        with self._model_lock:
            (audio,) = self.model.generate(
                [prompt], melody=melody, duration_s=duration_s, seed=seed, **settings
            )
        result: Audio = audio
        return result


class MusicGenMelodyClient(DeploymentClient):
    """Typed client of `MusicGenMelodyDeployment` (a `MelodyClient`)."""

    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling, melody: Audio
    ) -> GeneratedAudio:
        result: GeneratedAudio = await self._call(
            "generate", prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling, melody=melody
        )
        return result
