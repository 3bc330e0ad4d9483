"""VAD and diarization over HTTP with real offline weights (silero-vad, resemblyzer), on a synthetic
two-speaker dialog (tests/dialog.py says how the second voice is made)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from infra.audio import Audio, encode
from infra.client import SoundstageClient
from infra.dsp.diarization import speech_time_accuracy
from infra.dsp.regions import Turn
from tests.dialog import Dialog

pytestmark = pytest.mark.ray


def post(base_url: str, path: str, audio: Audio, **fields: Any) -> httpx.Response:
    files = {"file": ("dialog.wav", encode(audio, "wav"), "audio/wav")}
    return httpx.post(f"{base_url}{path}", files=files, data=fields, timeout=180)


def reference(dialog: Dialog) -> list[Turn]:
    return [Turn(start, end, speaker) for start, end, speaker in dialog.turns]


@pytest.mark.parametrize("num_speakers", [2, None], ids=["given", "estimated"])
def test_diarization_assigns_speech_to_the_right_speaker(
    base_url: str, dialog: Dialog, num_speakers: int | None
) -> None:
    assert len(dialog.turns) >= 6
    fields = {"num_speakers": num_speakers} if num_speakers else {}
    response = post(base_url, "/v1/diarize", dialog.audio, **fields)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["num_speakers"] == 2 and body["model"]["weights"] == "pretrained"
    hypothesis = [Turn(t["start"], t["end"], t["speaker"]) for t in body["turns"]]
    accuracy = speech_time_accuracy(reference(dialog), hypothesis)
    assert accuracy >= 0.90, f"only {accuracy:.1%} of speech time on the right speaker"


def test_vad_regions_match_known_boundaries(base_url: str, dialog: Dialog) -> None:
    regions = post(base_url, "/v1/vad", dialog.audio).json()["regions"]
    assert len(regions) == len(dialog.turns)
    for region, (start, end, _) in zip(regions, dialog.turns, strict=True):
        assert abs(region["start"] - start) <= 0.2 and abs(region["end"] - end) <= 0.2


def test_vad_finds_no_speech_in_music_or_noise(base_url: str) -> None:
    rate = 16000
    t = np.arange(3 * rate) / rate
    chord = np.sum([np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)], axis=0) / 4
    noise = np.random.default_rng(0).normal(0, 0.1, t.size)
    for signal in (chord, noise):
        audio = Audio(signal[None].astype(np.float32), rate)
        assert post(base_url, "/v1/vad", audio).json()["regions"] == []


def test_long_input_becomes_a_diarize_job(base_url: str, dialog: Dialog) -> None:
    repeats = int(130 / dialog.audio.duration_s) + 1  # past the 120 s sync limit of the tests
    long = Audio(np.tile(dialog.audio.samples, (1, repeats)), dialog.audio.sample_rate)
    response = post(base_url, "/v1/diarize", long, num_speakers=2)
    assert response.status_code == 202, response.text
    job = SoundstageClient(base_url).wait(response.json()["id"], timeout_s=300)
    turns = httpx.get(job["result"]["turns"]["url"]).json()
    assert turns["num_speakers"] == 2 and len(turns["turns"]) >= 6 * repeats - 2


def test_transcription_with_speakers(base_url: str, dialog: Dialog) -> None:
    body = post(
        base_url,
        "/v1/audio/transcriptions",
        dialog.audio,
        response_format="verbose_json",
        diarize="true",
        **{"timestamp_granularities[]": ["word", "segment"]},
    ).json()
    speakers = {w["speaker"] for w in body["words"]}
    assert speakers == {"SPEAKER_00", "SPEAKER_01"}
    first_turn_end = dialog.turns[0][1]
    assert {w["speaker"] for w in body["words"] if w["end"] < first_turn_end - 0.2} == {"SPEAKER_00"}


def test_bad_diarize_fields(base_url: str, dialog: Dialog) -> None:
    for fields in ({"num_speakers": 0}, {"num_speakers": 12}, {"num_speakers": "two"}):
        response = post(base_url, "/v1/diarize", dialog.audio, **fields)
        assert response.status_code == 422, response.text
    assert post(base_url, "/v1/vad", dialog.audio, threshold=1.5).status_code == 422
