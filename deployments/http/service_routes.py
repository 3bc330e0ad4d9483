"""Service routes: liveness (`/healthz`) and the model deployments' status (`/v1/deployments`).

`/v1/models` is OpenAI's model list (`openai_models.py`)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter
from ray import serve

from deployments.http.errors import ApiError
from deployments.http.guards import EdgeRoute
from deployments.http.schemas import ModelsView
from deployments.http.services import Authorized, Svc
from infra.storage import StorageError

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
    """Each model deployment: model id, revision, weights kind, device, replica states."""
    cards = [await client.info() for client in svc.models.all()]
    status = await asyncio.to_thread(serve.status)
    deployments = status.applications[serve.get_replica_context().app_name].deployments
    return ModelsView.build({card.deployment: card.as_dict() for card in cards}, deployments)
