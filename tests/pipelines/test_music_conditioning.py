"""Music jobs steered by an upload: the request's rules, `admit_music`'s checks, and the generate stage
routing a melody to MusicGen-Melody and a continuation to MusicGen.

The stage runs under the real `StageRunner` with the embedded S3 server. `InProcessMusicGen` and
`InProcessMelody` are doubles of the music and melody clients: each instantiates its deployment's own
class (debug weights, CPU) in this process and awaits its methods, so no Ray cluster is needed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from deployments.families.music import MusicGenDeployment
from deployments.families.musicgen_melody import MusicGenMelodyDeployment
from infra.audio import Audio, decode, encode
from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage, upload_key
from infra.uploads import store_upload
from models.musicgen import MusicGen
from models.musicgen_melody import MusicGenMelody
from models.types import GeneratedAudio, ModelInfo, Sampling
from pipelines.engine.clients import ModelCard, Models
from pipelines.engine.kinds import Admission, AdmissionError
from pipelines.engine.stages import StageContext, StageRunner
from pipelines.jobs.generation import MUSIC_KIND, admit_music
from pipelines.jobs.generation_post import CLIP, Generated
from pipelines.jobs.generation_request import MusicJobRequest
from tests.pipelines.test_stages import models_with

UPLOAD_A = "a" * 32
UPLOAD_B = "b" * 32
RATE = 32000


def in_process(deployment: Any) -> Any:
    """One instance of a Serve deployment's own class (debug weights, CPU) in this process."""
    return deployment.func_or_class("debug", "cpu")


def card(deployment: str, replica: Any) -> ModelCard:
    """The replica's card (its `info()` asks Ray for the GPU share, so it needs a Ray worker)."""
    return ModelCard(deployment, replica.model.info, replica.model.sample_rate, device=replica.device)


class InProcessMusicGen:
    """Double of `MusicClient`: awaits the methods of one in-process `MusicGenDeployment` instance."""

    deployment = "MusicGen"

    def __init__(self) -> None:
        self.replica = in_process(MusicGenDeployment)

    async def info(self) -> ModelCard:
        return card(self.deployment, self.replica)

    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio:
        result: GeneratedAudio = await self.replica.generate(
            prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling
        )
        return result

    async def continue_audio(
        self, *, clip: Audio, prompt: str, duration_s: float, seed: int, sampling: Sampling
    ) -> GeneratedAudio:
        result: GeneratedAudio = await self.replica.continue_audio(
            prompt_audio=clip, prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling
        )
        return result


class InProcessMelody:
    """Double of `MelodyClient`: awaits the methods of one in-process `MusicGenMelodyDeployment`."""

    deployment = "MusicGenMelody"

    def __init__(self) -> None:
        self.replica = in_process(MusicGenMelodyDeployment)

    async def info(self) -> ModelCard:
        return card(self.deployment, self.replica)

    async def generate(
        self, *, prompt: str, duration_s: float, seed: int, sampling: Sampling, melody: Audio
    ) -> GeneratedAudio:
        result: GeneratedAudio = await self.replica.generate(
            prompt=prompt, duration_s=duration_s, seed=seed, sampling=sampling, melody=melody
        )
        return result


class StableAudioCard:
    """Double of the Stable Audio client for admission: its card (with `max_duration_s`), nothing else."""

    deployment = "StableAudio"

    async def info(self) -> ModelCard:
        model = ModelInfo("fake/stable-audio", "r1", "debug-random")
        return ModelCard(self.deployment, model, sample_rate=44100, extra={"max_duration_s": 11.0})

    async def generate(self, **_: Any) -> GeneratedAudio:
        raise AssertionError("admission generates nothing")


def sine(frequency_hz: float, seconds: float) -> Audio:
    t = np.arange(round(seconds * RATE)) / RATE
    return Audio((0.5 * np.sin(2 * np.pi * frequency_hz * t))[None].astype(np.float32), RATE)


