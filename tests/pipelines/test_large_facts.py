"""Large stage facts live in an object of the attempt, not in the job record (which every heartbeat
rewrites); the record names the object and its digest, and a resume reads the facts back.

Before, every stage's facts were embedded in `job.json`: a transcript of a long voice replacement made
each lease renewal rewrite hundreds of KiB. The job store and S3 are real (the embedded server over HTTP).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import pytest
from pydantic import BaseModel

from infra.jobs import JobStore
from infra.storage import Storage
from pipelines.engine.stages import Stage, StageContext, StageOutput, StageResult, StageRunner, Stored
from tests.pipelines.test_stages import FAST_RETRY, models_with

RECORD_BOUND = 16 * 1024  # the whole job record, with a ~200 KiB transcript among its stage facts
calls: Counter[str] = Counter()


class Lines(BaseModel):
    words: int


class Transcribed(StageOutput):
    lines: list[dict[str, object]]


async def transcribe(ctx: StageContext[Lines]) -> StageResult:
    calls["transcribe"] += 1
    lines = [{"start": i * 0.5, "text": f"word {i} " * 8, "speaker": i % 3} for i in range(ctx.request.words)]
    return StageResult(record=Transcribed(lines=lines))


async def count(ctx: StageContext[Lines]) -> StageResult:
    calls["count"] += 1
    return StageResult(record=Stored(result={"lines": len(ctx.output(Transcribed).lines)}))


STAGES = (Stage("transcribe", transcribe, output=Transcribed), Stage("count", count, output=Stored))


@pytest.fixture
def jobs(storage: Storage) -> JobStore:
    """A bucket of this test's own (the session stack's runners must not claim its test-kind jobs)."""
    own = Storage(storage.settings.model_copy(update={"s3_bucket": f"facts-{uuid.uuid4().hex[:12]}"}))
    own.ensure_bucket()
    calls.clear()
    return JobStore(own)


def run(jobs: JobStore, job_id: str) -> StageContext[Lines]:
    claimed = jobs.claim(job_id, "test-runner", lease_s=60)
    assert claimed is not None
    request = Lines.model_validate(claimed.request)
    runner = StageRunner(jobs, claimed, request, models_with(), retry=FAST_RETRY)
    return asyncio.run(runner.run(STAGES))


def expire_lease(jobs: JobStore, job_id: str) -> None:
    jobs.update(job_id, lambda r: setattr(r, "lease_expires_at", 0.0))


def test_large_facts_are_an_object_of_the_attempt_and_the_record_stays_small(jobs: JobStore) -> None:
    record, _ = jobs.create("facts-test", {"words": 2000})
    ctx = run(jobs, record.id)
    assert len(ctx.output(Transcribed).lines) == 2000
    stored = jobs.storage.get_bytes(f"jobs/{record.id}/job.json")
    assert len(stored) < RECORD_BOUND, f"job record is {len(stored)} bytes"
    stage = jobs.get(record.id).stages[0]
    assert stage.facts == {} and stage.facts_key == f"jobs/{record.id}/a1/stages/00-transcribe/facts.json"
    assert stage.facts_bytes > 100_000
    assert len(json.loads(jobs.storage.get_bytes(stage.facts_key))["lines"]) == 2000
    assert len(jobs.with_facts(jobs.get(record.id)).stages[0].facts["lines"]) == 2000  # the report's view


def test_small_facts_stay_inline(jobs: JobStore) -> None:
    record, _ = jobs.create("facts-test", {"words": 3})
    run(jobs, record.id)
    stage = jobs.get(record.id).stages[0]
    assert stage.facts_key is None and len(stage.facts["lines"]) == 3


def test_resume_reads_large_facts_back_and_recomputes_nothing(jobs: JobStore) -> None:
    record, _ = jobs.create("facts-test", {"words": 2000})
    run(jobs, record.id)
    first = jobs.get(record.id)
    expire_lease(jobs, record.id)  # the runner died after both commits, before its final write
    ctx = run(jobs, record.id)
    assert calls == Counter(transcribe=1, count=1), "both stages restored, the second one's fingerprint too"
    assert len(ctx.output(Transcribed).lines) == 2000
    assert [s.fingerprint for s in jobs.get(record.id).stages] == [s.fingerprint for s in first.stages]


def test_a_facts_object_that_does_not_verify_is_recomputed(jobs: JobStore) -> None:
    record, _ = jobs.create("facts-test", {"words": 2000})
    run(jobs, record.id)
    key = jobs.get(record.id).stages[0].facts_key
    assert key is not None
    jobs.storage.put_bytes(key, b'{"lines": []}')
    expire_lease(jobs, record.id)
    ctx = run(jobs, record.id)
    assert calls["transcribe"] == 2 and len(ctx.output(Transcribed).lines) == 2000
