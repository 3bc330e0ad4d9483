"""The soundscape job (`pipelines/jobs/soundscape*.py`, `infra/dsp/layering.py`) through the real
`StageRunner`, job store and embedded S3 (a bucket of its own), with in-process doubles of the AudioGen
and Stable Audio clients (a seeded noise burst each)."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from infra.audio import Audio, decode
from infra.jobs import JobRecord, JobStore
from infra.settings import Settings
from infra.storage import Storage
from models.types import GeneratedAudio, ModelInfo, Sampling
from pipelines.engine.clients import ModelCard
from pipelines.engine.kinds import Admission, AdmissionError
from pipelines.engine.stages import RetryPolicy, StageContext, StageRunner, job_result
from pipelines.jobs.soundscape import SOUNDSCAPE_KIND, admit_soundscape, planned_takes
from pipelines.jobs.soundscape_request import SoundscapeJobRequest
from tests.pipelines.test_stages import models_with

DOUBLE = ModelInfo(model_id="test-double", revision=None, weights="debug-random")
FAST_RETRY = RetryPolicy(tries=2, base_s=0.01)
FRAME = 320  # 20 ms at 16 kHz


class ReplicaDied(RuntimeError):
    """Not transient for the retry policy: the attempt ends, as when its runner is killed."""


class NoiseGenerator:
    """Double of a `TextToAudioClient`: seeded white noise at RMS 0.1, `channels` x `rate`. A prompt
    containing `die_on` fails (after the other takes had time to finish)."""

    def __init__(self, deployment: str = "AudioGen", rate: int = 16000, channels: int = 1) -> None:
        self.deployment, self.rate, self.channels = deployment, rate, channels
        self.calls: list[tuple[str, int, float]] = []
        self.die_on: str | None = None

    async def info(self) -> ModelCard:
        return ModelCard(self.deployment, DOUBLE, self.rate, extra={"max_duration_s": 10.0})

    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio:
        if self.die_on is not None and self.die_on in prompt:
            await asyncio.sleep(0.3)
            raise ReplicaDied("the runner was killed")
        self.calls.append((prompt, seed, duration_s))
        noise = np.random.default_rng(seed).standard_normal((self.channels, round(duration_s * self.rate)))
        return GeneratedAudio(Audio((0.1 * noise).astype(np.float32), self.rate), seed, DOUBLE)


@pytest.fixture
def jobs(settings: Settings) -> JobStore:
    own = Storage(settings.model_copy(update={"s3_bucket": f"soundscape-{uuid.uuid4().hex[:8]}"}))
    own.ensure_bucket()
    return JobStore(own)


def admitted(jobs: JobStore, body: dict[str, Any], sfx: NoiseGenerator) -> SoundscapeJobRequest:
    stable = NoiseGenerator("StableAudio", rate=44100, channels=2)
    models = models_with(sfx=sfx, stable_audio=stable)
    admission = Admission(storage=jobs.storage, jobs=jobs, settings=jobs.storage.settings, models=models)
    request = SoundscapeJobRequest.model_validate({"seed": 5, **body})
    return asyncio.run(admit_soundscape(request, admission))


def claimed(jobs: JobStore, request: SoundscapeJobRequest) -> JobRecord:
    record, _ = jobs.create(SOUNDSCAPE_KIND.name, request.model_dump(mode="json"))
    job = jobs.claim(record.id, "test-runner", lease_s=60)
    assert job is not None
    return job


def run(jobs: JobStore, job: JobRecord, **clients: NoiseGenerator) -> StageContext[Any]:
    request = SOUNDSCAPE_KIND.request.model_validate(job.request)
    runner = StageRunner(jobs, job, request, models_with(**clients), retry=FAST_RETRY)
    return asyncio.run(runner.run(SOUNDSCAPE_KIND.stages))


def fetch(jobs: JobStore, entry: dict[str, Any]) -> Audio:
    return decode(jobs.storage.get_bytes(entry["key"]))


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def onset_s(samples: np.ndarray, rate: int, after_s: float = 0.0) -> float:
    """Start of the first 20 ms frame after `after_s` whose level is within 20 dB of the loudest frame's."""
    frames = samples[0, : samples.shape[1] // FRAME * FRAME].reshape(-1, FRAME)
    levels = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-20)
    loud = np.flatnonzero((levels > levels.max() - 20) & (np.arange(len(levels)) * FRAME >= after_s * rate))
    return float(loud[0] * FRAME / rate)


LAYERS: list[dict[str, Any]] = [
    {"prompt": "a dog barks", "start_s": 0.5, "duration_s": 1.0, "gain_db": 0.0},
    {"prompt": "a door slams", "start_s": 2.0, "duration_s": 0.8, "gain_db": -6.0},
    {"prompt": "a bell rings", "start_s": 3.2, "duration_s": 0.6, "gain_db": -12.0},
]


def test_layers_are_placed_at_their_start_and_gain(jobs: JobStore) -> None:
    sfx = NoiseGenerator()
    request = admitted(jobs, {"duration_s": 4.0, "layers": LAYERS, "loudness_lufs": None}, sfx)
    result = job_result(run(jobs, claimed(jobs, request), sfx=sfx))
    mix = fetch(jobs, result["audio"])
    assert (mix.sample_rate, mix.samples.shape) == (16000, (1, 64000))
    assert result["metadata"]["weights"] == "debug-random"
    levels = []
    for layer, entry in zip(LAYERS, result["layers"], strict=True):
        start, end = float(layer["start_s"]), float(layer["start_s"]) + float(layer["duration_s"])
        assert abs(onset_s(mix.samples, 16000, after_s=start - 0.3) - start) <= FRAME / 16000
        inside = mix.samples[:, round((start + 0.05) * 16000) : round((end - 0.05) * 16000)]
        take = fetch(jobs, entry["audio"]).samples
        levels.append(rms_db(inside) - rms_db(take[:, 800:-800]))
    assert levels == pytest.approx([0.0, -6.0, -12.0], abs=0.5)
    gaps = [(0.0, 0.49), (1.51, 1.99), (2.81, 3.19), (3.81, 4.0)]
    assert all(not mix.samples[:, round(a * 16000) : round(b * 16000)].any() for a, b in gaps)


