"""Music jobs steered by an upload: the request's rules, and the generate stage routing a melody to
MusicGen-Melody and a continuation to MusicGen.

The stage runs under the real `StageRunner` with the embedded S3 server. `ReplicaInProcess` is a named
test double for a `DeploymentHandle`: it instantiates the deployment's own class (debug weights, CPU) in
this process and awaits its methods, so no Ray cluster is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from deployments.families.music import MusicGenDeployment
from deployments.families.musicgen_melody import MusicGenMelodyDeployment
from infra.audio import Audio, decode, encode
from infra.jobs import JobStore
from infra.storage import Storage, upload_key
from models.musicgen import MusicGen
from models.musicgen_melody import MusicGenMelody
from pipelines.engine.stages import Stage, StageContext, StageRunner
from pipelines.jobs.generation import MUSIC_JOB, MusicJobRequest, generate_clip

UPLOAD_A = "a" * 32
UPLOAD_B = "b" * 32
RATE = 32000


class ReplicaInProcess:
    """Test double for a DeploymentHandle: `handle.method.remote(*args)` awaits the method of one
    in-process instance of the deployment class."""

    def __init__(self, deployment: Any, *args: Any) -> None:
        self.replica = deployment.func_or_class(*args)

    def __getattr__(self, method: str) -> Any:
        call: Callable[..., Awaitable[Any]] = getattr(self.replica, method)

        class Remote:
            @staticmethod
            def remote(*args: Any) -> Awaitable[Any]:
                return call(*args)

        return Remote


def sine(frequency_hz: float, seconds: float) -> Audio:
    t = np.arange(round(seconds * RATE)) / RATE
    return Audio((0.5 * np.sin(2 * np.pi * frequency_hz * t))[None].astype(np.float32), RATE)


@pytest.fixture(scope="module")
def handles() -> dict[str, Any]:
    return {
        "MusicGen": ReplicaInProcess(MusicGenDeployment, "debug", "cpu"),
        "MusicGenMelody": ReplicaInProcess(MusicGenMelodyDeployment, "debug", "cpu"),
    }


def run_generate(storage: Storage, handles: dict[str, Any], body: dict[str, Any]) -> StageContext:
    jobs = JobStore(storage)
    request = MusicJobRequest.model_validate(body).with_seed().model_dump()
    record, _ = jobs.create(MUSIC_JOB, request)
    claimed = jobs.claim(record.id, "test-runner", lease_s=60)
    assert claimed is not None
    return asyncio.run(StageRunner(jobs, claimed, handles).run([Stage("generate", generate_clip)]))


def put_upload(storage: Storage, upload_id: str, audio: Audio) -> None:
    storage.put_bytes(upload_key(upload_id, "source"), encode(audio, "wav"))


def test_continuation_keeps_the_clip_and_reaches_the_total_length(
    storage: Storage, handles: dict[str, Any]
) -> None:
    clip = sine(440.0, 0.3)
    put_upload(storage, UPLOAD_A, clip)
    body = {"prompt": "piano", "duration_s": 0.5, "seed": 5, "continue_upload_id": UPLOAD_A}
    ctx = run_generate(storage, handles, body)
    facts = ctx.facts("generate")
    assert facts["conditioning"] == {"kind": "continuation", "upload_id": UPLOAD_A}
    assert facts["model"]["weights"] == "debug-random" and facts["seed"] == 5
    audio = decode(ctx.object("generate", "audio.wav"))
    assert audio.samples.shape == (1, round(0.5 * RATE))
    (expected,) = MusicGen.from_pretrained("debug", device="cpu").continue_audio(
        clip, ["piano"], duration_s=0.5, seed=5
    )
    np.testing.assert_allclose(audio.samples, expected.samples, rtol=0, atol=1e-5)


def test_melody_goes_to_musicgen_melody(storage: Storage, handles: dict[str, Any]) -> None:
    melody = sine(440.0, 1.0)
    put_upload(storage, UPLOAD_B, melody)
    body = {"prompt": "strings", "duration_s": 0.4, "seed": 9, "melody_upload_id": UPLOAD_B}
    ctx = run_generate(storage, handles, body)
    assert ctx.facts("generate")["conditioning"] == {"kind": "melody", "upload_id": UPLOAD_B}
    audio = decode(ctx.object("generate", "audio.wav"))
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
