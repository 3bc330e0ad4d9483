"""CSM voice cloner on the tiny `debug` model: shapes, length cap, seeding, reference conditioning and
validation, save/load, loading errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from infra.audio import Audio
from models.types import (
    EmptyTranscriptError,
    ModelLoadingError,
    ReferenceTooLongError,
    ReferenceTooShortError,
    SilentReferenceError,
    VoiceReference,
)
from models.voice_clone import VoiceCloner, frames_before_end

SR = 24000
HOP = 1920  # samples per 80 ms Mimi frame at 24 kHz
TRANSCRIPT = "My sister plays the violin in a small orchestra."
TEXTS = ["Hello there.", "This is a second and somewhat longer sentence to say."]


def voiced(seconds: float, f0: float, sample_rate: int = SR, channels: int = 1) -> Audio:
    """A voice-like test signal `[C, T]`: 8 harmonics of `f0` with 5 Hz vibrato, pulsed at 4 syllables/s."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * f0 * t - 0.02 * f0 / 5 * np.cos(2 * np.pi * 5 * t)  # F0 swings by +-2 %
    wave = sum(np.sin(k * phase) / k for k in range(1, 9)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    samples = np.repeat((0.1 * wave)[None, :], channels, axis=0).astype(np.float32)
    return Audio(samples, sample_rate)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """CSM generates frame by frame in small ops; with 2 intra-op threads on a busy 2-core host they
    were 10x slower (7 s against 0.6 s for 13 frames); deployments run one thread per replica CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> VoiceCloner:
    return VoiceCloner.from_pretrained("debug", device="cpu")


@pytest.fixture(scope="module")
def reference() -> VoiceReference:
    return VoiceReference(voiced(6.0, 140.0), TRANSCRIPT)


@pytest.fixture(scope="module")
def baseline(model: VoiceCloner, reference: VoiceReference) -> Audio:
    """TEXTS[0] in the voice of `reference`, seed 7, at most 1 s: what the other settings are compared to."""
    return synthesize_one(model, reference)


def synthesize_one(
    model: VoiceCloner, reference: VoiceReference, text: str = TEXTS[0], **kwargs: object
) -> Audio:
    settings: dict = {"seed": 7, "max_duration_s": 1.0, **kwargs}
    (audio,) = model.synthesize([text], reference, **settings)
    return audio


def test_debug_model_describes_itself(model: VoiceCloner) -> None:
    assert (model.sample_rate, model.channels, model.frame_rate) == (SR, 1, 12.5)
    assert (model.info.model_id, model.info.revision, model.info.weights) == ("debug", None, "debug-random")


def test_one_clip_per_text_within_the_cap(model: VoiceCloner, reference: VoiceReference) -> None:
    clips = model.synthesize(TEXTS, reference, seed=1, max_duration_s=1.0)

    assert len(clips) == 2
    for clip in clips:
        assert clip.sample_rate == SR
        assert clip.samples.dtype == np.float32
        assert clip.samples.shape[0] == 1
        # Whole frames, at most floor(1.0 s * 12.5 Hz) = 12 of them.
        assert 0 < clip.num_samples <= 12 * HOP and clip.num_samples % HOP == 0
        assert np.isfinite(clip.samples).all() and np.abs(clip.samples).max() > 0
    assert not np.array_equal(clips[0].samples, clips[1].samples)


def test_cap_below_one_frame_is_refused_and_a_short_cap_is_kept(
    model: VoiceCloner, reference: VoiceReference
) -> None:
    assert synthesize_one(model, reference, max_duration_s=0.17).num_samples <= 2 * HOP  # 2 frames = 0.16 s
    with pytest.raises(ValueError, match=r"shorter than one 0\.08 s frame"):
        synthesize_one(model, reference, max_duration_s=0.07)


def test_same_seed_is_bit_identical_alone_or_in_a_batch(
    model: VoiceCloner, reference: VoiceReference, baseline: Audio
) -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    batch = model.synthesize(TEXTS, reference, seed=7, max_duration_s=1.0)
    assert torch.equal(torch.rand(1), expected_draw)  # the caller's global RNG is left as it was

    np.testing.assert_array_equal(batch[0].samples, baseline.samples)


def test_different_seeds_differ(model: VoiceCloner, reference: VoiceReference, baseline: Audio) -> None:
    assert not np.array_equal(synthesize_one(model, reference, seed=8).samples, baseline.samples)


def test_reference_audio_changes_the_output(model: VoiceCloner, baseline: Audio) -> None:
    other_voice = VoiceReference(voiced(6.0, 230.0), TRANSCRIPT)
    assert not np.array_equal(synthesize_one(model, other_voice).samples, baseline.samples)


def test_reference_at_another_rate_and_in_stereo_is_mixed_and_resampled(model: VoiceCloner) -> None:
    stereo_16k = VoiceReference(voiced(5.5, 140.0, sample_rate=16000, channels=2), TRANSCRIPT)
    clip = synthesize_one(model, stereo_16k, max_duration_s=0.5)
    assert clip.sample_rate == SR and clip.samples.shape[0] == 1 and 0 < clip.num_samples <= 6 * HOP


@pytest.mark.parametrize(
    ("audio", "transcript", "error", "message"),
    [
        (voiced(4.0, 140.0), TRANSCRIPT, ReferenceTooShortError, "lasts 4.00 s; it must last 5 to 30 s"),
        (voiced(31.0, 140.0), TRANSCRIPT, ReferenceTooLongError, "lasts 31.00 s; it must last 5 to 30 s"),
        (Audio(np.zeros((1, 6 * SR), np.float32), SR), TRANSCRIPT, SilentReferenceError, "silent"),
        (Audio(np.full((1, 6 * SR), 1e-4, np.float32), SR), TRANSCRIPT, SilentReferenceError, "RMS 1.00e-04"),
        (voiced(6.0, 140.0), " \n ", EmptyTranscriptError, "transcript is empty"),
    ],
)
def test_invalid_reference_raises_a_typed_value_error(
    audio: Audio, transcript: str, error: type[ValueError], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        VoiceReference(audio, transcript)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("seconds", [5.0, 30.0])
def test_reference_limits_are_inclusive(seconds: float) -> None:
    assert VoiceReference(voiced(seconds, 140.0), TRANSCRIPT).audio.duration_s == seconds


@pytest.mark.parametrize(
    ("texts", "settings", "error", "message"),
    [
        (["fine", "  "], {}, ValueError, "text 1 is empty"),
        ("one string", {}, TypeError, "sequence of strings"),
        (TEXTS[:1], {"max_duration_s": float("nan")}, ValueError, "max_duration_s"),
        (TEXTS[:1], {"max_duration_s": 0.0}, ValueError, "max_duration_s"),
        # 30 s of reference (375 frames) plus a 200 s cap (2500 frames) exceed 2048 positions.
        (TEXTS[:1], {"max_duration_s": 200.0, "long_reference": True}, ValueError, "2048"),
    ],
)
def test_bad_request_raises(
    model: VoiceCloner,
    reference: VoiceReference,
    texts: list[str],
    settings: dict,
    error: type[Exception],
    message: str,
) -> None:
    if settings.pop("long_reference", False):
        reference = VoiceReference(voiced(30.0, 140.0), TRANSCRIPT)
    with pytest.raises(error, match=message):
        model.synthesize(texts, reference, **settings)


def test_no_texts_give_no_clips(model: VoiceCloner, reference: VoiceReference) -> None:
    assert model.synthesize([], reference) == []


def test_frames_before_end_follows_the_stopping_rule_of_generate() -> None:
    codes = torch.randint(1, 128, (6, 4))
    assert frames_before_end(codes, eos=0) == 6
    codes[4, :] = 0
    codes[2, :3] = 0  # the last codebook is not checked: frame 2 ends the clip
    codes[1, :2] = 0  # two codebooks of three: not an end frame
    assert frames_before_end(codes, eos=0) == 2
    assert frames_before_end(codes[:0], eos=0) == 0


def test_save_and_load_round_trip(
    model: VoiceCloner, reference: VoiceReference, baseline: Audio, tmp_path: Path
) -> None:
    folder = tmp_path / "csm-debug"
    model.save_pretrained(folder)
    loaded = VoiceCloner.from_pretrained(str(folder), device="cpu")

    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin"))
    assert (loaded.info.model_id, loaded.info.weights) == (str(folder), "debug-random")
    np.testing.assert_array_equal(synthesize_one(loaded, reference).samples, baseline.samples)


def test_debug_model_is_the_same_every_time(reference: VoiceReference, baseline: Audio) -> None:
    torch.manual_seed(12345)  # the debug weights must not depend on the global RNG
    again = VoiceCloner.from_pretrained("debug", device="cpu")
    np.testing.assert_array_equal(synthesize_one(again, reference).samples, baseline.samples)


def test_hub_id_offline_raises_model_loading_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadingError, match="sesame/csm-1b"):
        VoiceCloner.from_pretrained("sesame/csm-1b", device="cpu", cache_dir=tmp_path / "hub")


def test_missing_folder_raises_model_loading_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadingError, match="does not exist"):
        VoiceCloner.from_pretrained(str(tmp_path / "absent"), device="cpu")
