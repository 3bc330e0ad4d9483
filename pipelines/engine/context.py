"""What a stage sees and returns: its typed record (`StageOutput`), its result, and `StageContext` (the
validated request, the model clients, earlier stages' records by type, fan-out with per-segment retries)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from infra.jobs import JobRecord
from infra.storage import Storage
from pipelines.engine.checkpoints import RetryPolicy, describe
from pipelines.engine.clients import Models

T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R", bound=BaseModel)


class JobCancelledError(Exception):
    """The job's cancel flag was seen (between stages, or by threaded work at its next block)."""


class StageFailedError(Exception):
    """A stage failed for good; `stage` names it and `code` says why (invalid input or out of retries)."""

    def __init__(self, stage: str, code: str, message: str) -> None:
        super().__init__(f"stage {stage!r} failed: {message}")
        self.stage = stage
        self.code = code
        self.message = message


class StageOutput(BaseModel):
    """A stage's typed record: small JSON-able facts, committed in the job record and read back by type."""

    model_config = ConfigDict(frozen=True, extra="forbid")


Out = TypeVar("Out", bound=StageOutput)


class Stored(StageOutput):
    """The last stage of every job kind: the published result (output keys, metadata)."""

    result: dict[str, Any]


@dataclass(frozen=True)
class StageResult:
    """What a stage produced: its typed record and named objects to commit."""

    record: StageOutput
    objects: Mapping[str, bytes] = field(default_factory=dict)


@dataclass
class StageContext(Generic[R]):
    """What a stage sees: the validated request, the model clients, and earlier stages' committed output."""

    job: JobRecord
    request: R
    models: Models
    storage: Storage
    outputs: dict[type[StageOutput], StageResult] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy())
    on_segments: Callable[[int, int], Awaitable[None]] | None = None
    segments_done: int = 0
    segments_total: int = 0
    retried_errors: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def check_cancelled(self) -> None:
        """For work in threads (renders, long loops): raise `JobCancelledError` once the job is cancelled
        or superseded, so the thread stops at its next block instead of running on unseen."""
        if self.cancelled.is_set():
            raise JobCancelledError(self.job.id)

    def output(self, kind: type[Out]) -> Out:
        """The committed record of the earlier stage whose output type is `kind`."""
        record = self.outputs[kind].record
        assert isinstance(record, kind)
        return record

    def object(self, kind: type[StageOutput], name: str) -> bytes:
        """Object `name` of the earlier stage whose output type is `kind`."""
        return self.outputs[kind].objects[name]

    async def gather(self, awaitables: Iterable[Awaitable[T]]) -> list[T]:
        """Like `asyncio.gather` (results in order, the first error propagates), reporting `{done, total}`
        segment progress of the running stage on the job record as the awaitables finish."""
        tasks = [asyncio.ensure_future(a) for a in awaitables]
        total = len(tasks)
        self.segments_total += total
        await self._report_segments()
        for finished in asyncio.as_completed(tasks):
            try:
                await finished
            except BaseException:
                for task in tasks:
                    task.cancel()
                raise
            self.segments_done += 1
            await self._report_segments()
        return [task.result() for task in tasks]

    async def map(self, call: Callable[[U], Awaitable[T]], items: Iterable[U]) -> list[T]:
        """`[await call(item) for item in items]`, run concurrently with progress as in `gather`; an item
        whose call fails transiently (its replica died) is retried on its own with backoff, so a fan-out
        that loses a replica redoes only the segments that were on it."""
        return await self.gather(self._retrying(call, item) for item in items)

    async def _retrying(self, call: Callable[[U], Awaitable[T]], item: U) -> T:
        for attempt in range(self.retry.tries):
            try:
                return await call(item)
            except Exception as e:
                if not self.retry.is_transient(e) or attempt + 1 == self.retry.tries:
                    raise
                self.retried_errors.append(describe(e))
                await asyncio.sleep(self.retry.base_s * 2**attempt)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _report_segments(self) -> None:
        if self.on_segments is not None:
            await self.on_segments(self.segments_done, self.segments_total)


def error_code(e: BaseException) -> str:
    code = getattr(e, "code", None)
    return code if isinstance(code, str) else "invalid_input" if isinstance(e, ValueError) else "stage_error"


def job_result(ctx: StageContext[Any]) -> dict[str, Any]:
    """The job's published result: the last stage's `Stored` record."""
    last = list(ctx.outputs.values())[-1].record
    assert isinstance(last, Stored), f"a job's last stage must return Stored, not {type(last).__name__}"
    return dict(last.result)
