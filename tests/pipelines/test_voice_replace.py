"""The voice-replacement pipeline through the real `StageRunner`, job store and embedded S3 (no Ray),
and its admission.

The model clients are in-process doubles of the client protocols (pipelines/engine/clients.py): they
wrap the real model objects (hibari TTS, Whisper tiny.en, silero VAD + resemblyzer + the project's
clustering for the Diarizer, debug HTDemucs) in this process, with keyword-only async methods, the
deployment's name and its `ModelCard`. The HTTP test (tests/deployments/test_voice_replace_http.py)
runs the same pipeline on the Ray stack.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from infra.audio import Audio, decode, encode
from infra.dsp.diarization import diarize
from infra.dsp.regions import Turn
from infra.jobs import JobRecord, JobStore
from infra.settings import Settings
from infra.storage import Storage, upload_key
from infra.uploads import store_upload
from infra.voice_store import save_voice
from models.types import Transcript
from pipelines.engine.clients import ModelCard, Models
from pipelines.engine.kinds import Admission, AdmissionError
from pipelines.engine.stages import RetryPolicy, StageFailedError, StageRunner, job_result
from pipelines.jobs.voice_replace import VOICE_REPLACE_KIND, VoiceReplaceJobRequest, admit_voice_replace
from tests.dialog import Dialog, build_dialog

FAST_RETRY = RetryPolicy(tries=1, base_s=0.01)
T = TypeVar("T")


class InProcess:
    """What every client double has: the deployment's name, its card, and a call counter; a model call
    runs the blocking model in a thread, as a replica would run it remotely."""

    def __init__(self, deployment: str, model: Any, calls: Counter[str]) -> None:
        self.deployment, self.model, self.calls = deployment, model, calls

    async def info(self) -> ModelCard:
        return ModelCard(
            deployment=self.deployment, model=self.model.info, sample_rate=self.model.sample_rate
        )

    async def _call(self, fn: Callable[[], T]) -> T:
        self.calls[self.deployment] += 1
        return await asyncio.to_thread(fn)


class TTS(InProcess):
    async def synthesize(self, *, text: str, voice: str, speed: float = 1.0) -> Audio:
        return await self._call(lambda: self.model.synthesize([text], voice=voice, speed=speed)[0])

    async def voices(self) -> list[str]:
        return list(self.model.voices.names())


class ASR(InProcess):
    async def transcribe(
        self, *, audio: Audio, language: str | None = None, word_timestamps: bool = False
    ) -> Transcript:
        return await self._call(
            lambda: self.model.transcribe(audio, language=language, word_timestamps=word_timestamps)
        )


class Diarizer(InProcess):
    """VAD regions, speaker embeddings of windows, the project's clustering (as the deployment does)."""

    def __init__(self, vad: Any, encoder: Any, calls: Counter[str]) -> None:
        super().__init__("Diarizer", encoder, calls)
        self.vad = vad

    async def diarize(self, *, audio: Audio, num_speakers: int | None = None) -> list[Turn]:
        def run() -> list[Turn]:
            regions = self.vad.detect(audio)
            embeddings, windows = self.model.embed_windows(audio, regions)
            return diarize(regions, embeddings, windows, num_speakers)

        return await self._call(run)


class Separation(InProcess):
    async def separate(self, *, audio: Audio) -> dict[str, Audio]:
        return await self._call(lambda: self.model.separate(audio))


class Absent:
    """A client this test never calls: any use fails."""

    def __init__(self, name: str) -> None:
        self.deployment = name

    def __getattr__(self, attribute: str) -> Any:
        raise AssertionError(f"the {self.deployment} client was not expected to be used ({attribute})")


class StockVoices(Absent):
    """A TTS client for admission: its stock voices, nothing else."""

    async def voices(self) -> list[str]:
        return ["bella", "heart"]


def models_of(**clients: Any) -> Models:
    """A `Models` record of the given clients, every other family `Absent`."""
    return Models(**{name: clients.get(name, Absent(name)) for name in Models.__dataclass_fields__})


@pytest.fixture(scope="module")
def calls() -> Counter[str]:
    return Counter()