@pytest.fixture(scope="module")
def models() -> Models:
    return models_with(music=InProcessMusicGen(), melody=InProcessMelody())


def run_generate(storage: Storage, models: Models, body: dict[str, Any]) -> StageContext[MusicJobRequest]:
    """The `generate` stage of a music job whose request has its seed fixed as admission does."""
    jobs = JobStore(storage)
    request = MusicJobRequest.model_validate(body).with_seed().model_dump(mode="json")
    record, _ = jobs.create(MUSIC_KIND.name, request)
    claimed = jobs.claim(record.id, "test-runner", lease_s=60)
    assert claimed is not None
    runner = StageRunner(jobs, claimed, MusicJobRequest.model_validate(claimed.request), models)
    return asyncio.run(runner.run(MUSIC_KIND.stages[:1]))


def put_upload(storage: Storage, upload_id: str, audio: Audio) -> None:
    storage.put_bytes(upload_key(upload_id, "source"), encode(audio, "wav"))


def test_continuation_keeps_the_clip_and_reaches_the_total_length(storage: Storage, models: Models) -> None:
    clip = sine(440.0, 0.3)
    put_upload(storage, UPLOAD_A, clip)
    body = {"prompt": "piano", "duration_s": 0.5, "seed": 5, "continue_upload_id": UPLOAD_A}
    ctx = run_generate(storage, models, body)
    generated = ctx.output(Generated)
    assert generated.conditioning == {"kind": "continuation", "upload_id": UPLOAD_A}
    assert generated.model.weights == "debug-random" and generated.seed == 5
    assert list(ctx.job.stages[0].models) == ["MusicGen"]  # its weights join the fingerprint
    audio = decode(ctx.object(Generated, CLIP))
    assert audio.samples.shape == (1, round(0.5 * RATE))
    (expected,) = MusicGen.from_pretrained("debug", device="cpu").continue_audio(
        clip, ["piano"], duration_s=0.5, seed=5
    )
    np.testing.assert_allclose(audio.samples, expected.samples, rtol=0, atol=1e-5)


