"""`GET /v1/jobs/{id}/events`: a job's progress as Server-Sent Events, until it reaches a terminal status.

One poller per job per ingress replica reads the record (`asyncio.to_thread`, the S3 read only) every
`events_poll_s` while anyone listens, and wakes its listeners; each listener is a coroutine that diffs
the latest record against what it last sent. No thread is held per listener, and a thousand listeners
on one job cost one S3 read per interval.

Events (`data` is JSON; every event carries the job `id`):
- `status`: `status`, `attempt`, `cancel_requested`, on a change of any of them;
- `stage`: `stage`, when the running stage changes;
- `progress`: `progress` (0..1), `stage`, `segments` (`{stage, done, total}` or null);
- `retry`: `retries` (total transient retries of the committed stages), `errors` (the latest ones);
- `result`: the job as `GET /v1/jobs/{id}` shows it (presigned URLs), once it succeeded;
- `error`: `{code, message, stage, attempt}`, once it failed;
- `end`: `status`, last; the stream then closes.
Each event's SSE `id` is the record's update time in milliseconds. A reconnect with `Last-Event-ID`
gets nothing more until the record changes after that time (then the full current state); events are
state, not a log, so a listener that missed some still ends with the latest. Quiet streams get a comment
line every `events_keepalive_s`, so proxies keep them open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from deployments.http.schemas import job_view
from deployments.http.services import Services
from infra.jobs import JobNotFoundError, JobRecord

logger = logging.getLogger(__name__)


class JobWatch:
    """The latest record of one job, re-read every `poll_s` while it has listeners."""

    def __init__(self, svc: Services, record: JobRecord, on_idle: Any) -> None:
        self.svc = svc
        self.record = record
        self.version = 0
        self.listeners = 0
        self._changed = asyncio.Condition()
        self._on_idle = on_idle
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and not self.record.status.finished:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while not self.record.status.finished:
            await asyncio.sleep(self.svc.settings.events_poll_s)
            try:
                record = await asyncio.to_thread(self.svc.jobs.get, self.record.id)
            except JobNotFoundError:
                return
            except Exception:
                logger.warning("event poll failed; retrying", extra={"job_id": self.record.id})
                continue
            if record.updated_at != self.record.updated_at:
                self.record = record
                async with self._changed:
                    self.version += 1
                    self._changed.notify_all()

    async def wait_newer(self, version: int, timeout_s: float) -> bool:
        """Wait until the record is newer than `version`; False after `timeout_s` without a change."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait_for(lambda: self.version > version)
            return self.version > version

    def leave(self) -> None:
        self.listeners -= 1
        if self.listeners == 0:
            if self._task is not None:
                self._task.cancel()
            self._on_idle(self)


class JobEventHub:
    """The watches of one ingress replica (kept on `app.state`), one per job being listened to."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.watches: dict[str, JobWatch] = {}

    @classmethod
    def of(cls, app: FastAPI) -> JobEventHub:
        hub: JobEventHub | None = getattr(app.state, "job_events", None)
        if hub is None:
            hub = app.state.job_events = cls(app.state.services)
        return hub

    def join(self, record: JobRecord) -> JobWatch:
        watch = self.watches.get(record.id)
        if watch is None:
            watch = self.watches[record.id] = JobWatch(self.svc, record, self._idle)
        watch.listeners += 1
        watch.start()
        return watch

    def _idle(self, watch: JobWatch) -> None:
        if self.watches.get(watch.record.id) is watch:
            del self.watches[watch.record.id]


def _facets(record: JobRecord) -> dict[str, dict[str, Any]]:
    """What each event type says about `record`."""
    retried = [error for stage in record.stages for error in stage.retried_errors]
    return {
        "status": {
            "status": record.status.value,
            "attempt": record.attempt,
            "cancel_requested": record.cancel_requested,
        },
        "stage": {"stage": record.stage},
        "progress": {
            "progress": round(record.progress, 4),
            "stage": record.stage,
            "segments": record.segments.model_dump() if record.segments else None,
        },
        "retry": {"retries": sum(stage.retries for stage in record.stages), "errors": retried[-5:]},
    }


def _event(name: str, event_id: int, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _changes(record: JobRecord, sent: dict[str, dict[str, Any]], svc: Services, base_url: str) -> list[bytes]:
    """The events that bring a listener who saw `sent` up to `record` (updating `sent`)."""
    event_id = int(record.updated_at * 1000)
    out: list[bytes] = []
    for name, facet in _facets(record).items():
        if name == "retry" and facet["retries"] == 0 and name not in sent:
            continue
        if sent.get(name) != facet:
            sent[name] = facet
            out.append(_event(name, event_id, {"id": record.id, **facet}))
    if record.status.finished:
        if record.error is not None:
            out.append(_event("error", event_id, {"id": record.id, **record.error.model_dump(mode="json")}))
        if record.result is not None:
            view = job_view(record, svc.storage, base_url).model_dump(mode="json")
            out.append(_event("result", event_id, view))
        out.append(_event("end", event_id, {"id": record.id, "status": record.status.value}))
    return out


async def job_events(
    app: FastAPI, record: JobRecord, base_url: str, last_event_id: str | None
) -> AsyncIterator[bytes]:
    """The event stream of `record`'s job (already checked to be the caller's)."""
    svc: Services = app.state.services
    hub = JobEventHub.of(app)
    watch = hub.join(record)
    try:
        sent: dict[str, dict[str, Any]] = {}
        seen_ms = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1
        version = watch.version
        current = watch.record if watch.record.updated_at >= record.updated_at else record
        yield b"retry: 2000\n\n"
        while True:
            if int(current.updated_at * 1000) > seen_ms:
                for event in _changes(current, sent, svc, base_url):
                    yield event
            elif current.status.finished:  # the listener saw the last state: only say it ended
                yield _event(
                    "end", int(current.updated_at * 1000), {"id": current.id, "status": current.status}
                )
            if current.status.finished:
                return
            if not await watch.wait_newer(version, svc.settings.events_keepalive_s):
                yield b": keep-alive\n\n"
                continue
            version, current = watch.version, watch.record
    finally:
        watch.leave()