def test_stems_add_up_to_the_master(jobs: JobStore) -> None:
    sfx = NoiseGenerator()
    stable = NoiseGenerator("StableAudio", rate=44100, channels=2)
    layers = [*LAYERS[:2], {**LAYERS[2], "model": "stable-audio"}]
    body = {"duration_s": 4.0, "layers": layers, "bed": {"prompt": "room tone", "gain_db": -20.0}}
    request = admitted(jobs, body, sfx)
    result = job_result(run(jobs, claimed(jobs, request), sfx=sfx, stable_audio=stable))
    mix = fetch(jobs, result["audio"])
    assert (mix.sample_rate, mix.channels) == (44100, 2)  # the highest rate and channel count
    archive = zipfile.ZipFile(io.BytesIO(jobs.storage.get_bytes(result["stems"]["key"])))
    assert archive.namelist() == ["layer-00.wav", "layer-01.wav", "layer-02.wav", "bed.wav"]
    stems = [decode(archive.read(name)).samples for name in archive.namelist()]
    np.testing.assert_allclose(sum(stems), mix.samples, atol=1e-5)
    assert result["metadata"]["loudness_lufs"] == pytest.approx(-14.0, abs=0.3)
    assert {layer["deployment"] for layer in result["layers"]} == {"AudioGen", "StableAudio"}


def test_a_looped_layer_fills_its_span_from_a_short_clip(jobs: JobStore) -> None:
    sfx = NoiseGenerator()
    layer = {"prompt": "rain", "start_s": 1.0, "duration_s": 3.0, "loop": True, "clip_s": 1.0}
    request = admitted(jobs, {"duration_s": 5.0, "layers": [layer], "loudness_lufs": None}, sfx)
    result = job_result(run(jobs, claimed(jobs, request), sfx=sfx))
    assert sfx.calls == [("rain", request.layer_seed(0), 1.0)]
    mix = fetch(jobs, result["audio"]).samples
    frames = mix[0, 16000:64000].reshape(-1, FRAME)
    levels = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1))
    assert levels[1:-1].max() - levels[1:-1].min() < 3.0  # no dropout at the repeats
    assert not mix[:, :16000].any() and not mix[:, 64000:].any()


def test_resume_regenerates_only_the_missing_layers(jobs: JobStore) -> None:
    body = {"duration_s": 4.0, "layers": LAYERS}
    dying = NoiseGenerator()
    dying.die_on = "bell"
    job = claimed(jobs, admitted(jobs, body, dying))
    with pytest.raises(Exception, match="killed"):
        run(jobs, job, sfx=dying)
    assert sorted(c[0] for c in dying.calls) == ["a dog barks", "a door slams"]
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    sfx = NoiseGenerator()
    first = job_result(run(jobs, resumed, sfx=sfx))
    assert [c[0] for c in sfx.calls] == ["a bell rings"]
    whole = NoiseGenerator()
    fresh = job_result(run(jobs, claimed(jobs, admitted(jobs, body, whole)), sfx=whole))
    np.testing.assert_array_equal(fetch(jobs, first["audio"]).samples, fetch(jobs, fresh["audio"]).samples)


def test_admission_fixes_loops_and_refuses_long_takes(jobs: JobStore) -> None:
    sfx = NoiseGenerator()
    settings = jobs.storage.settings
    loop = {"prompt": "wind", "start_s": 0.0, "duration_s": 100.0, "loop": True}
    request = admitted(jobs, {"duration_s": 120.0, "layers": [loop], "bed": {"prompt": "hum"}}, sfx)
    assert request.layers[0].clip_s == settings.max_generation_s
    assert [t.duration_s for t in planned_takes(request)] == [settings.max_generation_s] * 2
    long = {**loop, "loop": False}
    with pytest.raises(AdmissionError, match=r"layers\.0\.duration_s") as refused:
        admitted(jobs, {"duration_s": 120.0, "layers": [long]}, sfx)
    assert refused.value.code == "layer_too_long" and refused.value.status == 422
    stable = {"prompt": "x", "start_s": 0.0, "duration_s": 11.0, "model": "stable-audio"}
    with pytest.raises(AdmissionError, match=r"layers\.0\.duration_s"):
        admitted(jobs, {"duration_s": 20.0, "layers": [stable]}, sfx)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration_s": 4.0, "layers": [{**LAYERS[0], "start_s": 3.5}]}, "layers.0.duration_s"),
        ({"duration_s": 4.0, "layers": [{**LAYERS[0], "gain_db": float("nan")}]}, "gain_db"),
        ({"duration_s": float("inf"), "layers": LAYERS}, "duration_s"),
        ({"duration_s": 4.0, "layers": []}, "layers"),
        ({"duration_s": 4.0, "layers": LAYERS * 6}, "layers"),
        ({"duration_s": 400.0, "layers": LAYERS}, "duration_s"),
        ({"duration_s": 4.0, "layers": LAYERS, "bed": {"gain_db": -3}}, "bed"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        SoundscapeJobRequest.model_validate(body)
    error = refused.value.errors()[0]
    assert field in ".".join(str(p) for p in error["loc"]) + " " + error["msg"]
