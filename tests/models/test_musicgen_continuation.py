"""MusicGen.continue_audio on the tiny `debug` model: total length, the prompt's reconstruction, seeding."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch

from infra.audio import Audio, AudioError
from models.musicgen import MusicGen

PROMPT = "lofi hip hop beat with warm piano"
SAMPLE_RATE = 32000
CLIP_S = 0.3
TOTAL_S = 0.5
# Decoding a longer code sequence changes only float rounding in the codec's convolutions and LSTM (~1e-7);
# one different code changes the decoded audio by the order of the signal (~1e-2).
ROUNDING = 1e-5


def sine(frequency_hz: float, seconds: float, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> Audio:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = (0.5 * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)
    return Audio(np.repeat(wave[None], channels, axis=0), sample_rate)


@pytest.fixture(scope="module")
def model() -> MusicGen:
    return MusicGen.from_pretrained("debug", device="cpu")


@pytest.fixture(scope="module")
def clip() -> Audio:
    return sine(440.0, CLIP_S)


@pytest.fixture(scope="module")
def continued(model: MusicGen, clip: Audio) -> list[Audio]:
    """The same text prompt continuing the same clip twice, with seeds 1 and 2."""
    return model.continue_audio(clip, [PROMPT, PROMPT], duration_s=TOTAL_S, seeds=[1, 2])


def first_generated_sample(model: MusicGen) -> int:
    """New codes start at the first codec frame after the clip's last (partial) frame."""
    hop = round(SAMPLE_RATE / model.frame_rate)
    return int(np.ceil(CLIP_S * SAMPLE_RATE / hop)) * hop


def codec_reconstruction(model: MusicGen, clip: Audio) -> npt.NDArray[np.float32]:
    """decode(encode(clip)) `[C, T]` with the decoder's codebooks, through the private codec."""
    codec = model._model.audio_encoder
    num_codebooks = model._model.decoder.num_codebooks
    with torch.inference_mode():
        codes = codec.encode(torch.from_numpy(clip.samples)[None]).audio_codes[:, :, :num_codebooks]
        decoded = codec.decode(codes, [None]).audio_values
    return decoded[0, :, : clip.num_samples].numpy()


def test_returns_total_length_for_each_prompt(continued: list[Audio]) -> None:
    assert len(continued) == 2
    for audio in continued:
        assert audio.sample_rate == SAMPLE_RATE
        assert audio.samples.shape == (1, round(TOTAL_S * SAMPLE_RATE))
        assert audio.samples.dtype == np.float32
        assert np.isfinite(audio.samples).all()


def test_output_starts_with_the_codec_reconstruction_of_the_clip(
    model: MusicGen, clip: Audio, continued: list[Audio]
) -> None:
    reconstruction = codec_reconstruction(model, clip)
    # The debug codec is random, so its reconstruction is far from the sine: comparing with the clip
    # itself could not pass, comparing with the reconstruction checks the prompt codes were kept.
    assert not np.allclose(reconstruction, clip.samples, rtol=0, atol=1e-2)
    for audio in continued:
        np.testing.assert_allclose(
            audio.samples[:, : clip.num_samples], reconstruction, rtol=0, atol=ROUNDING
        )


def test_seeds_give_different_continuations_after_the_prompt(model: MusicGen, continued: list[Audio]) -> None:
    start = first_generated_sample(model)
    first, second = (audio.samples[:, start:] for audio in continued)
    assert first.shape[-1] > 0
    assert not np.allclose(first, second, rtol=0, atol=ROUNDING)


def test_same_seed_gives_the_same_continuation(model: MusicGen, clip: Audio, continued: list[Audio]) -> None:
    (alone,) = model.continue_audio(clip, [PROMPT], duration_s=TOTAL_S, seed=1)
    # Alone or in a batch of two: the same tokens; CPU kernels round differently for other batch sizes.
    np.testing.assert_allclose(alone.samples, continued[0].samples, rtol=0, atol=ROUNDING)
    (again,) = model.continue_audio(clip, [PROMPT], duration_s=TOTAL_S, seed=1)
    np.testing.assert_array_equal(again.samples, alone.samples)


def test_clip_at_another_rate_and_in_stereo_is_conformed(model: MusicGen) -> None:
    stereo = sine(440.0, 0.1, sample_rate=44100, channels=2)
    batch = model.continue_audio(stereo, [PROMPT], duration_s=0.15, seed=3)
    assert [audio.samples.shape for audio in batch] == [(1, round(0.15 * SAMPLE_RATE))]


@pytest.mark.parametrize(
    ("clip_audio", "duration_s", "error", "message"),
    [
        (sine(440.0, CLIP_S), CLIP_S, ValueError, "must exceed"),
        (sine(440.0, CLIP_S), 0.1, ValueError, "must exceed"),
        (sine(440.0, CLIP_S, sample_rate=16000), CLIP_S, ValueError, "must exceed"),
        (Audio(np.zeros((1, 0), np.float32), SAMPLE_RATE), 1.0, AudioError, "no samples"),
        (Audio(np.full((1, 100), np.nan, np.float32), SAMPLE_RATE), 1.0, AudioError, "NaN"),
        (sine(440.0, CLIP_S), float("nan"), ValueError, "duration_s"),
    ],
)
def test_bad_input_raises_value_error(
    model: MusicGen, clip_audio: Audio, duration_s: float, error: type[ValueError], message: str
) -> None:
    assert issubclass(error, ValueError)
    with pytest.raises(error, match=message):
        model.continue_audio(clip_audio, [PROMPT], duration_s=duration_s, seed=1)


def test_bad_settings_raise_value_error(model: MusicGen, clip: Audio) -> None:
    with pytest.raises(ValueError, match="seeds"):
        model.continue_audio(clip, [PROMPT], duration_s=TOTAL_S, seeds=[1, 2])
    with pytest.raises(ValueError, match="prompts"):
        model.continue_audio(clip, [], duration_s=TOTAL_S)
