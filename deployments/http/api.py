"""The HTTP app: limits, error handlers and every router, built for one ingress replica's `Services`."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from deployments.http import analysis_routes, audio_routes, inputs, jobs, service_routes, svc_voices, voices
from deployments.http.errors import BodySizeLimit, Scope, install_error_handlers
from deployments.http.guards import Authenticate
from deployments.http.quotas import RequestRate
from deployments.http.services import Services
from deployments.http.studio import routes as studio
from infra.tenancy import KeyRing

# Multipart bodies carry audio files; the form fields around a file need a little room of their own.
_MULTIPART_OVERHEAD = 1024 * 1024
ROUTERS = (
    service_routes.router,
    jobs.router,
    inputs.router,
    audio_routes.router,
    analysis_routes.router,
    voices.router,
    studio.router,
    svc_voices.router,
)


def thread_pools(threads: int) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """The app's lifespan: `threads` worker threads for the event loop it runs on (`asyncio.to_thread`:
    S3 calls, decodes, uploads) and as anyio's limit (the web framework's own sync work: form parsing,
    spooled files). A Ray replica's loop would otherwise have `ceil(num_cpus) + 4` (5 for the ingress at
    0.5 CPU), and six slow uploads would queue every other request behind them."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        pool = ThreadPoolExecutor(threads, thread_name_prefix="ingress")
        asyncio.get_running_loop().set_default_executor(pool)
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        try:
            yield
        finally:
            pool.shutdown(wait=False)

    return lifespan


def build_http_app(services: Services) -> FastAPI:
    """The FastAPI app over `services` (reached by routes through `Depends(services)`)."""
    app = FastAPI(
        lifespan=thread_pools(services.settings.ingress_threads),
        # No redirects on the API: `/v1/jobs/%2F` is a 404 like any other bad id, not a 307 to `/v1/jobs`.
        redirect_slashes=False,
        title="soundstage",
        version="0.1.0",
        description="AI audio models on Ray Serve: durable jobs, results in S3 via presigned URLs.",
    )
    app.state.services = services
    settings = services.settings

    def body_limit(scope: Scope) -> int:
        """Multipart requests (audio uploads) may be as large as an upload; JSON bodies stay small."""
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        if content_type.startswith(b"multipart/form-data"):
            return settings.max_upload_bytes + _MULTIPART_OVERHEAD
        return settings.max_request_bytes

    app.add_middleware(BodySizeLimit, max_bytes=body_limit)
    # Runs right after the key check: a tenant over its request rate is refused before its body is read.
    app.add_middleware(RequestRate, quotas=services.quotas, settings=settings)
    # Added last, so it runs first: the key is checked before a byte of the body is read.
    app.add_middleware(Authenticate, keys=KeyRing.from_settings(settings))
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
