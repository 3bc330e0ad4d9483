"""A stage whose model is scaled to zero: the stage runner marks the job `waiting for model …` while the
cold start runs (the model's first call), then clears the mark and runs the stage (real job store and
embedded S3 in a bucket of its own; the cold probe and the generator are in-process doubles)."""

from __future__ import annotations

import asyncio

from infra.jobs import JobStore
from models.types import Sampling
from pipelines.engine.clients import ModelCard
from pipelines.engine.stages import StageRunner
from pipelines.jobs.soundscape import SOUNDSCAPE_KIND
from tests.pipelines.test_soundscape import FAST_RETRY, LAYERS, NoiseGenerator, admitted, claimed, jobs
from tests.pipelines.test_stages import models_with

__all__ = ["jobs"]  # the fixture


class ColdGenerator(NoiseGenerator):
    """Its first `info()` is the cold start: it sees what the job record says meanwhile."""

    def __init__(self, store: JobStore) -> None:
        super().__init__()
        self.store = store
        self.details_seen: list[str | None] = []
        self.job_id = ""

    async def info(self) -> ModelCard:
        if self.job_id:
            self.details_seen.append(self.store.get(self.job_id).detail)
        return await super().info()

    async def generate(self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling) -> object:  # type: ignore[override]
        self.details_seen.append(self.store.get(self.job_id).detail)
        return await super().generate(prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling)


def test_a_job_waits_for_a_cold_model_and_says_so(jobs: JobStore) -> None:
    sfx = ColdGenerator(jobs)
    job = claimed(jobs, admitted(jobs, {"duration_s": 4.0, "layers": LAYERS[:1]}, sfx))
    sfx.job_id = job.id
    probes: list[list[str]] = []

    async def probe(deployments: list[str]) -> list[str]:
        probes.append(deployments)
        return deployments if len(probes) == 1 else []  # cold for the first stage only

    request = SOUNDSCAPE_KIND.request.model_validate(job.request)
    runner = StageRunner(jobs, job, request, models_with(sfx=sfx), retry=FAST_RETRY, cold_probe=probe)
    asyncio.run(runner.run(SOUNDSCAPE_KIND.stages))
    assert probes == [["AudioGen"]]  # only stages that call a model ask
    assert sfx.details_seen[0] == "waiting for model AudioGen"  # during the cold start
    assert sfx.details_seen[-1] is None  # cleared before the stage ran
    assert jobs.get(job.id).detail is None
