"""The studio page in headless Chromium against the session stack (real Ray, the real job runner, the
embedded S3 store, offline weights: debug MusicGen; real hibari TTS, silero VAD, resemblyzer, Whisper
tiny.en): a music job submitted from the page, a voice replacement run from an upload, a bad upload's
422 shown. Each step leaves a screenshot."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from infra.audio import Audio, decode, encode
from infra.dsp.vocoder import shift_pitch
from tests.dialog import LINES
from tests.studio.browser import Page

pytestmark = pytest.mark.ray
JOB_TIMEOUT_S = 600
SUCCEEDED = "document.querySelector('#job .status')?.dataset.status === 'succeeded'"


def speech(base_url: str, line: str) -> Audio:
    """One line in the stock voice from the stack's TTS deployment, trimmed to its speech."""
    body = {"model": "hibari", "input": line, "voice": "heart", "response_format": "wav"}
    answer = httpx.post(f"{base_url}/v1/audio/speech", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    clip = decode(answer.content)
    level = np.abs(clip.samples[0])
    loud = np.flatnonzero(level > level.max() * 0.01)
    return Audio(clip.samples[:, loud[0] : loud[-1] + 1], clip.sample_rate)


def short_dialog(base_url: str) -> Audio:
    """The first four lines of tests/dialog.py (A, B, A, B; B pitched down 6 semitones with its formants,
    a clearly different voice), 0.5 s apart."""
    pieces: list[np.ndarray] = []
    for speaker, line in LINES[:4]:
        clip = speech(base_url, line)
        if speaker == "B":
            clip = shift_pitch(clip, -6.0, preserve_formants=False)
        pieces += [clip.samples, np.zeros((1, clip.sample_rate // 2), dtype=np.float32)]
    return Audio(np.concatenate(pieces, axis=1), clip.sample_rate)


def choose_tab(page: Page, name: str) -> None:
    page.find(f"#tab-{name}").click()
    page.wait_for(f"!document.querySelector('#panel-{name}').hidden", f"the {name} tab")


def test_a_music_job_from_the_page_plays_with_a_waveform(base_url: str, page: Page) -> None:
    page.open(f"{base_url}/studio")
    page.shot("music-1-page")
    page.find("#music-prompt").send_keys("warm lo-fi piano, vinyl crackle")
    page.find("#music-duration").clear()
    page.find("#music-duration").send_keys("2")
    page.find("#music-seed").send_keys("7")
    page.find("#panel-music button[type=submit]").click()
    page.wait_for("document.querySelector('#job [data-job-id]')", "the job to be shown")
    page.shot("music-2-submitted")
    page.wait_for(SUCCEEDED, "the music job to succeed", timeout_s=JOB_TIMEOUT_S)
    page.wait_for("document.querySelector('#job figure.player[data-waveform=\"drawn\"]')", "the waveform")
    figure = page.find("#job figure.player[data-waveform]")
    assert page.canvas_ink(figure) > 0.05  # drawn, not a blank canvas
    assert abs(page.audio_duration(figure) - 2.0) < 0.05
    page.wait_for("document.querySelector('#job img.spectrogram')?.naturalWidth > 0", "the spectrogram")
    assert "MusicGen" in page.text("#job .debug-banner")  # the debug weights are said, not hidden
    page.wait_for("document.querySelector('#job-rows tr[aria-current=\"true\"]')", "the job in the list")
    page.shot("music-3-succeeded")
    assert page.script_errors() == []


def test_a_voice_replacement_from_an_upload(base_url: str, page: Page, tmp_path: Path) -> None:
    dialog = short_dialog(base_url)
    path = tmp_path / "dialog.wav"
    path.write_bytes(encode(dialog, "wav"))
    page.open(f"{base_url}/studio")
    choose_tab(page, "voice")
    page.wait_for(
        "[...document.querySelectorAll('#voice-choice option')].some(o => o.value === 'heart')", "voices"
    )
    page.find("#voice-file").send_keys(str(path))
    speaker = "input[name=target_speaker][value=SPEAKER_01]"
    page.wait_for(f"document.querySelector('{speaker}')", "the diarized speakers", timeout_s=120)
    assert "2 speaker(s) found" in page.text("#panel-voice [data-speakers-hint]")
    page.find(speaker).click()
    page.shot("voice-1-speakers")
    page.find("#panel-voice button[type=submit]").click()
    page.wait_for("document.querySelector('#job [data-job-id]')", "the job to be shown")
    page.wait_for(SUCCEEDED, "the voice replacement to succeed", timeout_s=JOB_TIMEOUT_S)
    page.wait_for("document.querySelector('#job .transcript tbody tr')", "the transcript")
    rows = page.find_all("#job .transcript tbody tr")
    replaced = page.find_all("#job .transcript tbody tr.replaced")
    assert len(rows) >= 3 and 1 <= len(replaced) < len(rows)
    assert all("SPEAKER_01" in row.text for row in replaced)
    figure = page.find("#job figure.player")
    assert abs(page.audio_duration(figure) - dialog.duration_s) < 0.05
    page.wait_for(
        "document.querySelector('#job figure.player')?.dataset.waveform === 'drawn'", "the waveform"
    )
    assert page.canvas_ink(figure) > 0.05
    page.find("#job details summary").click()  # the subtitles
    page.wait_for("document.querySelector('#job pre.srt').textContent.includes('-->')", "the subtitles")
    assert "[SPEAKER_01]" in page.text("#job pre.srt")
    links = [a.text for a in page.find_all("#job a[download]")]
    assert {"Download transcript.json", "Download transcript.srt", "Download report.json"} <= set(links)
    page.shot("voice-2-succeeded")
    assert page.script_errors() == []


def test_a_bad_upload_shows_the_apis_422(base_url: str, page: Page, tmp_path: Path) -> None:
    whole = encode(Audio(np.zeros((1, 16000), dtype=np.float32) + 0.1, 16000), "wav")
    path = tmp_path / "truncated.wav"
    path.write_bytes(whole[: len(whole) // 2])  # the header claims twice the frames that follow
    page.open(f"{base_url}/studio")
    choose_tab(page, "separate")
    page.find("#separate-file").send_keys(str(path))
    page.wait_for("document.querySelector('#panel-separate [data-error]').textContent", "the error")
    message = page.text("#panel-separate [data-error]")
    assert message.startswith("422 invalid_audio: "), message
    assert "truncated.wav was not accepted" in page.text("#panel-separate [data-upload-status]")
    page.shot("bad-upload-1-422")
    page.find("#panel-separate button[type=submit]").click()  # no upload: said, nothing sent
    page.wait_for(
        "document.querySelector('#panel-separate [data-error]').textContent.includes('first')", "hint"
    )
    page.shot("bad-upload-2-no-file")
