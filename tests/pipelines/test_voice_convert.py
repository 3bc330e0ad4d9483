"""The voice-convert job without Ray: its stages run by the real `StageRunner` against the embedded S3
server (a bucket of its own), with in-process doubles of the separation, pitch and SVC clients (the
real models are tested in tests/models and on the stack in tests/deployments/test_voice_convert_http.py)."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from infra.audio import Audio, encode
from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage
from infra.svc_voice_store import save_svc_voice
from infra.uploads import store_upload
from models.types import ConvertedVoice, ModelInfo, PitchContour
from pipelines.engine.kinds import Admission, AdmissionError
from pipelines.engine.stages import job_result
from pipelines.jobs.voice_convert import VOICE_CONVERT_KIND, VoiceConvertJobRequest, admit_voice_convert
from pipelines.jobs.voice_convert_stages import singing_gate
from tests.pipelines.test_audio_jobs import Card, FakeSeparation, resume, run_kind
from tests.pipelines.test_stages import models_with

RATE = 48000
DEBUG = ModelInfo("debug", None, "debug-random")


@pytest.fixture(scope="module")
def own(settings: Settings) -> tuple[Storage, Settings]:
    """A bucket of this module's own, so the session stack's runners never claim these jobs."""
    mine = settings.model_copy(update={"s3_bucket": f"vc-{uuid.uuid4().hex[:8]}"})
    storage = Storage(mine)
    storage.ensure_bucket()
    return storage, mine


class FakePitch(Card):
    """Double of `PitchClient.detect`: 200 Hz, voiced wherever the input is not silent."""

    deployment = "Pitch"

    async def detect(self, *, audio: Audio, **_: Any) -> PitchContour:
        hop = 0.016
        times = np.arange(0.0, audio.duration_s, hop)
        idx = np.minimum((times * audio.sample_rate).astype(int), audio.num_samples - 1)
        voiced = np.abs(audio.samples[0, idx]) > 0
        return PitchContour(times, np.where(voiced, 200.0, 0.0), voiced.astype(float), voiced, hop)


class FakeSVC(Card):
    """Double of `SVCClient`: a 40 kHz sine at the window's median voiced F0; records its calls."""

    deployment = "SVC"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.in_flight = self.most_in_flight = 0

    async def convert(
        self, *, audio: Audio, pitch: PitchContour, voice_uri: str, speaker: int, seed: int
    ) -> ConvertedVoice:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)  # lets the other segments' calls start, so the limit is exercised
        self.in_flight -= 1
        voiced = pitch.f0_hz[pitch.voiced]
        f0 = float(np.median(voiced)) if len(voiced) else 0.0
        self.calls.append({"uri": voice_uri, "speaker": speaker, "seed": seed, "f0": f0})
        t = np.arange(round(audio.duration_s * 40000)) / 40000
        return ConvertedVoice(
            Audio((0.2 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)[None], 40000), seed, DEBUG, DEBUG
        )


def song(seconds: float, rate: int = RATE) -> Audio:
    """Stereo: a 220 Hz 'voice' that is silent from 2 s to 4 s, plus quiet noise ('instrumental')."""
    t = np.arange(round(seconds * rate)) / rate
    voice = 0.3 * np.sin(2 * np.pi * 220 * t) * ~((t >= 2.0) & (t < 4.0))
    return Audio(np.stack([voice, voice]).astype(np.float32), rate)


def instrumental(seconds: float) -> Audio:
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, (2, round(seconds * RATE)))
    return Audio(noise.astype(np.float32), RATE)


def upload(storage: Storage, settings: Settings, audio: Audio, owner: str | None = None) -> str:
    return store_upload(storage, encode(audio, "wav", bits=16), "in.wav", settings, owner).upload_id


def admitted(
    storage: Storage, settings: Settings, owner: str | None = None, **fields: Any
) -> VoiceConvertJobRequest:
    admission = Admission(
        storage=storage, jobs=JobStore(storage), settings=settings, models=models_with(), owner=owner
    )
    request = VoiceConvertJobRequest.model_validate(fields)
    return asyncio.run(admit_voice_convert(request, admission))


def pcm(storage: Storage, key: str) -> tuple[np.ndarray, Any]:
    body = storage.get_bytes(key)
    return sf.read(io.BytesIO(body), dtype="int16", always_2d=True)[0].T, sf.info(io.BytesIO(body))


def test_separated_song_is_split_converted_in_segments_and_stored(own: tuple[Storage, Settings]) -> None:
    storage, settings = own
    fields = admitted(
        storage,
        settings,
        upload_id=upload(storage, settings, song(12.0)),
        voice_model="debug",
        segment_s=5.0,
        seed=7,
    ).model_dump()
    svc, separation = FakeSVC(), FakeSeparation()
    models = models_with(separation=separation, pitch=FakePitch(), svc=svc)
    job_id, ctx = run_kind(storage, VOICE_CONVERT_KIND, fields, models)
    result = job_result(ctx)
    assert result["metadata"]["segments"] == 3 and len(svc.calls) == 3 and separation.segments == 3
    assert {c["uri"] for c in svc.calls} == {"debug"} and sorted(c["seed"] for c in svc.calls) == [7, 8, 9]
    assert result["metadata"]["weights"] == "debug-random" and result["metadata"]["profile"] == "balanced"
    mix, info = pcm(storage, result["audio"]["key"])
    assert (info.samplerate, info.subtype, info.format, mix.shape) == (48000, "PCM_16", "WAV", (2, 12 * RATE))
    vocals, _ = pcm(storage, result["vocals"]["key"])
    assert vocals.shape == (1, 12 * RATE)
    assert job_result(resume(storage, VOICE_CONVERT_KIND, job_id, models)) == result and len(svc.calls) == 3