@pytest.fixture(scope="module")
def models(calls: Counter[str]) -> Models:
    from models.demucs import Demucs
    from models.speaker import SpeakerEncoder
    from models.tts import StockTTS
    from models.vad import VoiceActivityDetector
    from models.whisper import Whisper

    vad, encoder = VoiceActivityDetector.from_pretrained(), SpeakerEncoder.from_pretrained(device="cpu")
    return models_of(
        tts=TTS("TTS", StockTTS.from_pretrained(), calls),
        asr=ASR("ASR", Whisper.from_pretrained(device="cpu"), calls),
        diarizer=Diarizer(vad, encoder, calls),
        separation=Separation("Separation", Demucs.from_pretrained("debug", device="cpu"), calls),
    )


@pytest.fixture(scope="module")
def dialog() -> Dialog:
    from models.tts import StockTTS

    return build_dialog(StockTTS.from_pretrained())


def upload(storage: Storage, audio: Audio) -> str:
    upload_id = secrets.token_hex(16)
    storage.put_bytes(upload_key(upload_id, "source"), encode(audio, "wav"))
    return upload_id


def claimed(storage: Storage, request: dict[str, Any]) -> tuple[JobStore, JobRecord]:
    jobs = JobStore(storage)
    record, _ = jobs.create(VOICE_REPLACE_KIND.name, request)
    job = jobs.claim(record.id, "test-runner", lease_s=600)
    assert job is not None
    return jobs, job


def run(jobs: JobStore, job: JobRecord, models: Models) -> dict[str, Any]:
    request = VoiceReplaceJobRequest.model_validate(job.request)
    runner = StageRunner(jobs, job, request, models, retry=FAST_RETRY, version=VOICE_REPLACE_KIND.version)
    return job_result(asyncio.run(runner.run(VOICE_REPLACE_KIND.stages)))


def test_replaces_one_speaker_and_resumes_from_checkpoints(
    storage: Storage, models: Models, dialog: Dialog, calls: Counter[str]
) -> None:
    request = {"upload_id": upload(storage, dialog.audio), "voice": "heart", "target_speaker": "SPEAKER_01"}
    jobs, job = claimed(storage, request)
    result = run(jobs, job, models)
    out = decode(storage.get_bytes(result["audio"]["key"]))
    assert abs(out.num_samples - dialog.audio.num_samples) <= 0.02 * out.sample_rate
    report = json.loads(storage.get_bytes(result["report"]["key"]))
    assert report["target_speaker"] == "SPEAKER_01" and report["debug_weights"] == []
    assert sorted(report["models"]) == sorted(result["metadata"]["models"]) == ["ASR", "Diarizer", "TTS"]
    assert len(report["lines"]) == sum(1 for *_, s in dialog.turns if s == "B")
    for line in report["lines"]:
        assert 0.8 <= line["stretch"] <= 1.25 and line["overlap_s"] >= 0.0
        assert {"region_samples", "cut_s", "text", "synthesized_s"} <= set(line)
    # Speaker A's first turn is untouched.
    first_end = round((dialog.turns[0][1] + 0.2) * out.sample_rate)
    np.testing.assert_array_equal(out.samples[:, :first_end], dialog.audio.samples[:, :first_end])
    srt = storage.get_bytes(result["subtitles"]["key"]).decode()
    assert "[SPEAKER_00]" in srt and "[SPEAKER_01]" in srt
    transcript = json.loads(storage.get_bytes(result["transcript"]["key"]))
    assert transcript["language"] == "en" and transcript["model"] == report["models"]["ASR"]

    # A second attempt of the same job (as after a runner died) restores every committed stage and
    # calls no model.
    before = sum(calls.values())
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    assert run(jobs, resumed, models) == result
    assert sum(calls.values()) == before


def test_unknown_target_fails_in_diarize_naming_the_labels(
    storage: Storage, models: Models, dialog: Dialog
) -> None:
    request = {"upload_id": upload(storage, dialog.audio), "voice": "heart", "target_speaker": "SPEAKER_07"}
    jobs, job = claimed(storage, request)
    with pytest.raises(StageFailedError) as failed:
        run(jobs, job, models)
    assert failed.value.stage == "diarize" and failed.value.code == "unknown_speaker"
    assert "SPEAKER_00" in failed.value.message and "SPEAKER_01" in failed.value.message


