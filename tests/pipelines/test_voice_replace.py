"""The voice-replacement pipeline through the real `StageRunner`, job store and embedded S3 (no Ray).

The deployment handles are named test doubles: `InProcess` wraps the real model objects (hibari TTS,
Whisper tiny.en, silero VAD + resemblyzer + the project's clustering for the Diarizer, debug HTDemucs)
in this process, with the handles' `method.remote(...)` calling convention. The HTTP test
(tests/deployments/test_voice_replace_http.py) runs the same pipeline on the Ray stack.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from infra.audio import Audio, decode, encode
from infra.dsp.diarization import diarize
from infra.dsp.regions import Turn
from infra.jobs import JobRecord, JobStore
from infra.storage import Storage, upload_key
from pipelines.engine.stages import RetryPolicy, StageFailedError, StageRunner, job_result
from pipelines.jobs.voice_replace import VOICE_REPLACE_JOB, VOICE_REPLACE_STAGES
from tests.dialog import Dialog, build_dialog

FAST_RETRY = RetryPolicy(tries=1, base_s=0.01)


class RemoteMethod:
    """`handle.method.remote(...)` running a blocking call in a thread, as a Serve handle would remotely."""

    def __init__(self, fn: Callable[..., Any], calls: Counter[str], name: str) -> None:
        self.fn, self.calls, self.name = fn, calls, name

    def remote(self, *args: Any) -> Awaitable[Any]:
        self.calls[self.name] += 1
        return asyncio.to_thread(self.fn, *args)


class InProcess:
    """Test double for a deployment handle: the given methods of an in-process model, plus `info`."""

    def __init__(self, calls: Counter[str], info: dict[str, Any], **methods: Callable[..., Any]) -> None:
        self.info = RemoteMethod(lambda: info, Counter(), "info")
        for name, fn in methods.items():
            setattr(self, name, RemoteMethod(fn, calls, name))


@pytest.fixture(scope="module")
def calls() -> Counter[str]:
    return Counter()


@pytest.fixture(scope="module")
def handles(calls: Counter[str]) -> dict[str, InProcess]:
    from models.demucs import Demucs
    from models.speaker import SpeakerEncoder
    from models.tts import StockTTS
    from models.vad import VoiceActivityDetector
    from models.whisper import Whisper

    tts, whisper = StockTTS.from_pretrained(), Whisper.from_pretrained(device="cpu")
    vad, encoder = VoiceActivityDetector.from_pretrained(), SpeakerEncoder.from_pretrained(device="cpu")
    demucs = Demucs.from_pretrained("debug", device="cpu")

    def diarize_audio(audio: Audio, num_speakers: int | None) -> list[Turn]:
        regions = vad.detect(audio)
        embeddings, windows = encoder.embed_windows(audio, regions)
        return diarize(regions, embeddings, windows, num_speakers)

    def info(model: Any) -> dict[str, Any]:
        return {**model.info.as_dict(), "sample_rate": model.sample_rate}

    return {
        "TTS": InProcess(
            calls,
            info(tts),
            synthesize=lambda text, voice, speed: tts.synthesize([text], voice=voice, speed=speed)[0],
        ),
        "ASR": InProcess(
            calls,
            info(whisper),
            transcribe=lambda a, lang, words: whisper.transcribe(a, language=lang, word_timestamps=words),
        ),
        "Diarizer": InProcess(calls, info(encoder), diarize=diarize_audio),
        "Separation": InProcess(calls, info(demucs), separate=demucs.separate),
    }


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
    record, _ = jobs.create(VOICE_REPLACE_JOB, request)
    job = jobs.claim(record.id, "test-runner", lease_s=600)
    assert job is not None
    return jobs, job


def run(jobs: JobStore, job: JobRecord, handles: dict[str, InProcess]) -> dict[str, Any]:
    ctx = asyncio.run(StageRunner(jobs, job, handles, retry=FAST_RETRY).run(VOICE_REPLACE_STAGES))
    return job_result(ctx)


def test_replaces_one_speaker_and_resumes_from_checkpoints(
    storage: Storage, handles: dict[str, InProcess], dialog: Dialog, calls: Counter[str]
) -> None:
    request = {"upload_id": upload(storage, dialog.audio), "voice": "heart", "target_speaker": "SPEAKER_01"}
    jobs, job = claimed(storage, request)
    result = run(jobs, job, handles)
    out = decode(storage.get_bytes(result["audio"]["key"]))
    assert abs(out.num_samples - dialog.audio.num_samples) <= 0.02 * out.sample_rate
    report = json.loads(storage.get_bytes(result["report"]["key"]))
    assert report["target_speaker"] == "SPEAKER_01" and report["debug_weights"] == []
    assert len(report["lines"]) == sum(1 for *_, s in dialog.turns if s == "B")
    for line in report["lines"]:
        assert 0.8 <= line["stretch"] <= 1.25 and line["overlap_s"] >= 0.0
    # Speaker A's first turn is untouched.
    first_end = round((dialog.turns[0][1] + 0.2) * out.sample_rate)
    np.testing.assert_array_equal(out.samples[:, :first_end], dialog.audio.samples[:, :first_end])
    srt = storage.get_bytes(result["subtitles"]["key"]).decode()
    assert "[SPEAKER_00]" in srt and "[SPEAKER_01]" in srt

    # A second attempt of the same job (as after a runner died) restores every committed stage and
    # calls no model.
    before = sum(calls.values())
    resumed = jobs.update(job.id, lambda r: setattr(r, "attempt", r.attempt + 1))
    assert run(jobs, resumed, handles)["audio"]["key"] == result["audio"]["key"]
    assert sum(calls.values()) == before


def test_unknown_target_fails_in_diarize_naming_the_labels(
    storage: Storage, handles: dict[str, InProcess], dialog: Dialog
) -> None:
    request = {"upload_id": upload(storage, dialog.audio), "voice": "heart", "target_speaker": "SPEAKER_07"}
    jobs, job = claimed(storage, request)
    with pytest.raises(StageFailedError) as failed:
        run(jobs, job, handles)
    assert failed.value.stage == "diarize" and failed.value.code == "unknown_speaker"
    assert "SPEAKER_00" in failed.value.message and "SPEAKER_01" in failed.value.message


def test_silent_and_speechless_inputs_fail_naming_the_stage(
    storage: Storage, handles: dict[str, InProcess]
) -> None:
    silence = Audio(np.zeros((1, 16000), np.float32), 16000)
    jobs, job = claimed(storage, {"upload_id": upload(storage, silence), "voice": "heart"})
    with pytest.raises(StageFailedError) as failed:
        run(jobs, job, handles)
    assert (failed.value.stage, failed.value.code) == ("decode", "silent_input")
    t = np.arange(3 * 16000) / 16000
    hum = Audio((0.3 * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32), 16000)
    jobs, job = claimed(storage, {"upload_id": upload(storage, hum), "voice": "heart"})
    with pytest.raises(StageFailedError) as failed:
        run(jobs, job, handles)
    assert (failed.value.stage, failed.value.code) == ("diarize", "no_speech")


def test_separated_run_with_debug_separation_says_so(
    storage: Storage, handles: dict[str, InProcess], dialog: Dialog
) -> None:
    request = {
        "upload_id": upload(storage, dialog.audio),
        "voice": "heart",
        "target_speaker": "SPEAKER_01",
        "separate": True,
        "analyze": "input",
    }
    jobs, job = claimed(storage, request)
    result = run(jobs, job, handles)
    report = json.loads(storage.get_bytes(result["report"]["key"]))
    assert report["debug_weights"] == ["Separation"] == result["metadata"]["debug_weights"]
    assert report["models"]["Separation"]["weights"] == "debug-random"
    out = decode(storage.get_bytes(result["audio"]["key"]))
    assert abs(out.num_samples - dialog.audio.num_samples) <= 0.02 * out.sample_rate
