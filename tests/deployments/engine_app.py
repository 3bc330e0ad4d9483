"""A small Serve app for the engine's fault tests on the real Ray cluster: the real JobRunner (a subclass
that also knows three test job kinds) and a model deployment that sleeps, on a bucket of its own.

The job kinds are test doubles of real ones, shaped for the faults under test:
- `engine-hold`: one stage whose thread waits for a release object, then writes an output object named
  after its attempt, without ever looking at the cancel token (the worst case of threaded work: it runs
  on after its attempt was superseded);
- `engine-wedge` / `engine-wedge-long`: one stage whose model call never returns (the `Sleeper`
  deployment sleeps for an hour), with a 3 s and a 120 s stage deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel
from ray import serve

from deployments.families.client import DeploymentClient
from deployments.runner import JobRunner
from infra.settings import load_settings
from infra.storage import ObjectNotFoundError, Storage, output_key
from pipelines.engine import registry
from pipelines.engine.clients import Models
from pipelines.engine.kinds import JobKind
from pipelines.engine.stages import Stage, StageContext, StageResult, Stored

HOLD, WEDGE, WEDGE_LONG = "engine-hold", "engine-wedge", "engine-wedge-long"
SLEEPER: list[SleeperClient] = []  # set by the runner replica's constructor


class HoldRequest(BaseModel):
    release_key: str


class WedgeRequest(BaseModel):
    tag: str


def hold_body(job_id: str, attempt: int) -> bytes:
    """What attempt `attempt` of a hold job writes as its output."""
    return f"{job_id} written by attempt {attempt}\n".encode() * 64


def _wait_and_write(storage: Storage, job_id: str, attempt: int, release_key: str) -> str:
    ends = time.monotonic() + 120
    while True:
        try:
            storage.get_bytes(release_key)
            break
        except ObjectNotFoundError:
            if time.monotonic() > ends:
                raise TimeoutError(f"{release_key} never appeared") from None
            time.sleep(0.1)
    key = output_key(job_id, "out.bin", attempt)
    storage.put_bytes(key, hold_body(job_id, attempt))
    return key


async def hold(ctx: StageContext[HoldRequest]) -> StageResult:
    key = await asyncio.to_thread(
        _wait_and_write, ctx.storage, ctx.job.id, ctx.job.attempt, ctx.request.release_key
    )
    return StageResult(record=Stored(result={"out": {"key": key}}))


async def wedge(ctx: StageContext[WedgeRequest]) -> StageResult:
    assert SLEEPER, "the sleeper client is set by EngineTestRunner"
    await SLEEPER[0].sleep(seconds=3600.0, tag=ctx.request.tag)
    return StageResult(record=Stored(result={}))


TEST_KINDS: dict[str, JobKind[Any]] = {
    HOLD: JobKind(HOLD, HoldRequest, (Stage("hold", hold, output=Stored),), stage_timeout_s=120),
    WEDGE: JobKind(WEDGE, WedgeRequest, (Stage("wedge", wedge, output=Stored),), stage_timeout_s=3),
    WEDGE_LONG: JobKind(
        WEDGE_LONG, WedgeRequest, (Stage("wedge", wedge, output=Stored),), stage_timeout_s=120
    ),
}


class Sleeper:
    """A model deployment that never answers in time; a cancelled call leaves `cancelled/{tag}`."""

    def __init__(self) -> None:
        self.storage = Storage(load_settings())

    async def sleep(self, seconds: float, tag: str) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            await asyncio.to_thread(self.storage.put_bytes, f"cancelled/{tag}", b"1")
            raise


class SleeperClient(DeploymentClient):
    async def sleep(self, *, seconds: float, tag: str) -> None:
        await self._call("sleep", seconds=seconds, tag=tag)


class NoModel:
    """A model client the test kinds never use."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment


def no_models() -> Models:
    return Models(**{name: NoModel(name) for name in Models.__dataclass_fields__})  # type: ignore[arg-type]


class EngineTestRunner(JobRunner.func_or_class):  # type: ignore[name-defined]
    def __init__(self, sleeper: SleeperClient) -> None:
        registry.JOB_KINDS.update(TEST_KINDS)
        SLEEPER[:] = [sleeper]
        super().__init__(no_models())


def engine_app(env: dict[str, str], runners: int) -> Any:
    """The app: `runners` JobRunner replicas and one Sleeper, every replica with `env`."""
    options = {"num_cpus": 0, "runtime_env": {"env_vars": env}}
    sleeper = serve.deployment(name="Sleeper", ray_actor_options=options, max_ongoing_requests=16)(Sleeper)
    runner = serve.deployment(
        name="EngineTestRunner",
        num_replicas=runners,
        ray_actor_options=options,
        max_ongoing_requests=4,
        graceful_shutdown_timeout_s=30,
        health_check_period_s=2,
    )(EngineTestRunner)
    for deployment in (sleeper, runner):
        # One fixed code version: a redeploy that changes only `num_replicas` then scales the running
        # replicas (a real downscale) instead of replacing them all (Serve's default for `serve.run`).
        # Private, knowingly: Ray 2.60 removed `version` from `@serve.deployment` and `.options()` (both
        # raise ValueError), and `serve.run` gives a deployment without one a new version every time;
        # the only public in-place rescale is the declarative deploy (a config naming an import path,
        # whose hash is the code version), which this in-process app of test doubles does not have.
        deployment._version = "engine-faults-1"
    return runner.bind(SleeperClient(sleeper.bind(), "Sleeper"))
