"""Voice replacement over HTTP on the Ray stack with real offline weights (hibari TTS, silero VAD,
resemblyzer, Whisper base; debug HTDemucs for `separate=true`), on the synthetic two-speaker dialog
of tests/dialog.py. Speaker B (SPEAKER_01, the pitched-down copy) is re-spoken in the stock voice
"heart"; the result is checked sample by sample against the input and by an offline transcription."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from infra.audio import Audio, decode, encode
from infra.client import JobFailedError, SoundstageClient
from tests.dialog import LINES, Dialog
from tests.wer import word_error_rate

pytestmark = pytest.mark.ray
JOB_TIMEOUT_S = 900


def submit(base_url: str, audio: Audio, **fields: Any) -> httpx.Response:
    files = {"file": ("dialog.wav", encode(audio, "wav"), "audio/wav")}
    return httpx.post(f"{base_url}/v1/jobs/voice-replace", files=files, data=fields, timeout=180)


def finished(base_url: str, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    try:
        return SoundstageClient(base_url).wait(response.json()["id"], timeout_s=JOB_TIMEOUT_S)
    except JobFailedError as e:
        return e.job


def fetch_json(url: str) -> Any:
    return json.loads(httpx.get(url, timeout=60).content)


@pytest.fixture(scope="module")
def replaced(base_url: str, dialog: Dialog) -> dict[str, Any]:
    assert len(dialog.turns) >= 6 and dialog.audio.duration_s >= 30.0
    job = finished(base_url, submit(base_url, dialog.audio, voice="heart", target_speaker="SPEAKER_01"))
    assert job["status"] == "succeeded", job
    result = job["result"]
    return {
        "audio": decode(httpx.get(result["audio"]["url"], timeout=60).content),
        "report": fetch_json(result["report"]["url"]),
        "transcript": fetch_json(result["transcript"]["url"]),
        "srt": httpx.get(result["subtitles"]["url"], timeout=60).text,
        "metadata": result["metadata"],
    }


def touched(report: dict[str, Any], rate: int, total: int) -> np.ndarray:
    """Samples any new line was written to: its region, and its tail past the region if any (the tail's
    length is reported in ms, hence the 2 ms margin)."""
    mask = np.zeros(total, dtype=bool)
    for line in report["lines"]:
        start, end = line["region_samples"]
        end = max(end, start + round((line["new_duration_s"] + 0.002) * rate))
        mask[start : min(end, total)] = True
    return mask


def test_result_has_the_input_duration(replaced: dict[str, Any], dialog: Dialog) -> None:
    out = replaced["audio"]
    assert out.sample_rate == dialog.audio.sample_rate and out.channels == dialog.audio.channels
    assert abs(out.duration_s - dialog.audio.duration_s) <= 0.020


def test_the_other_speaker_is_kept_sample_exact(replaced: dict[str, Any], dialog: Dialog) -> None:
    out, rate = replaced["audio"], dialog.audio.sample_rate
    total = min(out.num_samples, dialog.audio.num_samples)
    mask = touched(replaced["report"], rate, total)
    np.testing.assert_array_equal(out.samples[:, :total][:, ~mask], dialog.audio.samples[:, :total][:, ~mask])
    for start, end, speaker in dialog.turns:
        if speaker == "A":  # speaker A's speech lies wholly outside every replaced region
            assert not mask[round(start * rate) : round(end * rate)].any(), (start, end)
    assert all(line["overlap_s"] == 0.0 for line in replaced["report"]["lines"])


def test_the_target_regions_are_new_speech_of_the_same_lines(
    replaced: dict[str, Any], dialog: Dialog
) -> None:
    from models.whisper import Whisper

    out, rate, report = replaced["audio"], dialog.audio.sample_rate, replaced["report"]
    assert report["target_speaker"] == "SPEAKER_01" and report["voice"] == "heart"
    lines = report["lines"]
    assert len(lines) == sum(1 for speaker, _ in LINES if speaker == "B")
    whisper = Whisper.from_pretrained(device="cpu")
    heard = []
    for line in lines:
        start = round(line["slot_start"] * rate)
        end = start + round(max(line["new_duration_s"], line["slot_end"] - line["slot_start"]) * rate)
        new, old = out.samples[0, start:end], dialog.audio.samples[0, start:end]
        assert abs(np.corrcoef(new, old)[0, 1]) < 0.3, line  # not the original samples
        heard.append(whisper.transcribe(Audio(out.samples[:, start:end], rate), language="en").text)
        assert 0.8 <= line["stretch"] <= 1.25
    reference = " ".join(text for speaker, text in LINES if speaker == "B")
    assert word_error_rate(reference, " ".join(heard)) <= 0.15, heard


def test_transcript_and_subtitles_name_both_speakers(replaced: dict[str, Any]) -> None:
    speakers = {line["speaker"] for line in replaced["transcript"]["lines"]}
    assert speakers == {"SPEAKER_00", "SPEAKER_01"}
    assert "[SPEAKER_00]" in replaced["srt"] and "[SPEAKER_01]" in replaced["srt"]
    models = replaced["report"]["models"]
    assert set(models) == {"Diarizer", "ASR", "TTS"} and replaced["report"]["debug_weights"] == []


def test_separated_run_with_debug_separation_weights_says_so(base_url: str, dialog: Dialog) -> None:
    fields = {"voice": "heart", "target_speaker": "SPEAKER_01", "separate": "true", "analyze": "input"}
    job = finished(base_url, submit(base_url, dialog.audio, **fields))
    assert job["status"] == "succeeded", job
    report = fetch_json(job["result"]["report"]["url"])
    assert report["separate"] is True and report["models"]["Separation"]["weights"] == "debug-random"
    assert report["debug_weights"] == ["Separation"] == job["result"]["metadata"]["debug_weights"]
    out = decode(httpx.get(job["result"]["audio"]["url"], timeout=60).content)
    assert abs(out.duration_s - dialog.audio.duration_s) <= 0.020


def test_bad_requests_are_refused_at_submission(base_url: str, dialog: Dialog) -> None:
    response = submit(base_url, dialog.audio, voice="nobody")
    assert response.status_code == 422 and response.json()["error"]["code"] == "unknown_voice"
    response = submit(base_url, dialog.audio, voice="0" * 32)
    assert response.status_code == 422 and response.json()["error"]["code"] == "unknown_voice"
    for bad in ("speaker one", "SPEAKER_1", "SPEAKER_00; rm"):
        assert submit(base_url, dialog.audio, voice="heart", target_speaker=bad).status_code == 422, bad
    silence = Audio(np.zeros((1, 24000), np.float32), 24000)
    response = submit(base_url, silence, voice="heart")
    assert response.status_code == 422 and response.json()["error"]["code"] == "silent_input"


def test_unknown_speaker_and_no_speech_fail_naming_the_stage(base_url: str, dialog: Dialog) -> None:
    job = finished(base_url, submit(base_url, dialog.audio, voice="heart", target_speaker="SPEAKER_07"))
    assert job["status"] == "failed" and job["error"]["stage"] == "diarize"
    assert job["error"]["code"] == "unknown_speaker"
    assert "SPEAKER_00" in job["error"]["message"] and "SPEAKER_01" in job["error"]["message"]
    t = np.arange(3 * 16000) / 16000
    hum = Audio((0.3 * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32), 16000)
    job = finished(base_url, submit(base_url, hum, voice="heart"))
    assert job["status"] == "failed" and job["error"]["stage"] == "diarize"
    assert job["error"]["code"] == "no_speech"
