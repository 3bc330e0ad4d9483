"""Service routes: liveness (`/healthz`) and the model deployments' status (`/v1/deployments`).

`/v1/models` is OpenAI's model list (`openai_models.py`)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter
from ray import serve

from deployments.families.client import DeploymentClient, ModelStartingError
from deployments.families.warmth import DeploymentWarmth, Warmth, replica_counts
from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.schemas import ModelsView
from deployments.http.services import Authorized, Svc
from infra.storage import StorageError
from pipelines.engine.clients import ModelCard, ModelClient

router = APIRouter(route_class=EdgeRoute, tags=["service"])
# Liveness pings run on threads of their own: uploads and URL inputs can hold every thread of the
# event loop's default pool for seconds (bench/ingress_memory.py), and /healthz must still answer.
_LIVENESS_POOL = ThreadPoolExecutor(2, thread_name_prefix="healthz")


@router.get("/healthz")
async def healthz(svc: Svc) -> dict[str, str]:
    """Liveness of the ingress and its object store."""
    try:
        await asyncio.get_running_loop().run_in_executor(_LIVENESS_POOL, svc.storage.ping)
    except StorageError as e:
        raise ApiError(503, "storage_unavailable", "the object store is unreachable") from e
    return {"status": "ok"}


@router.get("/v1/deployments", dependencies=[Authorized])
async def list_deployments(svc: Svc) -> ModelsView:
    """Each model deployment: model id, revision, weights kind, device, replica states, and whether it
    is warm, starting or cold (scaled to zero). A cold deployment is not woken: its last card is shown."""
    status = await asyncio.to_thread(serve.status)
    deployments = status.applications[serve.get_replica_context().app_name].deployments
    infos = {}
    for client in svc.models.all():
        card = await _card_if_warm(client, deployments.get(client.deployment))
        if card is not None:
            infos[client.deployment] = card.as_dict()
    return ModelsView.build(infos, deployments)


async def _card_if_warm(client: ModelClient, overview: Any) -> ModelCard | None:
    """The deployment's card when a replica runs; else the last one the edge saw (None if none)."""
    warm = overview is not None and DeploymentWarmth(client.deployment, replica_counts(overview)).warmth
    if not isinstance(client, DeploymentClient):
        return await client.info() if warm is Warmth.WARM else None
    if warm is not Warmth.WARM:
        return client.last_card
    try:
        return await client.recent_info()
    except ModelStartingError:  # the client's own status read (up to 1 s old) still saw it cold
        return client.last_card
