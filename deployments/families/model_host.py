"""What every model deployment does the same way: resolve the URI, pick the device, cap VRAM, load, report,
and fail its health check when its inference is wedged.

Model calls run their blocking work with `asyncio.to_thread`, on the replica's default executor; the host
makes that a `CallWatch`, which knows when each running call started. `check_health` then fails when a
call has run past `model_call_timeout_s + model_health_grace_s` (the caller gave up on it long ago, and a
thread cannot be stopped from outside: the replica is wedged even though its event loop still answers),
or when the device probe (a CUDA sync on GPU) does not answer within `model_health_probe_s` on a thread
of its own. Serve then replaces the replica.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from deployments.families.gpu import assigned_gpu_share, cap_gpu_memory, check_device
from deployments.metrics import install_ray_metrics
from infra.model_store import resolve_model_uri
from infra.settings import load_settings
from models.common import resolve_device

logger = logging.getLogger(__name__)
M = TypeVar("M")
T = TypeVar("T")
CALL_THREADS = 16  # more than any family's max_ongoing_requests: a call never waits for a thread


class ModelReplicaWedgedError(RuntimeError):
    """The replica's health check failed: a model call or the device probe does not finish."""


class CallWatch(ThreadPoolExecutor):
    """The replica's default executor: runs the model calls' threaded work and knows since when each
    piece of it has been running."""

    def __init__(self, max_workers: int = CALL_THREADS) -> None:
        super().__init__(max_workers, thread_name_prefix="model-call")
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()
        self._tokens = itertools.count()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        token = next(self._tokens)

        def timed() -> T:
            with self._lock:
                self._started[token] = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    del self._started[token]

        return super().submit(timed)

    def longest_running_s(self) -> float:
        """How long the oldest piece of work still running has run (0 when none runs)."""
        with self._lock:
            oldest = min(self._started.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest


class ModelHost:
    """Mixin for a Serve deployment class that owns one model wrapper in `self.model`."""

    model: Any
    device: str
    _calls: CallWatch
    _calls_installed: bool
    _call_limit_s: float
    _probe_s: float
    _probe_pool: ThreadPoolExecutor
    _probe: Future[None] | None

    def load_model(self, loader: Callable[..., M], uri: str, device: str = "auto", **options: Any) -> M:
        """Resolve `uri` (infra/model_store.py) and call the wrapper's `from_pretrained` with it."""
        install_ray_metrics()
        settings = load_settings()
        self.watch_model_calls()
        self.device = resolve_device(device)
        cap_gpu_memory(self.device)
        resolved = resolve_model_uri(uri, settings)
        if resolved.revision:
            options["revision"] = resolved.revision
        model = loader(resolved.source, device=self.device, cache_dir=settings.model_cache_dir, **options)
        logger.info("model loaded", extra={"uri": uri, "device": self.device})
        return model

    def info(self) -> dict[str, Any]:
        """Model id, revision, weights kind, sample rate, device and GPU share of this replica."""
        return {
            **self.model.info.as_dict(),
            "sample_rate": self.model.sample_rate,
            "device": self.device,
            "gpu_share": assigned_gpu_share(),
        }

    def watch_model_calls(self) -> None:
        """Run this replica's `asyncio.to_thread` work on a `CallWatch` (called from `__init__`, which
        Serve runs on the replica's event loop; without a running loop the first health check does it)."""
        settings = load_settings()
        self._calls = CallWatch()
        self._call_limit_s = settings.model_call_timeout_s + settings.model_health_grace_s
        self._probe_s = settings.model_health_probe_s
        self._probe_pool = ThreadPoolExecutor(1, thread_name_prefix="model-probe")
        self._probe = None
        try:
            asyncio.get_running_loop().set_default_executor(self._calls)
        except RuntimeError:
            self._calls_installed = False
        else:
            self._calls_installed = True

    def probe_device(self) -> None:
        """A bounded check that the inference device answers (runs on the probe thread)."""
        check_device(self.device)

    async def check_health(self) -> None:
        """Fail (Serve replaces the replica) when a model call has run far past its deadline or the
        device probe does not answer in time; a replica that is merely busy stays healthy."""
        if getattr(self, "_calls", None) is None:
            self.watch_model_calls()
        if not self._calls_installed:
            asyncio.get_running_loop().set_default_executor(self._calls)
            self._calls_installed = True
        running_s = self._calls.longest_running_s()
        if running_s > self._call_limit_s:
            raise ModelReplicaWedgedError(
                f"a model call has run {running_s:.0f} s, past its deadline and grace "
                f"({self._call_limit_s:g} s)"
            )
        await self._probe_once()

    async def _probe_once(self) -> None:
        if self._probe is not None and not self._probe.done():
            raise ModelReplicaWedgedError("the device probe of an earlier health check has not returned")
        self._probe = self._probe_pool.submit(self.probe_device)
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._probe), self._probe_s)
        except TimeoutError:
            raise ModelReplicaWedgedError(
                f"the device probe did not answer within {self._probe_s:g} s"
            ) from None