def test_silent_and_speechless_inputs_fail_naming_the_stage(storage: Storage, models: Models) -> None:
    silence = Audio(np.zeros((1, 16000), np.float32), 16000)
    jobs, job = claimed(storage, {"upload_id": upload(storage, silence), "voice": "heart"})
    with pytest.raises(StageFailedError) as failed:
        run(jobs, job, models)
    assert (failed.value.stage, failed.value.code) == ("decode", "silent_input")
    t = np.arange(3 * 16000) / 16000
    hum = Audio((0.3 * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32), 16000)
    jobs, job = claimed(storage, {"upload_id": upload(storage, hum), "voice": "heart"})
    with pytest.raises(StageFailedError) as failed:
        run(jobs, job, models)
    assert (failed.value.stage, failed.value.code) == ("diarize", "no_speech")


def test_separated_run_with_debug_separation_says_so(
    storage: Storage, models: Models, dialog: Dialog
) -> None:
    request = {
        "upload_id": upload(storage, dialog.audio),
        "voice": "heart",
        "target_speaker": "SPEAKER_01",
        "separate": True,
        "analyze": "input",
    }
    jobs, job = claimed(storage, request)
    result = run(jobs, job, models)
    report = json.loads(storage.get_bytes(result["report"]["key"]))
    assert report["debug_weights"] == ["Separation"] == result["metadata"]["debug_weights"]
    assert report["models"]["Separation"]["weights"] == "debug-random"
    assert report["analyzed"] == "input"
    out = decode(storage.get_bytes(result["audio"]["key"]))
    assert abs(out.num_samples - dialog.audio.num_samples) <= 0.02 * out.sample_rate


# admission (no models: a TTS client that only lists its voices) -----------------------------------


def admit(storage: Storage, settings: Settings, **fields: Any) -> VoiceReplaceJobRequest:
    request = VoiceReplaceJobRequest(**fields)
    admission = Admission(storage, JobStore(storage), settings, models_of(tts=StockVoices("TTS")))
    return asyncio.run(admit_voice_replace(request, admission))


def stored(storage: Storage, settings: Settings, audio: Audio) -> str:
    return store_upload(storage, encode(audio, "wav"), "input.wav", settings).upload_id


def tone(amplitude: float, seconds: float = 1.0, rate: int = 16000) -> Audio:
    t = np.arange(round(seconds * rate)) / rate
    return Audio((amplitude * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32), rate)


def refused(storage: Storage, settings: Settings, **fields: Any) -> AdmissionError:
    with pytest.raises(AdmissionError) as refusal:
        admit(storage, settings, **fields)
    return refusal.value


def test_admission_refuses_unknown_voices_missing_uploads_and_silence(
    storage: Storage, settings: Settings
) -> None:
    loud = stored(storage, settings, tone(0.3))
    ok = admit(storage, settings, upload_id=loud, voice="heart", target_speaker="SPEAKER_01")
    assert ok == VoiceReplaceJobRequest(upload_id=loud, voice="heart", target_speaker="SPEAKER_01")
    registered = save_voice(storage, "narrator", tone(0.3, seconds=6.0), "some words", "given")
    assert admit(storage, settings, upload_id=loud, voice=registered.voice_id).voice == registered.voice_id

    stock = refused(storage, settings, upload_id=loud, voice="nobody")
    assert (stock.status, stock.code) == (422, "unknown_voice")
    assert str(stock) == "voice 'nobody' is neither one of ['bella', 'heart'] nor a voice_id"
    unregistered = refused(storage, settings, upload_id=loud, voice=secrets.token_hex(16))
    assert (unregistered.status, unregistered.code) == (422, "unknown_voice")
    assert "no registered voice" in str(unregistered)

    missing_id = secrets.token_hex(16)
    missing = refused(storage, settings, upload_id=missing_id, voice="heart")
    assert (missing.status, missing.code, str(missing)) == (
        404,
        "upload_not_found",
        f"no upload with id {missing_id!r}",
    )

    silent = refused(storage, settings, upload_id=stored(storage, settings, tone(1e-5)), voice="heart")
    assert (silent.status, silent.code) == (422, "silent_input")
    assert str(silent) == "the input is silent (peak below -70 dBFS): no voice to replace"
