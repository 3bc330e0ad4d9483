"""The MusicGen deployment: one model per replica, prompts of one duration batched into one `generate`.

`DelayedCodebookGenerator` is the shared body of every deployment whose model has MusicGen's
`generate` (MusicGen here, AudioGen in deployments/families/audiogen.py)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from ray import serve

from deployments.families.client import TextToAudioDeploymentClient
from deployments.families.faults import answers_faults
from deployments.families.model_host import ModelHost
from deployments.metrics import record_batch
from infra.audio import Audio
from models.types import GeneratedAudio, Sampling

logger = logging.getLogger(__name__)


class MusicUserConfig(BaseModel):
    """Live knobs (`user_config` in serve_config.yaml), applied without restarting replicas."""

    max_batch_size: int = Field(default=4, ge=1, le=64)
    batch_wait_timeout_s: float = Field(default=0.05, ge=0.0, le=5.0)


@dataclass(frozen=True)
class GenerationCall:
    prompt: str
    duration_s: float
    seed: int
    sampling: Sampling

    @property
    def batch_key(self) -> tuple[float, Sampling]:
        """Calls that can share one `generate`: same length and sampling settings."""
        return (self.duration_s, self.sampling)


class DelayedCodebookGenerator(ModelHost):
    """A replica holding a MusicGen-architecture model (`self.model`), batching calls of one length."""

    def __init__(self) -> None:
        # One model call at a time: concurrent ones would split the replica's (capped) GPU memory.
        self._model_lock = threading.Lock()
        self._batch_wait_s = MusicUserConfig().batch_wait_timeout_s
        self._generating = 0  # batches running on the model right now

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = MusicUserConfig.model_validate(user_config)
        self._batch_wait_s = config.batch_wait_timeout_s
        self._generate_batch.set_max_batch_size(config.max_batch_size)  # type: ignore[attr-defined]
        self._generate_batch.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[attr-defined]

    def _set_batch_window(self) -> None:
        """An adaptive batch window: a request reaching an idle model goes at once (a lone request must
        not wait out `batch_wait_timeout_s`); while a batch runs, arrivals queue and the next batch takes
        them together, waiting up to the window for more."""
        window = self._batch_wait_s if self._generating else 0.0
        self._generate_batch.set_batch_wait_timeout_s(window)  # type: ignore[attr-defined]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "channels": self.model.channels}

    async def generate(
        self, prompt: str, duration_s: float, seed: int | None = None, sampling: Sampling | None = None
    ) -> GeneratedAudio:
        """One clip `[C, T]` of `duration_s` seconds; batched with concurrent calls of the same length."""
        call = GenerationCall(
            prompt=prompt,
            duration_s=duration_s,
            seed=secrets.randbelow(2**31) if seed is None else seed,
            sampling=sampling or Sampling(),
        )
        self._set_batch_window()
        result: GeneratedAudio = await self._generate_batch(call)
        return result

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def _generate_batch(self, calls: list[GenerationCall]) -> list[GeneratedAudio]:
        record_batch(len(calls))
        self._generating += 1
        try:
            return await self._generate_groups(calls)
        finally:
            self._generating -= 1

    async def _generate_groups(self, calls: list[GenerationCall]) -> list[GeneratedAudio]:
        groups: dict[tuple[float, Sampling], list[int]] = defaultdict(list)
        for i, call in enumerate(calls):
            groups[call.batch_key].append(i)
        results: list[GeneratedAudio | None] = [None] * len(calls)
        for indices in groups.values():
            group = [calls[i] for i in indices]
            audios = await asyncio.to_thread(self._run_group, group)
            for i, call, audio in zip(indices, group, audios, strict=True):
                results[i] = GeneratedAudio(audio=audio, seed=call.seed, model=self.model.info)
        return [r for r in results if r is not None]

    def _run_group(self, group: list[GenerationCall]) -> list[Any]:
        first = group[0]
        with self._model_lock:
            return self.model.generate(
                [c.prompt for c in group],
                duration_s=first.duration_s,
                seeds=[c.seed for c in group],
                **first.sampling.delayed_codebook_kwargs(),
            )


@serve.deployment(
    name="MusicGen",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=8,
    max_queued_requests=64,
    health_check_period_s=10,
)
@answers_faults
class MusicGenDeployment(DelayedCodebookGenerator):
    def __init__(self, model_uri: str, device: str = "auto") -> None:
        from models.musicgen import MusicGen

        super().__init__()
        self.model = self.load_model(MusicGen.from_pretrained, model_uri, device)

    async def continue_audio(
        self,
        prompt_audio: Audio,
        prompt: str,
        duration_s: float,
        seed: int | None = None,
        sampling: Sampling | None = None,
    ) -> GeneratedAudio:
        """Extend `prompt_audio` `[C', T']` (any rate) to `duration_s` seconds in total, steered by `prompt`.

        The result `[C, T]` starts with the codec's reconstruction of the clip (see
        `MusicGen.continue_audio`); a `duration_s` not longer than the clip raises ValueError. Not batched:
        continuations are rare next to text prompts, and each carries its own clip.
        """
        seed = secrets.randbelow(2**31) if seed is None else seed
        settings = (sampling or Sampling()).delayed_codebook_kwargs()
        audio = await asyncio.to_thread(self._continue_one, prompt_audio, prompt, duration_s, seed, settings)
        return GeneratedAudio(audio=audio, seed=seed, model=self.model.info)

    def _continue_one(
        self, prompt_audio: Audio, prompt: str, duration_s: float, seed: int, settings: dict[str, Any]
    ) -> Audio:
        with self._model_lock:
            (audio,) = self.model.continue_audio(
                prompt_audio, [prompt], duration_s=duration_s, seed=seed, **settings
            )
        result: Audio = audio
        return result


class MusicGenClient(TextToAudioDeploymentClient):
    """Typed client of `MusicGenDeployment` (satisfies `pipelines.engine.clients.MusicClient`)."""

    async def continue_audio(
        self, *, clip: Audio, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio:
        result: GeneratedAudio = await self._call(
            "continue_audio",
            prompt_audio=clip,
            prompt=prompt,
            duration_s=duration_s,
            seed=seed,
            sampling=sampling,
        )
        return result
