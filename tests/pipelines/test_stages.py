"""pipelines/engine/stages.py: commit, resume, verify, retry, cancel and fence, with test-double stages.

The stages here are test doubles (plain async functions that count their calls) with typed records;
the model clients are in-process doubles of the client protocols; the job store and S3 are real (the
embedded server over HTTP).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pytest
from pydantic import BaseModel

from infra.audio import Audio
from infra.jobs import JobRecord, JobStatus, JobStore, StaleAttemptError
from infra.storage import Storage
from models.types import ModelInfo, WeightsKind
from pipelines.engine.clients import ModelCard, ModelClient, Models
from pipelines.engine.stages import (
    JobCancelledError,
    RetryPolicy,
    Stage,
    StageContext,
    StageFailedError,
    StageOutput,
    StageResult,
    StageRunner,
    Stored,
    job_result,
    sha256,
)

calls: Counter[str] = Counter()


class Request(BaseModel):
    n: int = 1


class Numbers(StageOutput):
    count: int


class Sum(StageOutput):
    sum: int


class Done(StageOutput):
    ok: bool = True


class Doubled(StageOutput):
    doubled: list[float]


# Model client doubles -----------------------------------------------------------------------------


class Unused:
    """A client no stage of the test calls: any use of it fails the test."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment

    async def info(self) -> ModelCard:
        raise AssertionError(f"{self.deployment}.info() is not used here")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{self.deployment}.{name} is not used here")


def models_with(**clients: object) -> Models:
    """A `Models` record of `Unused` doubles, except the clients given by field name."""
    unused = {name: Unused(name) for name in Models.__dataclass_fields__}
    return Models(**cast(dict[str, Any], {**unused, **clients}))


class FakeSeparation:
    """Double of `SeparationClient`: one stem, `double`, twice the input; it answers out of order."""

    deployment = "Fake"

    def __init__(self, weights: WeightsKind) -> None:
        self.weights: WeightsKind = weights

    async def info(self) -> ModelCard:
        return ModelCard(
            deployment=self.deployment, model=ModelInfo("fake/model", "r1", self.weights), sample_rate=8
        )

    async def separate(self, *, audio: Audio) -> dict[str, Audio]:
        await asyncio.sleep(0.01 * (int(audio.samples[0, 0]) % 3))
        return {"double": Audio(audio.samples * 2, audio.sample_rate)}


def constant(x: float) -> Audio:
    return Audio(np.full((1, 4), x, dtype=np.float32), 8)


# Stages -------------------------------------------------------------------------------------------


async def make_numbers(ctx: StageContext[Request]) -> StageResult:
    calls["numbers"] += 1
    return StageResult(record=Numbers(count=3), objects={"numbers.json": json.dumps([1, 2, 3]).encode()})


async def add_them(ctx: StageContext[Request]) -> StageResult:
    calls["sum"] += 1
    numbers = json.loads(ctx.object(Numbers, "numbers.json"))
    assert len(numbers) == ctx.output(Numbers).count
    return StageResult(record=Sum(sum=sum(numbers)), objects={"sum.txt": str(sum(numbers)).encode()})


PIPELINE: tuple[Stage[Request], ...] = (
    Stage("numbers", make_numbers, output=Numbers),
    Stage("sum", add_them, output=Sum),
)
FAST_RETRY = RetryPolicy(tries=3, base_s=0.01)


@pytest.fixture(autouse=True)
def reset_calls() -> None:
    calls.clear()


@pytest.fixture
def jobs(storage: Storage) -> JobStore:
    return JobStore(storage)


def claimed_job(jobs: JobStore, request: dict[str, object] | None = None) -> JobRecord:
    record, _ = jobs.create("test", request or {"n": 1})
    claimed = jobs.claim(record.id, "test-runner", lease_s=60)
    assert claimed is not None
    return claimed


def run(
    jobs: JobStore,
    job: JobRecord,
    stages: Sequence[Stage[Request]] = PIPELINE,
    models: Models | None = None,
    version: int = 1,
) -> StageContext[Request]:
    request = Request.model_validate(job.request)
    runner = StageRunner(jobs, job, request, models or models_with(), retry=FAST_RETRY, version=version)
    return asyncio.run(runner.run(stages))


def test_stages_commit_objects_manifest_then_record(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs)
    ctx = run(jobs, job)
    assert ctx.output(Sum) == Sum(sum=6)
    record = jobs.get(job.id)
    assert [s.name for s in record.stages] == ["numbers", "sum"]
    assert [s.facts for s in record.stages] == [{"count": 3}, {"sum": 6}]
    assert record.progress == 1.0
    for stage in record.stages:
        manifest = json.loads(storage.get_bytes(stage.manifest_key))
        assert manifest["objects"] == stage.objects
        for name, digest in stage.objects.items():
            assert sha256(storage.get_bytes(stage.prefix + name)) == digest
    assert record.stages[0].prefix == f"jobs/{job.id}/a1/stages/00-numbers/"  # attempt 1's own keys


