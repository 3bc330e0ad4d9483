"""The shared half of every typed model client: the deployment's handle, its name, its card, and the
deadline and cancellation of every call.

A client either waits for a cold deployment (the runner's: the call is queued until a replica has
started, `deployments/families/warmth.py`) or, as the ingress's (`at_edge()`), refuses to: a call to a
deployment with no running replica starts one in the background and raises `ModelStartingError`, which
the HTTP edge answers with 503 + Retry-After. The edge keeps each deployment's last card, so admission
checks that read a card (Stable Audio's longest clip) still answer while it is cold.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from typing import Any

from deployments.families.warmth import Warmth, warmth_of
from deployments.metrics import timed_model_call
from infra.settings import load_settings
from models.types import GeneratedAudio, ModelFault, Sampling
from pipelines.engine.clients import ModelCard, Models

logger = logging.getLogger(__name__)
COLD_START_RETRY_AFTER_S = 10
CARD_MAX_AGE_S = 60.0


class ModelStartingError(RuntimeError):
    """The deployment has no running replica: one is being started; retry after `retry_after_s`."""

    def __init__(self, deployment: str, retry_after_s: int = COLD_START_RETRY_AFTER_S) -> None:
        super().__init__(f"the {deployment} model is starting (it was scaled to zero); retry shortly")
        self.deployment = deployment
        self.retry_after_s = retry_after_s


class DeploymentClient:
    """Holds one deployment's handle (a bound deployment in `build_app`, which Serve replaces by its
    `DeploymentHandle` when the client reaches a replica) and talks to it with keyword arguments only."""

    def __init__(self, handle: Any, deployment: str) -> None:
        self._handle = handle
        self._deployment = deployment
        self._timeout_s: float | None = None
        self._refuse_cold = False
        self._card: ModelCard | None = None
        self._card_at = 0.0
        self._waking: asyncio.Task[None] | None = None

    @property
    def deployment(self) -> str:
        return self._deployment

    def at_edge(self) -> DeploymentClient:
        """A copy that never waits for a cold start (for the ingress): see the module docstring."""
        edge = copy.copy(self)
        edge._refuse_cold = True
        return edge

    @property
    def last_card(self) -> ModelCard | None:
        """The card this client last read (the status view shows it for a cold deployment)."""
        return self._card

    async def recent_info(self, max_age_s: float = CARD_MAX_AGE_S) -> ModelCard:
        """The last card if it is at most `max_age_s` old, else a fresh one: a status view polled every
        second must not keep an idle deployment busy, or it never scales down to zero."""
        if self._card is not None and time.monotonic() - self._card_at <= max_age_s:
            return self._card
        return await self.info()

    async def info(self) -> ModelCard:
        if (
            self._refuse_cold
            and self._card is not None
            and await warmth_of(self._deployment) is not Warmth.WARM
        ):
            return self._card
        self._card = ModelCard.from_info(self._deployment, await self._call("info"))
        self._card_at = time.monotonic()
        return self._card

    @timed_model_call
    async def _call(self, method: str, **kwargs: Any) -> Any:
        """`handle.method.remote(**kwargs)`, awaited within `model_call_timeout_s`. A call that runs out
        of time, or whose caller is cancelled (a cancelled job), is cancelled on the replica too. A
        `ModelFault` answer is raised as `ModelInputError` (bad input) or `ModelInternalError`. At
        the edge, a cold deployment is woken and `ModelStartingError` raised instead."""
        if self._refuse_cold and await warmth_of(self._deployment) is not Warmth.WARM:
            self._wake()
            raise ModelStartingError(self._deployment)
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

    def _wake(self) -> None:
        """Start the deployment: one queued `info` call makes Serve scale it up from zero (at most one
        such call in flight per client); its answer refreshes the card."""
        if self._waking is not None and not self._waking.done():
            return

        async def wake() -> None:
            try:
                self._card = ModelCard.from_info(self._deployment, await self._handle.info.remote())
                self._card_at = time.monotonic()
            except Exception:
                logger.warning("waking %s failed; the next request tries again", self._deployment)

        self._waking = asyncio.get_running_loop().create_task(wake())


def edge_models(models: Models) -> Models:
    """`models` with every client replaced by its `at_edge()` copy (the ingress's view)."""
    edge: dict[str, Any] = {
        field: client.at_edge() if isinstance(client, DeploymentClient) else client
        for field, client in ((f, getattr(models, f)) for f in Models.__dataclass_fields__)
    }
    return dataclasses.replace(models, **edge)


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
