"""deployments/runner.py and the stage runner under faults, without Ray: deadlines, cancellation that
reaches in-flight calls, draining, a sweep that survives bad index entries, health without S3.

The JobRunner class is built directly (Serve's decorator keeps it as `func_or_class`); the job store and
S3 are real (the embedded server over HTTP). The model is an in-process double that never answers,
standing in for a wedged replica (a real one cannot be made to hang on cue here).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from deployments.families.client import DeploymentClient, ModelCallTimeoutError
from deployments.runner import JobRunner
from infra.embedded_s3 import EmbeddedS3, free_port
from infra.jobs import JobStatus, JobStore
from infra.settings import load_settings
from infra.storage import Storage, active_job_key
from pipelines.engine import registry
from pipelines.engine.kinds import JobKind
from pipelines.engine.stages import Stage, StageContext, StageOutput, StageResult, Stored
from tests.pipelines.test_stages import models_with

HANG = "test-hang"


class HangRequest(BaseModel):
    stage_timeout_s: float | None = None


class Waited(StageOutput):
    pass


class Wedged:
    """A model call that never returns; it records that it was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False

    async def call(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


WEDGED: list[Wedged] = []


async def hang(ctx: StageContext[HangRequest]) -> StageResult:
    await WEDGED[-1].call()
    return StageResult(record=Waited())


async def store(ctx: StageContext[HangRequest]) -> StageResult:
    return StageResult(record=Stored(result={}))


@pytest.fixture
def storage(s3: EmbeddedS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    """A bucket of this test's own: the runners built here sweep their bucket's whole active index, and
    must not claim the jobs of other tests (or of the session's Ray stack)."""
    env = {**s3.env, "SOUNDSTAGE_JOB_LEASE_S": "3", "SOUNDSTAGE_JOB_RECLAIM_INTERVAL_S": "1"}
    env["SOUNDSTAGE_S3_BUCKET"] = f"runner-faults-{uuid.uuid4().hex[:12]}"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    own = Storage(load_settings())
    own.ensure_bucket()
    stages = (Stage("wait", hang, output=Waited), Stage("store", store, output=Stored))
    monkeypatch.setitem(registry.JOB_KINDS, HANG, JobKind(HANG, HangRequest, stages))
    WEDGED.append(Wedged())
    yield own


def make_runner() -> Any:
    cls: Any = JobRunner.func_or_class  # type: ignore[attr-defined]
    return cls(models_with())


async def wait_for(predicate: Any, timeout_s: float = 15.0) -> None:
    ends = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > ends:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def status_of(jobs: JobStore, job_id: str) -> JobStatus:
    return jobs.get(job_id).status


def test_cancel_reaches_the_in_flight_model_call(storage: Storage) -> None:
    """Before, cancel was seen only between stages: a wedged call kept the job running forever."""
    jobs = JobStore(storage)
    record, _ = jobs.create(HANG, {})

    async def scenario() -> None:
        runner = make_runner()
        submitted = asyncio.ensure_future(runner.submit(record.id))
        await asyncio.wait_for(WEDGED[-1].started.wait(), 10)
        jobs.request_cancel(record.id)
        started = time.monotonic()
        await asyncio.wait_for(submitted, 10)
        assert time.monotonic() - started < 5  # within two heartbeats of the DELETE
        await runner.drain()

    asyncio.run(scenario())
    assert WEDGED[-1].cancelled
    assert status_of(jobs, record.id) is JobStatus.CANCELLED


def test_a_wedged_stage_fails_at_its_deadline_naming_the_stage(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOUNDSTAGE_JOB_STAGE_TIMEOUT_S", "1.5")
    jobs = JobStore(storage)
    record, _ = jobs.create(HANG, {})

    async def scenario() -> None:
        runner = make_runner()
        await asyncio.wait_for(runner.submit(record.id), 20)
        await runner.drain()

    asyncio.run(scenario())
    failed = jobs.get(record.id)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert (failed.error.code, failed.error.stage) == ("deadline_exceeded", "wait")
    assert "'wait' exceeded its deadline of 1.5 s" in failed.error.message
    assert WEDGED[-1].cancelled


def test_a_draining_runner_hands_its_lease_back(storage: Storage) -> None:
    """Before, a downscaled runner's jobs waited for the lease to expire; now another claims at once."""
    jobs = JobStore(storage)
    record, _ = jobs.create(HANG, {})

    async def scenario() -> None:
        first = make_runner()
        running = asyncio.ensure_future(first.submit(record.id))
        await asyncio.wait_for(WEDGED[-1].started.wait(), 10)
        assert await first.drain() == [record.id]
        await asyncio.gather(running, return_exceptions=True)
        handed = jobs.get(record.id)
        assert handed.status is JobStatus.RUNNING and handed.lease_owner is None
        assert handed.claimable(jobs.clock())  # at once, not after the 3 s lease
        WEDGED.append(Wedged())
        second = make_runner()
        second_run = asyncio.ensure_future(second.submit(record.id))
        await asyncio.wait_for(WEDGED[-1].started.wait(), 10)
        assert jobs.get(record.id).attempt >= 2  # (a loaded machine may let a 3 s lease lapse once more)
        await second.drain()
        await asyncio.gather(second_run, return_exceptions=True)

    asyncio.run(scenario())


def test_one_bad_index_entry_does_not_stop_the_sweep(storage: Storage) -> None:
    jobs = JobStore(storage)
    orphan = "0" * 32  # an active marker with no record (a creation that died half-way)
    storage.put_bytes(active_job_key(orphan), orphan.encode())
    record, _ = jobs.create(HANG, {})

    async def scenario() -> None:
        runner = make_runner()
        await runner._sweep_once()
        await asyncio.wait_for(WEDGED[-1].started.wait(), 10)
        assert record.id in runner.running()
        await runner.drain()

    asyncio.run(scenario())
    assert jobs.get(record.id).attempt == 1


def test_runner_health_does_not_depend_on_the_store(storage: Storage) -> None:
    """An S3 outage must not fail every runner's health check (Serve would restart them all)."""
    dead = storage.settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})

    async def scenario() -> None:
        runner = make_runner()  # starts against the live store (its start-up probe needs one)
        runner.jobs = JobStore(Storage(dead))
        await runner.check_health()
        await runner.drain()

    asyncio.run(scenario())


class NeverAnswers:
    """A `DeploymentHandle` double whose responses never resolve; records `cancel()`."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.method = self

    def remote(self, **kwargs: Any) -> Any:
        handle = self

        class Response:
            def __await__(self) -> Any:
                return asyncio.Event().wait().__await__()

            def cancel(self) -> None:
                handle.cancelled += 1

        return Response()


def test_a_model_call_past_its_deadline_is_cancelled_on_the_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDSTAGE_MODEL_CALL_TIMEOUT_S", "0.3")
    assert load_settings().model_call_timeout_s == 0.3
    handle = NeverAnswers()
    client = DeploymentClient(handle, "Wedged")
    with pytest.raises(ModelCallTimeoutError, match=r"Wedged.method did not answer within 0.3 s"):
        asyncio.run(client._call("method"))
    assert handle.cancelled == 1
    assert os.environ["SOUNDSTAGE_MODEL_CALL_TIMEOUT_S"] == "0.3"


def test_lease_renewals_never_wait_behind_stage_work(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every work thread busy (long renders), the lease is still renewed: renewals have threads of
    their own. Before, they queued behind the work on one pool and the lease expired under load."""
    monkeypatch.setenv("SOUNDSTAGE_RUNNER_THREADS", "4")
    jobs = JobStore(storage)
    record, _ = jobs.create(HANG, {})
    release = threading.Event()

    async def scenario() -> None:
        runner = make_runner()
        running = asyncio.ensure_future(runner.submit(record.id))
        await asyncio.wait_for(WEDGED[-1].started.wait(), 10)
        loop = asyncio.get_running_loop()
        hogs = [loop.run_in_executor(None, release.wait, 30) for _ in range(8)]  # the work pool is full
        first = jobs.get(record.id).lease_expires_at
        await asyncio.sleep(3.5)  # three heartbeats (lease 3 s, every 1 s)
        renewed = jobs.get(record.id).lease_expires_at
        release.set()
        await asyncio.gather(*hogs)
        await runner.drain()
        await asyncio.gather(running, return_exceptions=True)
        assert first is not None and renewed is not None and renewed > first

    asyncio.run(scenario())