def test_resume_skips_committed_stages_and_restores_typed_records(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    run(jobs, job)
    assert calls == Counter({"numbers": 1, "sum": 1})
    # A new attempt (as after a runner died) restores both stages from S3 instead of recomputing.
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    ctx = run(jobs, resumed)
    assert calls == Counter({"numbers": 1, "sum": 1})
    assert ctx.output(Numbers) == Numbers(count=3) and ctx.output(Sum) == Sum(sum=6)


def test_corrupt_checkpoint_is_recomputed(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs)
    run(jobs, job)
    first = jobs.get(job.id).stages[0]
    storage.put_bytes(first.prefix + "numbers.json", b"[9, 9]")  # bit rot / a stale writer
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    ctx = run(jobs, resumed)
    assert calls == Counter({"numbers": 2, "sum": 1})  # numbers redone; same digest, so sum restored
    assert ctx.output(Sum) == Sum(sum=6)


def test_a_new_kind_version_recomputes_every_stage(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    run(jobs, job)
    run(jobs, jobs.get(job.id), version=2)
    assert calls == Counter({"numbers": 2, "sum": 2})


def test_a_stage_must_return_its_declared_record(jobs: JobStore) -> None:
    async def wrong(ctx: StageContext[Request]) -> StageResult:
        return StageResult(record=Done())

    with pytest.raises(TypeError, match="Done"):
        run(jobs, claimed_job(jobs), (Stage("wrong", wrong, output=Sum),))


def test_the_job_result_is_the_last_stages_stored_record(jobs: JobStore) -> None:
    async def store(ctx: StageContext[Request]) -> StageResult:
        return StageResult(record=Stored(result={"sum": ctx.output(Sum).sum}))

    stored = run(jobs, claimed_job(jobs), (*PIPELINE, Stage("store", store, output=Stored)))
    assert job_result(stored) == {"sum": 6}
    with pytest.raises(AssertionError, match="Stored"):
        job_result(run(jobs, claimed_job(jobs)))


def test_transient_failures_retry_with_backoff(jobs: JobStore) -> None:
    async def flaky(ctx: StageContext[Request]) -> StageResult:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("replica went away")
        return StageResult(record=Done())

    job = claimed_job(jobs)
    run(jobs, job, (Stage("flaky", flaky, output=Done),))
    assert calls["flaky"] == 3
    assert jobs.get(job.id).stages[0].retries == 2
    assert jobs.get(job.id).stages[0].retried_errors == ["ConnectionError: replica went away"] * 2


def test_retries_run_out(jobs: JobStore) -> None:
    async def down(ctx: StageContext[Request]) -> StageResult:
        calls["down"] += 1
        raise TimeoutError("still down")

    with pytest.raises(StageFailedError) as failure:
        run(jobs, claimed_job(jobs), (Stage("down", down, output=Done),))
    assert calls["down"] == 3
    assert (failure.value.stage, failure.value.code) == ("down", "retries_exhausted")


def test_invalid_input_fails_at_once(jobs: JobStore) -> None:
    async def picky(ctx: StageContext[Request]) -> StageResult:
        calls["picky"] += 1
        raise ValueError("prompt is nonsense")

    with pytest.raises(StageFailedError) as failure:
        run(jobs, claimed_job(jobs), (Stage("picky", picky, output=Done),))
    assert calls["picky"] == 1
    assert failure.value.code == "invalid_input" and "nonsense" in failure.value.message


def test_cancel_is_seen_between_stages(jobs: JobStore) -> None:
    job = claimed_job(jobs)

    async def cancel_after(ctx: StageContext[Request]) -> StageResult:
        jobs.request_cancel(job.id)
        return StageResult(record=Done())

    with pytest.raises(JobCancelledError):
        run(jobs, job, (Stage("first", cancel_after, output=Done), *PIPELINE))
    assert calls["numbers"] == 0


def test_superseded_attempt_cannot_commit(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))  # another runner took over
    with pytest.raises(StaleAttemptError):
        run(jobs, job)
    assert jobs.get(job.id).stages == []


# Fan-out over a model client -----------------------------------------------------------------------


async def fan_out(ctx: StageContext[Request]) -> StageResult:
    calls["fan_out"] += 1
    client = ctx.models.separation
    stems = await ctx.gather(client.separate(audio=constant(x)) for x in range(6))
    doubled = [float(s["double"].samples[0, 0]) for s in stems]
    return StageResult(
        record=Doubled(doubled=doubled), objects={"doubled.json": json.dumps(doubled).encode()}
    )


def _separation(request: Request, models: Models) -> Sequence[ModelClient]:
    return (models.separation,)


FAN_OUT = (Stage("fan_out", fan_out, output=Doubled, models=_separation),)


def run_with(jobs: JobStore, job: JobRecord, weights: WeightsKind) -> StageContext[Request]:
    return run(jobs, job, FAN_OUT, models_with(separation=FakeSeparation(weights)))


def test_gather_keeps_order_and_records_segments_sizes_and_models(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    ctx = run_with(jobs, job, "debug-random")
    assert ctx.output(Doubled).doubled == [0, 2, 4, 6, 8, 10]
    assert json.loads(ctx.object(Doubled, "doubled.json")) == [0, 2, 4, 6, 8, 10]
    (stage,) = jobs.get(job.id).stages
    assert stage.segments == 6
    assert stage.sizes == {"doubled.json": len(json.dumps([0.0, 2.0, 4.0, 6.0, 8.0, 10.0]))}
    assert stage.models == {"Fake": {"model_id": "fake/model", "revision": "r1", "weights": "debug-random"}}
    assert jobs.get(job.id).segments is None  # cleared once the stage committed


def test_other_weights_invalidate_the_checkpoint(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    run_with(jobs, job, "debug-random")
    run_with(jobs, jobs.get(job.id), "debug-random")
    assert calls["fan_out"] == 1  # same model: restored
    run_with(jobs, jobs.get(job.id), "pretrained")
    assert calls["fan_out"] == 2  # other weights: recomputed


def test_the_models_a_stage_calls_are_chosen_by_request(jobs: JobStore) -> None:
    chosen: list[int] = []

    def by_request(request: Request, models: Models) -> Sequence[ModelClient]:
        chosen.append(request.n)
        return (models.separation,) if request.n > 1 else ()

    stages = (Stage("fan_out", fan_out, output=Doubled, models=by_request),)
    fake = models_with(separation=FakeSeparation("debug-random"))
    run(jobs, claimed_job(jobs, {"n": 1}), stages, fake)
    job = claimed_job(jobs, {"n": 2})
    run(jobs, job, stages, fake)
    assert chosen == [1, 2] and list(jobs.get(job.id).stages[0].models) == ["Fake"]


def test_gather_reports_segment_progress(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    seen: list[tuple[int, int, float]] = []
    original = jobs.update

    def spy(job_id: str, mutate: object, *, attempt: int | None = None) -> JobRecord:
        record = original(job_id, mutate, attempt=attempt)  # type: ignore[arg-type]
        if record.segments is not None:
            seen.append((record.segments.done, record.segments.total, record.progress))
        return record

    jobs.update = spy  # type: ignore[method-assign]
    run_with(jobs, job, "debug-random")
    assert seen[0][:2] == (0, 6)
    assert seen[-1][:2] == (6, 6)
    assert [p for _, _, p in seen] == sorted(p for _, _, p in seen)


def test_map_retries_only_the_failed_segment(jobs: JobStore) -> None:
    seen: Counter[int] = Counter()

    async def flaky_double(x: int) -> float:
        seen[x] += 1
        if x == 3 and seen[x] == 1:
            raise ConnectionError("replica died")
        return 2 * x

    async def mapped(ctx: StageContext[Request]) -> StageResult:
        calls["mapped"] += 1
        return StageResult(record=Doubled(doubled=await ctx.map(flaky_double, range(5))))

    job = claimed_job(jobs)
    ctx = run(jobs, job, (Stage("mapped", mapped, output=Doubled),))
    assert ctx.output(Doubled).doubled == [0, 2, 4, 6, 8]
    assert calls["mapped"] == 1 and seen == Counter({0: 1, 1: 1, 2: 1, 3: 2, 4: 1})
    (stage,) = jobs.get(job.id).stages
    assert stage.retries == 1 and stage.retried_errors == ["ConnectionError: replica died"]


def test_map_gives_up_on_invalid_input(jobs: JobStore) -> None:
    async def picky(x: int) -> float:
        calls["picky"] += 1
        raise ValueError(f"bad segment {x}")

    async def mapped(ctx: StageContext[Request]) -> StageResult:
        return StageResult(record=Doubled(doubled=await ctx.map(picky, [7])))

    with pytest.raises(StageFailedError) as failure:
        run(jobs, claimed_job(jobs), (Stage("mapped", mapped, output=Doubled),))
    assert calls["picky"] == 1 and failure.value.code == "invalid_input"


def test_a_deferred_last_record_lands_in_the_finishing_write(jobs: JobStore, storage: Storage) -> None:
    """The runner's way: the last stage's objects and manifest are written, its record joins the job's
    finishing update (result and stage in one fenced write), and a later attempt restores it from there."""
    job = claimed_job(jobs)
    runner = StageRunner(jobs, job, Request(n=1), models_with(), retry=FAST_RETRY, defer_last_record=True)
    asyncio.run(runner.run(PIPELINE))
    assert [s.name for s in jobs.get(job.id).stages] == ["numbers"]  # not yet on the record
    (last,) = runner.pending_records
    assert last.name == "sum" and json.loads(storage.get_bytes(last.manifest_key))["objects"] == last.objects
    with pytest.raises(StaleAttemptError):  # the finishing write is fenced like every other
        jobs.finish(job.id, job.attempt + 1, JobStatus.SUCCEEDED, result={}, stages=[last])
    done = jobs.finish(job.id, job.attempt, JobStatus.SUCCEEDED, result={"sum": 6}, stages=[last])
    assert [s.name for s in done.stages] == ["numbers", "sum"] and done.result == {"sum": 6}
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    ctx = run(jobs, resumed)
    assert calls == Counter({"numbers": 1, "sum": 1}) and ctx.output(Sum) == Sum(sum=6)
