"""The shared half of every typed model client: the deployment's handle, its name and its card."""

from __future__ import annotations

from typing import Any

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
