"""The HTTP ingress deployment: builds this replica's `Services` and serves the routers over them.

Every route lives in `deployments/http/` (a FastAPI `APIRouter` per area, reaching the stores and the
typed model clients through `Depends(services)`); nothing here runs a model or a pipeline.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve

from deployments.families.client import edge_models
from deployments.http.api import build_http_app
from deployments.http.services import Services
from deployments.metrics import install_ray_metrics
from infra.jobs import JobStore
from infra.settings import load_settings
from infra.storage import Storage
from infra.store_probe import probe_conditional_writes
from pipelines.engine.clients import Models


@serve.deployment(
    name="Ingress",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=200,
    max_queued_requests=1000,
)
@serve.ingress()
class Ingress:
    def __init__(self, runner: Any, models: Models) -> None:
        install_ray_metrics()
        settings = load_settings()
        # A request waits out only a short store outage, then answers 503 + Retry-After.
        edge = settings.model_copy(update={"s3_outage_tolerance_s": settings.s3_edge_outage_tolerance_s})
        storage = Storage(edge)
        probe_conditional_writes(storage)  # jobs are created create-only: refuse a store that fakes it
        # Requests never wait for a cold start: a scaled-to-zero model answers 503 + Retry-After meanwhile.
        at_edge = edge_models(models)
        self.services = Services(
            settings=settings, storage=storage, jobs=JobStore(storage), models=at_edge, runner=runner
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve asks for the app once the replica is constructed (late-bound ingress)."""
        return build_http_app(self.services)
