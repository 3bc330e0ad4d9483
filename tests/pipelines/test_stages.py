"""pipelines/engine/stages.py: commit, resume, verify, retry, cancel and fence, with test-double stages.

The stages here are test doubles (plain async functions that count their calls); the job store and
S3 are real (the embedded server over HTTP).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from infra.jobs import JobRecord, JobStore, StaleAttemptError
from infra.storage import Storage
from pipelines.engine.stages import (
    JobCancelledError,
    RetryPolicy,
    Stage,
    StageContext,
    StageFailedError,
    StageResult,
    StageRunner,
    sha256,
)

calls: Counter[str] = Counter()


async def make_numbers(ctx: StageContext) -> StageResult:
    calls["numbers"] += 1
    return StageResult(objects={"numbers.json": json.dumps([1, 2, 3]).encode()}, facts={"count": 3})


async def add_them(ctx: StageContext) -> StageResult:
    calls["sum"] += 1
    numbers = json.loads(ctx.object("numbers", "numbers.json"))
    return StageResult(objects={"sum.txt": str(sum(numbers)).encode()}, facts={"sum": sum(numbers)})


PIPELINE = (Stage("numbers", make_numbers), Stage("sum", add_them))
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


def run(jobs: JobStore, job: JobRecord, stages: tuple[Stage, ...] = PIPELINE) -> StageContext:
    return asyncio.run(StageRunner(jobs, job, handles={}, retry=FAST_RETRY).run(stages))


def test_stages_commit_objects_manifest_then_record(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs)
    ctx = run(jobs, job)
    assert ctx.facts("sum") == {"sum": 6}
    record = jobs.get(job.id)
    assert [s.name for s in record.stages] == ["numbers", "sum"]
    assert record.progress == 1.0
    for stage in record.stages:
        manifest = json.loads(storage.get_bytes(stage.manifest_key))
        assert manifest["objects"] == stage.objects
        for name, digest in stage.objects.items():
            assert sha256(storage.get_bytes(stage.prefix + name)) == digest
    assert record.stages[0].prefix == f"jobs/{job.id}/stages/00-numbers/"


def test_resume_skips_committed_stages(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    run(jobs, job)
    assert calls == Counter({"numbers": 1, "sum": 1})
    # A new attempt (as after a runner died) restores both stages from S3 instead of recomputing.
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    ctx = run(jobs, resumed)
    assert calls == Counter({"numbers": 1, "sum": 1})
    assert ctx.facts("sum") == {"sum": 6}


def test_corrupt_checkpoint_is_recomputed(jobs: JobStore, storage: Storage) -> None:
    job = claimed_job(jobs)
    run(jobs, job)
    first = jobs.get(job.id).stages[0]
    storage.put_bytes(first.prefix + "numbers.json", b"[9, 9]")  # bit rot / a stale writer
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    ctx = run(jobs, resumed)
    assert calls == Counter({"numbers": 2, "sum": 1})  # numbers redone; same digest, so sum restored
    assert ctx.facts("sum") == {"sum": 6}


def test_transient_failures_retry_with_backoff(jobs: JobStore) -> None:
    async def flaky(ctx: StageContext) -> StageResult:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("replica went away")
        return StageResult(facts={"ok": True})

    job = claimed_job(jobs)
    run(jobs, job, (Stage("flaky", flaky),))
    assert calls["flaky"] == 3
    assert jobs.get(job.id).stages[0].retries == 2
    assert jobs.get(job.id).stages[0].retried_errors == ["ConnectionError: replica went away"] * 2


def test_retries_run_out(jobs: JobStore) -> None:
    async def down(ctx: StageContext) -> StageResult:
        calls["down"] += 1
        raise TimeoutError("still down")

    with pytest.raises(StageFailedError) as failure:
        run(jobs, claimed_job(jobs), (Stage("down", down),))
    assert calls["down"] == 3
    assert (failure.value.stage, failure.value.code) == ("down", "retries_exhausted")


def test_invalid_input_fails_at_once(jobs: JobStore) -> None:
    async def picky(ctx: StageContext) -> StageResult:
        calls["picky"] += 1
        raise ValueError("prompt is nonsense")

    with pytest.raises(StageFailedError) as failure:
        run(jobs, claimed_job(jobs), (Stage("picky", picky),))
    assert calls["picky"] == 1
    assert failure.value.code == "invalid_input" and "nonsense" in failure.value.message


def test_cancel_is_seen_between_stages(jobs: JobStore) -> None:
    job = claimed_job(jobs)

    async def cancel_after(ctx: StageContext) -> StageResult:
        jobs.request_cancel(job.id)
        return StageResult()

    with pytest.raises(JobCancelledError):
        run(jobs, job, (Stage("first", cancel_after), *PIPELINE))
    assert calls["numbers"] == 0


def test_superseded_attempt_cannot_commit(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))  # another runner took over
    with pytest.raises(StaleAttemptError):
        run(jobs, job)
    assert jobs.get(job.id).stages == []


class FakeModel:
    """Test double for a model deployment handle: `info.remote()` and `work.remote(x)` are awaitable."""

    def __init__(self, weights: str) -> None:
        self.weights = weights
        self.info = _Method(lambda: {"model_id": "fake/model", "revision": "r1", "weights": self.weights})
        self.work = _Method(self._work)

    async def _work(self, x: int) -> int:
        await asyncio.sleep(0.01 * (x % 3))
        return 2 * x


class _Method:
    def __init__(self, fn: object) -> None:
        self.fn = fn

    def remote(self, *args: object) -> object:
        result = self.fn(*args)  # type: ignore[operator]
        return result if asyncio.iscoroutine(result) else _ready(result)


async def _ready(value: object) -> object:
    return value


async def fan_out(ctx: StageContext) -> StageResult:
    calls["fan_out"] += 1
    doubled = await ctx.gather(ctx.handles["Fake"].work.remote(x) for x in range(6))
    return StageResult(objects={"doubled.json": json.dumps(doubled).encode()}, facts={"n": len(doubled)})


FAN_OUT = (Stage("fan_out", fan_out, models=("Fake",)),)


def run_with(jobs: JobStore, job: JobRecord, handles: dict[str, object]) -> StageContext:
    return asyncio.run(StageRunner(jobs, job, handles=handles, retry=FAST_RETRY).run(FAN_OUT))


def test_gather_keeps_order_and_records_segments_sizes_and_models(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    ctx = run_with(jobs, job, {"Fake": FakeModel("debug")})
    assert json.loads(ctx.object("fan_out", "doubled.json")) == [0, 2, 4, 6, 8, 10]
    (stage,) = jobs.get(job.id).stages
    assert stage.segments == 6
    assert stage.sizes == {"doubled.json": len(json.dumps([0, 2, 4, 6, 8, 10]))}
    assert stage.models == {"Fake": {"model_id": "fake/model", "revision": "r1", "weights": "debug"}}
    assert jobs.get(job.id).segments is None  # cleared once the stage committed


def test_other_weights_invalidate_the_checkpoint(jobs: JobStore) -> None:
    job = claimed_job(jobs)
    run_with(jobs, job, {"Fake": FakeModel("debug")})
    run_with(jobs, jobs.get(job.id), {"Fake": FakeModel("debug")})
    assert calls["fan_out"] == 1  # same model: restored
    run_with(jobs, jobs.get(job.id), {"Fake": FakeModel("pretrained")})
    assert calls["fan_out"] == 2  # other weights: recomputed


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
    run_with(jobs, job, {"Fake": FakeModel("debug")})
    assert seen[0][:2] == (0, 6)
    assert seen[-1][:2] == (6, 6)
    assert [p for _, _, p in seen] == sorted(p for _, _, p in seen)


def test_map_retries_only_the_failed_segment(jobs: JobStore) -> None:
    seen: Counter[int] = Counter()

    async def flaky_double(x: int) -> int:
        seen[x] += 1
        if x == 3 and seen[x] == 1:
            raise ConnectionError("replica died")
        return 2 * x

    async def mapped(ctx: StageContext) -> StageResult:
        calls["mapped"] += 1
        return StageResult(facts={"doubled": await ctx.map(flaky_double, range(5))})

    job = claimed_job(jobs)
    ctx = run(jobs, job, (Stage("mapped", mapped),))
    assert ctx.facts("mapped") == {"doubled": [0, 2, 4, 6, 8]}
    assert calls["mapped"] == 1 and seen == Counter({0: 1, 1: 1, 2: 1, 3: 2, 4: 1})
    (stage,) = jobs.get(job.id).stages
    assert stage.retries == 1 and stage.retried_errors == ["ConnectionError: replica died"]


def test_map_gives_up_on_invalid_input(jobs: JobStore) -> None:
    async def picky(x: int) -> int:
        calls["picky"] += 1
        raise ValueError(f"bad segment {x}")

    async def mapped(ctx: StageContext) -> StageResult:
        return StageResult(facts={"out": await ctx.map(picky, [7])})

    with pytest.raises(StageFailedError) as failure:
        run(jobs, claimed_job(jobs), (Stage("mapped", mapped),))
    assert calls["picky"] == 1 and failure.value.code == "invalid_input"
