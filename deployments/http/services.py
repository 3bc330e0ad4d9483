"""What every router reaches through FastAPI dependencies: settings, stores, model clients, the runner.

The ingress builds one `Services` per replica and puts it on `app.state`; routes ask for it with
`Depends(services)` instead of being methods of the ingress class.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from deployments.http.errors import ApiError
from infra.jobs import JobStore
from infra.quotas import QuotaStore
from infra.settings import Settings
from infra.storage import Storage
from infra.tenancy import Tenant
from pipelines.engine.clients import Models
from pipelines.engine.kinds import Admission

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """One ingress replica's view of the system. `runner` is the JobRunner's handle (`submit(job_id)`)."""

    settings: Settings
    storage: Storage
    jobs: JobStore
    models: Models
    runner: Any
    _dispatches: set[asyncio.Task[None]] = field(default_factory=set)

    @functools.cached_property
    def quotas(self) -> QuotaStore:
        """The tenants' quota counters, in the object store (shared by every ingress replica)."""
        return QuotaStore(self.storage, self.jobs.clock)

    @property
    def admission(self) -> Admission:
        return Admission(storage=self.storage, jobs=self.jobs, settings=self.settings, models=self.models)

    def admission_for(self, tenant: Tenant) -> Admission:
        """What a job of `tenant`'s is admitted with: it may only name that tenant's voices and uploads."""
        return dataclasses.replace(self.admission, owner=tenant.scope)

    def dispatch(self, job_id: str) -> None:
        """Hand the job to a runner without waiting; runners' sweeps pick it up if this call is lost."""

        async def send() -> None:
            try:
                await self.runner.submit.remote(job_id)
            except Exception:
                logger.warning("dispatch failed; a runner sweep will claim it", extra={"job_id": job_id})

        task = asyncio.get_running_loop().create_task(send())
        self._dispatches.add(task)
        task.add_done_callback(self._dispatches.discard)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


Svc = Annotated[Services, Depends(services)]


def require_api_key(request: Request) -> Tenant:
    """The caller's tenant, resolved from its key by `guards.Authenticate` before the body was read."""
    tenant: Tenant | None = getattr(request.state, "tenant", None)
    if tenant is None:
        raise ApiError(401, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)")
    return tenant


Authorized = Depends(require_api_key)
CurrentTenant = Annotated[Tenant, Depends(require_api_key)]
