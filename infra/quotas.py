"""Per-tenant quotas kept in the object store, so that every ingress replica counts against one total.

Each limit is one small JSON object per tenant, changed by compare-and-swap on its ETag
(`Storage.create` / `Storage.replace`):
- `quotas/{tenant}/rpm/{minute}`: requests in that minute (a fixed window; `Retry-After` is the rest of it);
- `quotas/{tenant}/audio/{day}`: audio-seconds charged that UTC day;
- `quotas/{tenant}/jobs.json`: the jobs holding a concurrency slot, `{job_id: reserved_at}`. A slot is
  held while the job's active marker exists (`index/active/{id}`, gone when the job finishes); a
  reservation younger than `RESERVATION_S` counts even before its job exists.

Cheap by construction: a replica remembers each object's last ETag and value, so in the steady state one
request costs one conditional PUT (a GET only after another replica won the race). Old windows are left to
a lifecycle rule on `quotas/` (README), or removed when the next window opens.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from infra.storage import (
    ObjectNotFoundError,
    PreconditionFailedError,
    Storage,
    TransientStorageError,
    active_job_key,
    check_name,
)

logger = logging.getLogger(__name__)

RESERVATION_S = 60.0  # a slot reserved for a job being created counts this long without its marker
CONCURRENCY_RETRY_S = 10  # when a slot frees up is unknown: the client polls at this pace
_ATTEMPTS = 16


class QuotaExceededError(RuntimeError):
    """A tenant is over one of its limits. `limit`: the setting's name (`requests_per_minute`, …),
    `allowed`: its value, `retry_after_s`: when the request may succeed (whole seconds, ≥ 1)."""

    code = "quota_exceeded"

    def __init__(self, limit: str, allowed: float, retry_after_s: float, detail: str = "") -> None:
        self.limit = limit
        self.allowed = allowed
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"{limit} quota of {allowed:g} reached for this key{suffix}; retry after {self.retry_after_s} s"
        )


class QuotaContentionError(TransientStorageError):
    """Too many replicas changed one quota object at once; the client retries (503)."""


class QuotaStore:
    """The counters of every tenant on one `Storage`. Methods are blocking (boto3): call them off the
    event loop. `clock`: seconds since the epoch (tests move it)."""

    def __init__(self, storage: Storage, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.clock = clock
        self._known: dict[str, tuple[str, Any]] = {}  # the window's key -> (etag, value) last written
        self._lock = threading.Lock()

    def count_request(self, tenant: str, per_minute: int) -> None:
        """Count one request of `tenant` in this minute, or raise `QuotaExceededError` if it is over."""
        now = self.clock()
        minute = int(now // 60)
        retry = 60 - now % 60

        def add(count: int | None) -> int:
            if (count or 0) >= per_minute:
                raise QuotaExceededError("requests_per_minute", per_minute, retry)
            return (count or 0) + 1

        self._change(self._key(tenant, f"rpm/{minute}"), add, stale=self._key(tenant, f"rpm/{minute - 2}"))

    def charge_audio(self, tenant: str, seconds: float, per_day: float | None) -> None:
        """Add `seconds` to today's (UTC) audio-seconds of `tenant`, refused if that would exceed
        `per_day` (None: counted, never refused)."""
        now = self.clock()
        day = int(now // 86400)

        def add(used: float | None) -> float:
            total = (used or 0.0) + seconds
            if per_day is not None and total > per_day:
                left = max(0.0, per_day - (used or 0.0))
                detail = f"this request needs {seconds:g} s, {left:g} s left today"
                raise QuotaExceededError("audio_seconds_per_day", per_day, 86400 - now % 86400, detail)
            return round(total, 6)

        self._change(self._key(tenant, f"audio/{day}"), add, stale=self._key(tenant, f"audio/{day - 2}"))

    def refund_audio(self, tenant: str, seconds: float) -> None:
        """Give back a charge whose work was not done (the job already existed)."""
        day = int(self.clock() // 86400)
        self._change(self._key(tenant, f"audio/{day}"), lambda used: max(0.0, (used or 0.0) - seconds))

    def hold_job(self, tenant: str, job_id: str, limit: int | None) -> None:
        """Reserve a concurrency slot of `tenant` for `job_id`, or raise `QuotaExceededError` when
        `limit` jobs already hold one (None: no limit, the slot is recorded all the same)."""
        now = self.clock()

        def hold(held: dict[str, float] | None) -> dict[str, float]:
            slots = dict(held or {})
            if limit is not None and len(slots) >= limit:
                slots = {j: at for j, at in slots.items() if now - at < RESERVATION_S or self._active(j)}
                if len(slots) >= limit:
                    raise QuotaExceededError("concurrent_jobs", limit, CONCURRENCY_RETRY_S)
            return slots | {job_id: now}

        self._change(self._key(tenant, "jobs.json"), hold)

    def release_job(self, tenant: str, job_id: str) -> None:
        """Free the slot reserved for `job_id` (its job was not created)."""
        self._change(
            self._key(tenant, "jobs.json"),
            lambda held: {j: at for j, at in (held or {}).items() if j != job_id},
        )

    # ---------------------------------------------------------------------------------------------

    @staticmethod
    def _key(tenant: str, name: str) -> str:
        return f"quotas/{check_name(tenant)}/{name}"

    def _active(self, job_id: str) -> bool:
        return self.storage.exists(active_job_key(job_id))

    def _change(self, key: str, change: Callable[[Any], Any], stale: str | None = None) -> None:
        """Apply `change` (old value or None → new value; it may raise to refuse) by compare-and-swap.
        The first try starts from what this replica last wrote; a refusal or a lost race re-reads."""
        with self._lock:
            known = self._known.get(key)
        fresh = known is None
        for attempt in range(_ATTEMPTS):
            etag, value = known if known is not None else self._read(key)
            try:
                new = change(value)
            except QuotaExceededError:
                if fresh:
                    raise
                known, fresh = None, True  # refused on a remembered value: decide on the stored one
                continue
            body = json.dumps(new).encode()
            try:
                if etag is None:
                    etag = self.storage.create(key, body)
                    if stale is not None:
                        self._forget(stale)
                else:
                    etag = self.storage.replace(key, body, etag)
            except (PreconditionFailedError, ObjectNotFoundError):
                known, fresh = None, True
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                continue
            with self._lock:
                self._known[key] = (etag, new)
            return
        raise QuotaContentionError(f"quota object {key} kept changing under {_ATTEMPTS} attempts")

    def _read(self, key: str) -> tuple[str | None, Any]:
        try:
            stored = self.storage.get(key)
        except ObjectNotFoundError:
            return None, None
        return stored.etag, json.loads(stored.body)

    def _forget(self, key: str) -> None:
        """A window two back is over: drop it from memory and the store (best effort)."""
        with self._lock:
            self._known.pop(key, None)
        try:
            self.storage.delete(key)
        except Exception:  # a leftover window costs a few bytes; a lifecycle rule removes it
            logger.debug("old quota window not removed", extra={"key": key})
