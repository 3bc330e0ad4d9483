"""The shared half of every typed model client: the deployment's handle, its name, its card, and the
deadline and cancellation of every call."""

from __future__ import annotations

import asyncio
from typing import Any

from infra.settings import load_settings
from models.types import GeneratedAudio, ModelFault, Sampling
from pipelines.engine.clients import ModelCard


class DeploymentClient:
    """Holds one deployment's handle (a bound deployment in `build_app`, which Serve replaces by its
    `DeploymentHandle` when the client reaches a replica) and talks to it with keyword arguments only."""

    def __init__(self, handle: Any, deployment: str) -> None:
        self._handle = handle
        self._deployment = deployment
        self._timeout_s: float | None = None

    @property
    def deployment(self) -> str:
        return self._deployment

    async def info(self) -> ModelCard:
        return ModelCard.from_info(self._deployment, await self._call("info"))

    async def _call(self, method: str, **kwargs: Any) -> Any:
        """`handle.method.remote(**kwargs)`, awaited within `model_call_timeout_s`. A call that runs out
        of time, or whose caller is cancelled (a cancelled job), is cancelled on the replica too. A
        `ModelFault` answer is raised as `ModelInputError` (bad input) or `ModelInternalError`."""
        if self._timeout_s is None:  # read in the process that makes the calls (runner or ingress)
            self._timeout_s = load_settings().model_call_timeout_s
        response = getattr(self._handle, method).remote(**kwargs)
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await response
        except TimeoutError:
            response.cancel()
            raise ModelCallTimeoutError(self._deployment, method, self._timeout_s) from None
        except asyncio.CancelledError:
            response.cancel()
            raise
        if isinstance(result, ModelFault):  # the deployment's error, as data (deployments/families/faults.py)
            raise result.error(self._deployment)
        return result


class ModelCallTimeoutError(TimeoutError):
    """A model call did not answer within its deadline (the replica may be wedged): transient."""

    def __init__(self, deployment: str, method: str, timeout_s: float) -> None:
        super().__init__(f"{deployment}.{method} did not answer within {timeout_s:g} s")


class TextToAudioDeploymentClient(DeploymentClient):
    """Client of a deployment whose `generate(prompt, duration_s, seed, sampling)` makes one clip
    (MusicGen, AudioGen, Stable Audio): a `TextToAudioClient`."""

    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio:
        result: GeneratedAudio = await self._call(
            "generate", prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling
        )
        return result
