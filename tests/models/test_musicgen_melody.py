"""MusicGen-Melody wrapper on the tiny `debug` model: chroma, exact lengths, seeding, melody conditioning,
save/load and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from infra.audio import Audio, AudioError
from models.musicgen_melody import ChromaExtractor, MusicGenMelody
from models.types import ModelLoadingError

PROMPT = "lofi hip hop beat with warm piano"
OTHER_PROMPT = "fast techno with acid bass"
SAMPLE_RATE = 32000
# Pitch-class bins of the chroma (bin 0 = C).
C4_HZ, G4_HZ, A4_HZ = 261.63, 392.0, 440.0
C_BIN, G_BIN, A_BIN = 0, 7, 9


def sine(
    frequency_hz: float, seconds: float = 1.0, sample_rate: int = SAMPLE_RATE, channels: int = 1
) -> Audio:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = (0.5 * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)
    return Audio(np.repeat(wave[None], channels, axis=0), sample_rate)


@pytest.fixture(scope="module")
def model() -> MusicGenMelody:
    return MusicGenMelody.from_pretrained("debug", device="cpu")


def generate_one(model: MusicGenMelody, melody: Audio | None, **kwargs: object) -> np.ndarray:
    settings: dict = {"duration_s": 0.3, "seed": 7, **kwargs}
    (audio,) = model.generate([PROMPT], melody=melody, **settings)
    return audio.samples


@pytest.fixture(scope="module")
def with_a(model: MusicGenMelody) -> np.ndarray:
    return generate_one(model, sine(A4_HZ))


@pytest.fixture(scope="module")
def without_melody(model: MusicGenMelody) -> np.ndarray:
    return generate_one(model, None)


def test_debug_model_describes_itself(model: MusicGenMelody) -> None:
    assert (model.sample_rate, model.channels, model.frame_rate) == (32000, 1, 50.0)
    assert (model.info.model_id, model.info.weights) == ("debug", "debug-random")
    assert model.device == "cpu"


@pytest.mark.parametrize(
    ("melody", "pitch_class"),
    [
        (sine(A4_HZ, 2.0), A_BIN),
        (sine(G4_HZ, 2.0), G_BIN),
        (sine(C4_HZ, 2.0), C_BIN),
        (sine(A4_HZ, 2.0, sample_rate=44100, channels=2), A_BIN),
    ],
)
def test_chroma_marks_the_pitch_class_of_a_sine(
    model: MusicGenMelody, melody: Audio, pitch_class: int
) -> None:
    chroma = model.melody_chroma(melody)
    # One frame per hop of 4096 samples at 32 kHz, centred: 1 + 64000 // 4096.
    assert chroma.shape == (16, 12)
    assert torch.equal(chroma.sum(dim=1), torch.ones(16))
    assert chroma.argmax(dim=1).tolist() == [pitch_class] * 16


def test_chroma_of_a_short_melody_is_padded_to_one_window() -> None:
    # Under n_fft (16384) samples, the melody is centred in zeros: 1 + 16384 // 4096 frames.
    assert ChromaExtractor()(sine(A4_HZ, 0.1)).shape == (5, 12)


@pytest.mark.parametrize("duration_s", [0.001, 0.37])
def test_output_has_exact_length_and_shape(model: MusicGenMelody, duration_s: float) -> None:
    batch = model.generate([PROMPT, OTHER_PROMPT], melody=sine(A4_HZ), duration_s=duration_s, seed=1)

    assert len(batch) == 2
    for audio in batch:
        assert audio.sample_rate == SAMPLE_RATE
        assert audio.samples.shape == (1, round(duration_s * SAMPLE_RATE))
        assert audio.samples.dtype == np.float32
        assert np.isfinite(audio.samples).all()
        assert np.abs(audio.samples).max() > 0


def test_same_seed_is_bit_identical_and_other_seeds_differ(model: MusicGenMelody, with_a: np.ndarray) -> None:
    np.testing.assert_array_equal(generate_one(model, sine(A4_HZ)), with_a)
    assert not np.allclose(generate_one(model, sine(A4_HZ), seed=8), with_a, rtol=0, atol=1e-5)


def test_melody_changes_the_output(
    model: MusicGenMelody, with_a: np.ndarray, without_melody: np.ndarray
) -> None:
    with_g = generate_one(model, sine(G4_HZ))
    assert not np.allclose(with_a, without_melody, rtol=0, atol=1e-5)
    assert not np.allclose(with_a, with_g, rtol=0, atol=1e-5)


def test_no_melody_is_the_all_c_chroma(model: MusicGenMelody, without_melody: np.ndarray) -> None:
    # transformers' "no melody" input is chroma bin 0 (C) in every frame, so a pure C sine conditions the
    # model exactly as no melody does (documented in `generate`).
    np.testing.assert_array_equal(generate_one(model, sine(C4_HZ)), without_melody)


def test_save_and_load_round_trip(model: MusicGenMelody, with_a: np.ndarray, tmp_path: Path) -> None:
    folder = tmp_path / "musicgen-melody-debug"
    model.save_pretrained(folder)
    loaded = MusicGenMelody.from_pretrained(str(folder), device="cpu")

    assert (folder / "model.safetensors").is_file()
    extractor = json.loads((folder / "preprocessor_config.json").read_text())
    assert extractor["feature_extractor_type"] == "MusicgenMelodyFeatureExtractor"
    assert (extractor["n_fft"], extractor["hop_length"], extractor["sampling_rate"]) == (16384, 4096, 32000)
    assert loaded.info.weights == "debug-random"
    assert loaded.info.model_id == str(folder)
    np.testing.assert_array_equal(generate_one(loaded, sine(A4_HZ)), with_a)


def test_debug_model_is_the_same_every_time(model: MusicGenMelody) -> None:
    torch.manual_seed(12345)  # the debug weights must not depend on the global RNG
    again = MusicGenMelody.from_pretrained("debug", device="cpu")
    expected = model._model.state_dict()
    for name, tensor in again._model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_hub_id_offline_raises_model_loading_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadingError, match="facebook/musicgen-melody"):
        MusicGenMelody.from_pretrained("facebook/musicgen-melody", device="cpu", cache_dir=tmp_path / "hub")


def test_missing_folder_raises_model_loading_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadingError, match="does not exist"):
        MusicGenMelody.from_pretrained(str(tmp_path / "absent"), device="cpu")


@pytest.mark.parametrize(
    ("prompts", "settings", "error", "message"),
    [
        ([PROMPT], {"melody": Audio(np.zeros((1, 0), np.float32), SAMPLE_RATE)}, AudioError, "no samples"),
        ([PROMPT], {"melody": Audio(np.full((1, 64), np.inf, np.float32), SAMPLE_RATE)}, AudioError, "NaN"),
        ([], {}, ValueError, "prompts"),
        ([PROMPT], {"duration_s": 1e-6}, ValueError, "shorter than one sample"),
        ([PROMPT], {"seeds": [1, 2]}, ValueError, "seeds"),
        ([PROMPT], {"guidance_scale": 0.5}, ValueError, "guidance_scale"),
    ],
)
def test_bad_input_raises_value_error(
    model: MusicGenMelody, prompts: list[str], settings: dict, error: type[ValueError], message: str
) -> None:
    assert issubclass(error, ValueError)
    with pytest.raises(error, match=message):
        model.generate(prompts, **{"duration_s": 1.0, **settings})