def test_instrumental_is_sample_equal_where_nothing_is_sung(own: tuple[Storage, Settings]) -> None:
    storage, settings = own
    backing = instrumental(6.0)
    request = admitted(
        storage,
        settings,
        upload_id=upload(storage, settings, song(6.0)),
        voice_model="debug",
        instrumental_upload_id=upload(storage, settings, backing),
        segment_s=5.0,
    )
    models = models_with(pitch=FakePitch(), svc=FakeSVC())  # no separation double: it must not be called
    _, ctx = run_kind(storage, VOICE_CONVERT_KIND, request.model_dump(), models)
    mix, _ = pcm(storage, job_result(ctx)["audio"]["key"])
    given = sf.read(io.BytesIO(encode(backing, "wav", bits=16)), dtype="int16")[0].T  # the upload's samples
    silent = slice(round(2.1 * RATE), round(3.9 * RATE))
    assert np.array_equal(mix[:, silent], given[:, silent])
    assert not np.array_equal(mix[:, : 2 * RATE], given[:, : 2 * RATE])  # sung: vocals added


@pytest.mark.parametrize("semitones", [12.0, -5.0])
def test_semitones_transpose_the_f0_sent_to_the_voice_model(
    own: tuple[Storage, Settings], semitones: float
) -> None:
    storage, settings = own
    request = admitted(
        storage,
        settings,
        upload_id=upload(storage, settings, song(3.0)),
        voice_model="debug",
        instrumental_upload_id=upload(storage, settings, instrumental(3.0)),
        semitones=semitones,
    )
    svc = FakeSVC()
    _, ctx = run_kind(
        storage, VOICE_CONVERT_KIND, request.model_dump(), models_with(pitch=FakePitch(), svc=svc)
    )
    assert svc.calls[0]["f0"] == pytest.approx(200.0 * 2 ** (semitones / 12))
    assert job_result(ctx)["metadata"]["median_f0_hz"] == pytest.approx(200.0 * 2 ** (semitones / 12))


@pytest.mark.parametrize(
    ("profile", "expected"),
    [("fast", (44100, "WAV", "PCM_16", 8)), ("quality", (48000, "FLAC", "PCM_24", 2))],
)
def test_profiles_set_the_output_format_and_the_fan_out(
    own: tuple[Storage, Settings], profile: str, expected: tuple[int, str, str, int]
) -> None:
    storage, settings = own
    request = admitted(
        storage,
        settings,
        upload_id=upload(storage, settings, song(30.0, 8000)),
        voice_model="debug",
        instrumental_upload_id=upload(storage, settings, song(30.0, 8000)),
        profile=profile,
        segment_s=5.0,
        overlap_s=0.5,
    )
    svc = FakeSVC()
    _, ctx = run_kind(
        storage, VOICE_CONVERT_KIND, request.model_dump(), models_with(pitch=FakePitch(), svc=svc)
    )
    _, info = pcm(storage, job_result(ctx)["audio"]["key"])
    assert (info.samplerate, info.format, info.subtype) == expected[:3]
    assert len(svc.calls) == 7 and 1 < svc.most_in_flight <= expected[3]


def test_admission_resolves_a_registered_voice_model_per_tenant(own: tuple[Storage, Settings]) -> None:
    storage, settings = own
    song_id = upload(storage, settings, song(1.0), owner="tenant-a")
    voice = save_svc_voice(storage, "alto", "s3://models/alto", "uri", owner="tenant-a")
    request = admitted(
        storage,
        settings,
        "tenant-a",
        upload_id=song_id,
        voice_model=voice.voice_model_id,
        voice_uri="/etc/elsewhere",
    )
    assert request.voice_uri == "s3://models/alto" and request.seed is not None  # never the caller's URI
    with pytest.raises(AdmissionError) as other:
        their_song = upload(storage, settings, song(1.0), owner="tenant-b")
        admitted(storage, settings, "tenant-b", upload_id=their_song, voice_model=voice.voice_model_id)
    assert (other.value.status, other.value.code) == (404, "voice_model_not_found")


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"segment_s": 5.0, "overlap_s": 3.0}, 422),
        ({"voice_model": "0" * 32}, 404),
        ({"instrumental_s": 2.0}, 422),
    ],
)
def test_admission_refuses_bad_requests(
    own: tuple[Storage, Settings], fields: dict[str, Any], status: int
) -> None:
    storage, settings = own
    base: dict[str, Any] = {"upload_id": upload(storage, settings, song(1.0)), "voice_model": "debug"}
    if "instrumental_s" in fields:
        base["instrumental_upload_id"] = upload(storage, settings, instrumental(fields.pop("instrumental_s")))
    with pytest.raises(AdmissionError) as refused:
        admitted(storage, settings, **(base | fields))
    assert refused.value.status == status


def test_the_gate_is_exactly_zero_away_from_singing() -> None:
    gate = singing_gate(song(6.0))
    assert (gate[round(2.1 * RATE) : round(3.9 * RATE)] == 0).all()
    assert (gate[round(0.1 * RATE) : round(1.9 * RATE)] == 1).all()
    assert gate[round(1.9 * RATE) :].max() > 0 and gate.min() == 0
