"""Every API subcommand of the `soundstage` CLI against the session stack (real Ray, real store,
offline models: the `debug` generators make noise, so results are checked for shape and provenance),
through `main()` in-process: exit codes, `--json` on stdout, progress from the events stream on stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from deployments.tools.cli import main
from deployments.tools.cli_common import ExitCode

pytestmark = pytest.mark.ray
SPEECH = (
    "Good morning, this is a short reading for the command line test. The river is wide and the boats "
    "are slow. We will meet again at noon."
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """`main(argv + --json)`: (exit code, the JSON printed on stdout, stderr)."""
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


@pytest.fixture(autouse=True)
def api(base_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI finds the stack through SOUNDSTAGE_URL; the config file is one of the test's own."""
    monkeypatch.setenv("SOUNDSTAGE_URL", base_url)
    monkeypatch.delenv("SOUNDSTAGE_API_KEY", raising=False)
    monkeypatch.setenv("SOUNDSTAGE_CONFIG_FILE", str(tmp_path / "absent.toml"))


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory, base_url: str) -> Path:
    """Speech made by `soundstage speak` (the real offline TTS)."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOUNDSTAGE_URL", base_url)
        assert main(["speak", SPEECH, "-o", str(path)]) == ExitCode.OK
    return path


def tone(path: Path, seconds: float = 2.0, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    return path


def test_music_with_progress_from_the_events_stream(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["submit", "music", "cli test", "--duration", "0.5", "--seed", "3", "--no-quality-check"]
    assert main([*argv, "--format", "flac", "--wait", "--output-dir", str(tmp_path)]) == ExitCode.OK
    captured = capsys.readouterr()
    assert "100%" in captured.err and "succeeded" in captured.err  # the bar, drawn from the events
    assert "weights debug-random" in captured.out
    (audio,) = tmp_path.glob("*-audio.flac")
    assert sf.info(audio).duration == pytest.approx(0.5, abs=0.05)


def test_sfx_json_and_the_jobs_subcommands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, job, err = run(
        capsys,
        "submit",
        "sfx",
        "door slam",
        "--duration-s",
        "0.5",
        "--no-quality-check",
        "--loudness-lufs",
        "null",
        "--wait",
        "--output-dir",
        str(tmp_path),
    )
    assert code == ExitCode.OK and job["status"] == "succeeded" and job["kind"] == "sfx"
    assert f"job {job['id'][:8]}" not in err  # --json: no progress bar
    assert job["request"]["loudness_lufs"] is None  # `null` sent as JSON null
    assert Path(job["files"]["audio"]).stat().st_size > 0
    assert job["result"]["metadata"]["weights"] == "debug-random"
    code, shown, _ = run(capsys, "jobs", "show", job["id"])
    assert code == ExitCode.OK and shown["id"] == job["id"] and shown["status"] == "succeeded"
    code, listed, _ = run(capsys, "jobs", "list", "--status", "succeeded", "--limit", "50")
    assert code == ExitCode.OK and job["id"] in [j["id"] for j in listed["jobs"]]
    code, report, _ = run(capsys, "jobs", "report", job["id"])
    assert code == ExitCode.OK and report["stages"][0]["name"] == "generate"
    assert "AudioGen" in report["debug_weights"]
    code, error, _ = run(capsys, "jobs", "cancel", job["id"])
    assert code == ExitCode.CONFLICT and error["error"]["code"] == "job_finished"
    code, error, _ = run(capsys, "jobs", "show", "0" * 32)
    assert code == ExitCode.NOT_FOUND and error["error"]["status"] == 404
    code, error, _ = run(capsys, "submit", "sfx", " ")
    assert code == ExitCode.USAGE and error["error"]["status"] == 422


def test_cancel_then_wait_exits_9(capsys: pytest.CaptureFixture[str]) -> None:
    code, job, _ = run(capsys, "submit", "music", "a long piece", "--duration-s", "40", "--seed", "1")
    assert code == ExitCode.OK and job["status"] == "queued"
    code, cancelled, _ = run(capsys, "jobs", "cancel", job["id"])
    assert code == ExitCode.OK and cancelled["cancel_requested"] is True
    code, error, _ = run(capsys, "jobs", "wait", job["id"], "--timeout", "180")
    assert code == ExitCode.CANCELLED and error["error"]["job"]["status"] == "cancelled"


def test_separate_a_file_then_loop_and_pitch_shift_uploads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    clip = tone(tmp_path / "tone.wav")
    out = ["--wait", "--output-dir", str(tmp_path)]
    code, job, _ = run(capsys, "submit", "separate", str(clip), "--mode", "vocals", *out)
    assert code == ExitCode.OK and set(job["files"]) >= {"vocals", "no_vocals"}
    code, upload, _ = run(capsys, "upload", str(clip))
    assert code == ExitCode.OK and upload["duration_s"] == pytest.approx(2.0)
    code, job, _ = run(
        capsys,
        "submit",
        "pitch-shift",
        "--upload-id",
        upload["upload_id"],
        "--semitones",
        "3",
        "--no-preserve-formants",
        *out,
    )
    assert code == ExitCode.OK and job["request"]["preserve_formants"] is False
    assert sf.info(job["files"]["audio"]).duration == pytest.approx(2.0, abs=0.01)
    code, job, _ = run(
        capsys, "submit", "loop", str(clip), "--target-duration-s", "5", "--format", "flac", *out
    )
    assert code == ExitCode.OK and sf.info(job["files"]["audio"]).duration == pytest.approx(5.0, abs=0.01)


def test_speech_transcription_voices_and_voice_replacement(
    capsys: pytest.CaptureFixture[str], speech_wav: Path, tmp_path: Path
) -> None:
    code, text, _ = run(capsys, "transcribe", str(speech_wav))
    assert code == ExitCode.OK and "river" in text["text"].lower()  # --json: verbose_json
    assert main(["transcribe", str(speech_wav), "--format", "srt"]) == ExitCode.OK
    assert "-->" in capsys.readouterr().out
    code, voice, _ = run(
        capsys, "voices", "register", str(speech_wav), "--name", "reader", "--transcript", SPEECH
    )
    assert code == ExitCode.OK and voice["name"] == "reader"
    code, voices, _ = run(capsys, "voices", "list")
    assert voice["voice_id"] in [v["voice_id"] for v in voices["registered"]] and voices["stock"]
    assert run(capsys, "voices", "delete", voice["voice_id"])[0] == ExitCode.OK
    assert run(capsys, "voices", "delete", voice["voice_id"])[0] == ExitCode.NOT_FOUND
    code, job, _ = run(
        capsys,
        "submit",
        "voice-replace",
        str(speech_wav),
        "--voice",
        "heart",
        "--analyze",
        "input",
        "--wait",
        "--output-dir",
        str(tmp_path),
    )
    assert code == ExitCode.OK and {"audio", "transcript", "subtitles"} <= set(job["files"])


def test_a_failed_job_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    hum = tone(tmp_path / "hum.wav", seconds=3.0)
    code, error, _ = run(capsys, "submit", "voice-replace", str(hum), "--voice", "heart", "--wait")
    assert code == ExitCode.JOB_FAILED
    assert error["error"]["job"]["error"]["code"] == "no_speech"
    code, job, _ = run(capsys, "submit", "diarize", str(hum))
    assert code == ExitCode.OK and job["kind"] == "diarize"
