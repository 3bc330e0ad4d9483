"""Silero VAD (real packaged weights) on TTS speech placed at known times, music-like tones and noise."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from infra.audio import Audio, EmptyAudioError, resample
from infra.dsp.regions import SpeechRegion
from models.tts import StockTTS
from models.types import ModelLoadingError
from models.vad import MODEL_FILE, VoiceActivityDetector, verified_package_file

RATE = 24000  # the TTS rate, not the model's 16 kHz: every test also exercises the resampling
OFFSETS_S = (1.0, 5.5)
DURATION_S = 9.5
TOLERANCE_S = 0.2
SENTENCES = (
    "The weather is lovely this morning in the valley.",
    "Please bring the blue folder to my office tomorrow.",
)


def speech_bounds(wave: npt.NDArray[np.float32], rate: int, frame_s: float = 0.01) -> tuple[int, int]:
    """First and last sample (end exclusive) of the 10 ms frames peaking above -40 dBFS."""
    frame = round(rate * frame_s)
    n = wave.size // frame
    loud = np.flatnonzero(np.abs(wave[: n * frame]).reshape(n, frame).max(axis=1) >= 0.01)
    return int(loud[0]) * frame, (int(loud[-1]) + 1) * frame


@pytest.fixture(scope="module")
def placed_speech(stock_tts: StockTTS) -> tuple[npt.NDArray[np.float32], list[tuple[float, float]]]:
    """Two single-clause TTS sentences, trimmed to their speech, at 1.0 s and 5.5 s in 9.5 s of digital
    silence (24 kHz mono), and their true (start, end) times in seconds."""
    x = np.zeros(round(DURATION_S * RATE), np.float32)
    truth = []
    for offset, clip in zip(OFFSETS_S, stock_tts.synthesize(list(SENTENCES)), strict=True):
        start, end = speech_bounds(clip.samples[0], RATE)
        at = round(offset * RATE)
        x[at : at + end - start] = clip.samples[0][start:end]
        truth.append((offset, offset + (end - start) / RATE))
    return x, truth


def mono(x: npt.NDArray[np.float64] | npt.NDArray[np.float32], rate: int = RATE) -> Audio:
    return Audio(np.asarray(x, np.float32)[np.newaxis, :], rate)


def white_noise(seconds: float, rms_dbfs: float, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 10.0 ** (rms_dbfs / 20.0), round(seconds * RATE)).astype(np.float32)


def assert_matches(regions: list[SpeechRegion], truth: list[tuple[float, float]]) -> None:
    assert len(regions) == len(truth), regions
    for region, (start, end) in zip(regions, truth, strict=True):
        assert abs(region.start - start) <= TOLERANCE_S, (region, start)
        assert abs(region.end - end) <= TOLERANCE_S, (region, end)


def test_model_identity(vad: VoiceActivityDetector) -> None:
    assert (vad.sample_rate, vad.channels) == (16000, 1)
    assert vad.info.model_id == "silero-vad"
    assert vad.info.revision == "6.2.3"
    assert vad.info.weights == "pretrained"


def test_finds_speech_placed_in_silence(
    vad: VoiceActivityDetector, placed_speech: tuple[npt.NDArray[np.float32], list[tuple[float, float]]]
) -> None:
    x, truth = placed_speech
    assert_matches(vad.detect(mono(x)), truth)


def test_finds_speech_in_low_level_noise(
    vad: VoiceActivityDetector, placed_speech: tuple[npt.NDArray[np.float32], list[tuple[float, float]]]
) -> None:
    """White noise at -45 dBFS RMS, about 20 dB below the speech, everywhere."""
    x, truth = placed_speech
    assert_matches(vad.detect(mono(x + white_noise(DURATION_S, -45.0))), truth)


def test_stereo_and_16k_input_give_the_same_regions(
    vad: VoiceActivityDetector, placed_speech: tuple[npt.NDArray[np.float32], list[tuple[float, float]]]
) -> None:
    x, _ = placed_speech
    expected = vad.detect(mono(x))
    assert vad.detect(Audio(np.stack([x, x]), RATE)) == expected
    assert vad.detect(resample(mono(x), 16000)) == expected


def chord_progression(seconds: float = 8.0) -> npt.NDArray[np.float64]:
    """Four plucked triads (C, Am, F, G), one a second, each note with 5 harmonics; peak 0.3."""
    t = np.arange(round(seconds * RATE)) / RATE
    chords = (
        (261.63, 329.63, 392.0),
        (220.0, 261.63, 329.63),
        (174.61, 220.0, 261.63),
        (196.0, 246.94, 293.66),
    )
    x = np.zeros_like(t)
    for beat in range(math.ceil(seconds)):
        inside = (t >= beat) & (t < beat + 1)
        tt = t[inside] - beat
        envelope = np.minimum(tt / 0.02, 1.0) * np.exp(-1.5 * tt)
        for f0 in chords[beat % len(chords)]:
            x[inside] += envelope * sum(np.sin(2 * np.pi * k * f0 * tt) / k**1.5 for k in range(1, 6))
    return 0.3 * x / np.abs(x).max()


def organ_chord(seconds: float = 6.0) -> npt.NDArray[np.float64]:
    """A sustained A-major triad (220, 277, 330 Hz, 3 harmonics each); peak 0.3."""
    t = np.arange(round(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for f0 in (220.0, 277.18, 329.63) for k in range(1, 4))
    return 0.3 * x / np.abs(x).max()


@pytest.mark.parametrize("signal", [chord_progression, organ_chord], ids=["plucked-chords", "organ-chord"])
def test_music_like_tones_are_not_speech(vad: VoiceActivityDetector, signal: object) -> None:
    audio = mono(signal())  # type: ignore[operator]
    assert vad.detect(audio) == []
    assert float(np.mean(vad.speech_probabilities(audio) >= 0.5)) < 0.05


@pytest.mark.parametrize("rms_dbfs", [-30.0, -20.0, -10.0])
def test_white_noise_is_not_speech(vad: VoiceActivityDetector, rms_dbfs: float) -> None:
    assert vad.detect(mono(white_noise(6.0, rms_dbfs, seed=1))) == []


def test_silence_and_very_short_input(vad: VoiceActivityDetector) -> None:
    assert vad.detect(mono(np.zeros(RATE * 3))) == []
    assert vad.detect(mono(np.zeros(100))) == []  # shorter than one 32 ms frame
    assert vad.speech_probabilities(mono(np.zeros(100))).shape == (1,)
    with pytest.raises(EmptyAudioError):
        vad.detect(mono(np.zeros(0)))


def test_probabilities_one_per_frame(
    vad: VoiceActivityDetector, placed_speech: tuple[npt.NDArray[np.float32], list[tuple[float, float]]]
) -> None:
    x, truth = placed_speech
    probs = vad.speech_probabilities(mono(x))
    assert probs.shape == (math.ceil(DURATION_S * 16000 / 512),)
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    times = (np.arange(probs.size) + 0.5) * 512 / 16000
    in_speech = np.zeros(probs.size, bool)
    for start, end in truth:
        in_speech |= (times > start + 0.2) & (times < end - 0.2)
    assert np.median(probs[in_speech]) > 0.9
    assert np.median(probs[times < 0.8]) < 0.1


def test_settings_change_the_regions(
    vad: VoiceActivityDetector, placed_speech: tuple[npt.NDArray[np.float32], list[tuple[float, float]]]
) -> None:
    x, truth = placed_speech
    audio = mono(x)
    gap = truth[1][0] - truth[0][1]
    # A silence shorter than min_silence_s does not split: the two sentences become one region.
    merged = vad.detect(audio, min_silence_s=gap + 0.5)
    assert len(merged) == 1 and abs(merged[0].start - truth[0][0]) <= TOLERANCE_S
    # Regions shorter than min_speech_s are dropped.
    assert vad.detect(audio, min_speech_s=10.0) == []
    # Padding widens every region by pad_s on each side.
    tight, wide = vad.detect(audio, pad_s=0.0), vad.detect(audio, pad_s=0.1)
    for a, b in zip(tight, wide, strict=True):
        assert b.start == pytest.approx(a.start - 0.1, abs=1e-3)
        assert b.end == pytest.approx(a.end + 0.1, abs=1e-3)

    # A stricter threshold never finds more speech.
    def speech_time(threshold: float) -> float:
        return sum(r.duration for r in vad.detect(audio, threshold=threshold))

    assert speech_time(0.9) <= speech_time(0.5) <= speech_time(0.2)


def test_padding_stays_inside_the_audio_and_between_neighbours(
    vad: VoiceActivityDetector, placed_speech: tuple[npt.NDArray[np.float32], list[tuple[float, float]]]
) -> None:
    """With pad_s = 1.5 s the first region would start before 0 and the two would overlap (their gap is
    ~2.4 s): the first is clipped at 0 and both meet in the middle of the gap."""
    x, _ = placed_speech
    tight = vad.detect(mono(x), pad_s=0.0)
    first, second = vad.detect(mono(x), pad_s=1.5)
    assert first.start == 0.0
    assert first.end == second.start == pytest.approx((tight[0].end + tight[1].start) / 2, abs=1e-3)
    assert second.end == pytest.approx(min(tight[1].end + 1.5, DURATION_S), abs=1e-3)


@pytest.mark.parametrize(
    "settings",
    [
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"threshold": 1.5},
        {"threshold": -0.1},
        {"min_speech_s": -1.0},
        {"min_silence_s": math.nan},
        {"pad_s": math.inf},
    ],
)
def test_invalid_settings_are_rejected(vad: VoiceActivityDetector, settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        vad.detect(mono(np.zeros(RATE)), **settings)


def test_speech_region_validates() -> None:
    assert SpeechRegion(1.0, 2.5).duration == 1.5
    with pytest.raises(ValueError):
        SpeechRegion(2.0, 1.0)
    with pytest.raises(ValueError):
        SpeechRegion(-0.1, 1.0)


def test_packaged_weights_are_verified_against_the_wheel_record() -> None:
    path, digest = verified_package_file("silero-vad", f"silero_vad/data/{MODEL_FILE}")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    with pytest.raises(ModelLoadingError, match="not installed"):
        verified_package_file("no-such-distribution-xyz", "x.onnx")
    with pytest.raises(ModelLoadingError, match="no sha256 RECORD entry"):
        verified_package_file("silero-vad", "silero_vad/data/missing.onnx")


def test_loads_from_a_local_folder(
    vad: VoiceActivityDetector,
    tmp_path: Path,
    placed_speech: tuple[npt.NDArray[np.float32], list[tuple[float, float]]],
) -> None:
    source, _ = verified_package_file("silero-vad", f"silero_vad/data/{MODEL_FILE}")
    shutil.copy(source, tmp_path / MODEL_FILE)
    local = VoiceActivityDetector.from_pretrained(str(tmp_path))
    assert local.info.revision == f"sha256:{hashlib.sha256(source.read_bytes()).hexdigest()[:12]}"
    audio = mono(placed_speech[0])
    np.testing.assert_array_equal(local.speech_probabilities(audio), vad.speech_probabilities(audio))


def test_loading_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadingError, match="not found"):
        VoiceActivityDetector.from_pretrained(str(tmp_path))
    with pytest.raises(ModelLoadingError):
        VoiceActivityDetector.from_pretrained("hf://snakers4/silero-vad")
    (tmp_path / MODEL_FILE).write_bytes(b"not an onnx model")
    with pytest.raises(ModelLoadingError, match="not a loadable ONNX model"):
        VoiceActivityDetector.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="device"):
        VoiceActivityDetector.from_pretrained(device="cuda")