def test_melody_goes_to_musicgen_melody(storage: Storage, models: Models) -> None:
    melody = sine(440.0, 1.0)
    put_upload(storage, UPLOAD_B, melody)
    body = {"prompt": "strings", "duration_s": 0.4, "seed": 9, "melody_upload_id": UPLOAD_B}
    ctx = run_generate(storage, models, body)
    assert ctx.output(Generated).conditioning == {"kind": "melody", "upload_id": UPLOAD_B}
    assert list(ctx.job.stages[0].models) == ["MusicGenMelody"]
    audio = decode(ctx.object(Generated, CLIP))
    model = MusicGenMelody.from_pretrained("debug", device="cpu")
    (expected,) = model.generate(["strings"], melody=melody, duration_s=0.4, seed=9)
    (other_melody,) = model.generate(["strings"], melody=sine(261.63, 1.0), duration_s=0.4, seed=9)
    np.testing.assert_allclose(audio.samples, expected.samples, rtol=0, atol=1e-5)
    assert not np.allclose(audio.samples, other_melody.samples, rtol=0, atol=1e-5)  # the melody counts


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"melody_upload_id": UPLOAD_A, "continue_upload_id": UPLOAD_B}, "at most one"),
        ({"melody_upload_id": UPLOAD_A, "model": "stable-audio"}, "need model 'musicgen'"),
        ({"continue_upload_id": UPLOAD_A, "model": "stable-audio"}, "need model 'musicgen'"),
        ({"melody_upload_id": "../etc/passwd"}, "pattern"),
        ({"continue_upload_id": UPLOAD_A.upper()}, "pattern"),
    ],
)
def test_bad_conditioning_is_rejected(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MusicJobRequest.model_validate({"prompt": "x", **body})


def test_text_only_request_has_no_conditioning() -> None:
    assert MusicJobRequest(prompt="x").conditioning is None


# admission ----------------------------------------------------------------------------------------


def admit(storage: Storage, settings: Settings, body: dict[str, Any], **limits: Any) -> MusicJobRequest:
    """`admit_music` on `{prompt: piano, **body}`, with `limits` overriding the settings."""
    admission = Admission(
        storage=storage,
        jobs=JobStore(storage),
        settings=settings.model_copy(update=limits),
        models=models_with(stable_audio=StableAudioCard()),
    )
    request = MusicJobRequest.model_validate({"prompt": "piano", **body})
    return asyncio.run(admit_music(request, admission))


def refusal(storage: Storage, settings: Settings, body: dict[str, Any], **limits: Any) -> AdmissionError:
    with pytest.raises(AdmissionError) as refused:
        admit(storage, settings, body, **limits)
    return refused.value


def test_admit_music_fixes_the_seed(storage: Storage, settings: Settings) -> None:
    admitted = admit(storage, settings, {"duration_s": settings.max_generation_s})
    assert admitted.seed is not None and 0 <= admitted.seed < 2**31
    assert admitted == MusicJobRequest(
        prompt="piano", duration_s=settings.max_generation_s, seed=admitted.seed
    )
    assert admit(storage, settings, {"seed": 7}).seed == 7  # a given seed is kept


@pytest.mark.parametrize(
    ("body", "limits", "code", "message"),
    [
        ({"duration_s": 300.5}, {"max_long_music_s": 300.0}, "duration_too_long", "limit of 300 s"),
        ({"duration_s": 30.5}, {"max_generation_s": 20.0}, "duration_too_long", "limit of 20 s"),
        ({"duration_s": 12, "model": "stable-audio"}, {}, "duration_too_long", "limit of 11 s"),
        (
            {"duration_s": 8, "model": "stable-audio"},
            {"max_generation_s": 5.0},
            "duration_too_long",
            "of 5 s",
        ),
        ({"prompt": "warm piano"}, {"max_prompt_chars": 5}, "prompt_too_long", "prompt exceeds 5 characters"),
    ],
)
def test_admit_music_limits(
    storage: Storage,
    settings: Settings,
    body: dict[str, Any],
    limits: dict[str, Any],
    code: str,
    message: str,
) -> None:
    refused = refusal(storage, settings, body, **limits)
    assert (refused.status, refused.code) == (422, code) and str(refused).endswith(message)
    if code == "duration_too_long":
        assert str(refused).startswith(f"duration_s {body['duration_s']:g} exceeds the limit of ")


def test_admit_music_checks_the_conditioning_upload(storage: Storage, settings: Settings) -> None:
    unknown = refusal(storage, settings, {"melody_upload_id": "f" * 32})
    assert (unknown.status, unknown.code, str(unknown)) == (
        404,
        "upload_not_found",
        f"no upload with id {'f' * 32!r}",
    )
    long_melody = store_upload(storage, encode(sine(440.0, 31.0), "wav"), "melody.wav", settings).upload_id
    too_long = refusal(storage, settings, {"melody_upload_id": long_melody})
    message = "the melody upload is 31 s; at most 30 s"
    assert (too_long.status, too_long.code, str(too_long)) == (422, "melody_too_long", message)
    clip = store_upload(storage, encode(sine(330.0, 1.0), "wav"), "clip.wav", settings).upload_id
    no_room = refusal(storage, settings, {"continue_upload_id": clip, "duration_s": 1.05})
    message = "duration_s 1.05 is the total length and must exceed the clip's 1 s by at least 0.1 s"
    assert (no_room.status, no_room.code, str(no_room)) == (422, "clip_too_long", message)
    admitted = admit(storage, settings, {"continue_upload_id": clip, "duration_s": 1.1})
    assert admitted.conditioning == {"kind": "continuation", "upload_id": clip} and admitted.seed is not None
