"""MusicGen wrapper on the tiny `debug` model: shapes, exact lengths, seeding, save/load, loading errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from infra.audio import Audio
from models.musicgen import MusicGen
from models.types import ModelLoadingError

PROMPT = "lofi hip hop beat with warm piano"
OTHER_PROMPT = "a much longer prompt: fast techno with acid bass and a four on the floor kick"


@pytest.fixture(scope="module")
def model() -> MusicGen:
    return MusicGen.from_pretrained("debug", device="cpu")


def generate_one(model: MusicGen, prompt: str = PROMPT, **kwargs: object) -> Audio:
    settings: dict = {"duration_s": 0.3, "seed": 7, **kwargs}
    (audio,) = model.generate([prompt], **settings)
    return audio


def test_debug_model_describes_itself(model: MusicGen) -> None:
    assert (model.sample_rate, model.channels, model.frame_rate) == (32000, 1, 50.0)
    assert model.info.model_id == "debug"
    assert model.info.weights == "debug-random"
    assert model.device == "cpu"


@pytest.mark.parametrize("duration_s", [0.001, 0.37, 1.0])
def test_output_has_exact_length_and_shape(model: MusicGen, duration_s: float) -> None:
    batch = model.generate([PROMPT, OTHER_PROMPT], duration_s=duration_s, seed=1)

    assert len(batch) == 2
    for audio in batch:
        assert audio.sample_rate == 32000
        assert audio.samples.shape == (1, round(duration_s * 32000))
        assert audio.samples.dtype == np.float32
        assert np.isfinite(audio.samples).all()
        assert np.abs(audio.samples).max() > 0


def test_same_seed_is_bit_identical(model: MusicGen) -> None:
    np.testing.assert_array_equal(generate_one(model).samples, generate_one(model).samples)


def test_different_seeds_differ(model: MusicGen) -> None:
    different = generate_one(model, seed=8).samples
    assert not np.allclose(generate_one(model, seed=7).samples, different, rtol=0, atol=1e-5)


@pytest.mark.parametrize("guidance_scale", [3.0, 1.0])
def test_prompt_alone_equals_prompt_in_batch(model: MusicGen, guidance_scale: float) -> None:
    alone = generate_one(model, seed=None, seeds=[7], guidance_scale=guidance_scale)
    batch = model.generate(
        [OTHER_PROMPT, PROMPT], duration_s=0.3, seeds=[3, 7], guidance_scale=guidance_scale
    )
    # The sampled tokens are the same (each prompt samples from its own generator), but CPU kernels
    # block matmuls/convolutions differently for other batch sizes and the shorter prompt is padded,
    # so logits and decoded samples differ by float rounding (~1e-7). One different token would change
    # the audio by the order of the signal itself (~1e-2), far above this tolerance.
    np.testing.assert_allclose(batch[1].samples, alone.samples, rtol=0, atol=1e-5)
    assert not np.allclose(batch[0].samples, alone.samples, rtol=0, atol=1e-5)


def test_seed_applies_to_every_prompt(model: MusicGen) -> None:
    twins = model.generate([PROMPT, PROMPT], duration_s=0.2, seed=5)
    np.testing.assert_allclose(twins[0].samples, twins[1].samples, rtol=0, atol=1e-5)


def test_prompt_and_guidance_change_the_output(model: MusicGen) -> None:
    reference = generate_one(model).samples
    other_prompt = generate_one(model, OTHER_PROMPT).samples
    unguided = generate_one(model, guidance_scale=1.0).samples
    assert not np.allclose(other_prompt, reference, rtol=0, atol=1e-5)
    assert not np.allclose(unguided, reference, rtol=0, atol=1e-5)


def test_save_and_load_round_trip(model: MusicGen, tmp_path: Path) -> None:
    folder = tmp_path / "musicgen-debug"
    model.save_pretrained(folder)
    loaded = MusicGen.from_pretrained(str(folder), device="cpu")

    assert (folder / "model.safetensors").is_file()
    assert loaded.info.weights == "debug-random"
    assert loaded.info.model_id == str(folder)
    np.testing.assert_array_equal(generate_one(loaded).samples, generate_one(model).samples)


def test_debug_model_is_the_same_every_time(model: MusicGen) -> None:
    torch.manual_seed(12345)  # the debug weights must not depend on the global RNG
    again = MusicGen.from_pretrained("debug", device="cpu")
    np.testing.assert_array_equal(generate_one(again).samples, generate_one(model).samples)


def test_hub_id_offline_raises_model_loading_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadingError, match="facebook/musicgen-small"):
        MusicGen.from_pretrained("facebook/musicgen-small", device="cpu", cache_dir=tmp_path / "hub")


def test_missing_folder_raises_model_loading_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadingError, match="does not exist"):
        MusicGen.from_pretrained(str(tmp_path / "absent"), device="cpu")


@pytest.mark.parametrize(
    ("prompts", "settings", "message"),
    [
        ([], {"duration_s": 1.0}, "prompts"),
        ([PROMPT], {"duration_s": 0.0}, "duration_s"),
        ([PROMPT], {"duration_s": -1.0}, "duration_s"),
        ([PROMPT], {"duration_s": float("nan")}, "duration_s"),
        ([PROMPT], {"duration_s": 1e-6}, "shorter than one sample"),
        ([PROMPT], {"duration_s": 1.0, "seeds": [1, 2]}, "seeds"),
        ([PROMPT], {"duration_s": 1.0, "seed": 1, "seeds": [1]}, "seed"),
        ([PROMPT], {"duration_s": 1.0, "guidance_scale": 0.5}, "guidance_scale"),
        ([PROMPT], {"duration_s": 1.0, "top_k": 0}, "top_k"),
        ([PROMPT], {"duration_s": 1.0, "temperature": 0.0}, "temperature"),
    ],
)
def test_bad_input_raises_value_error(
    model: MusicGen, prompts: list[str], settings: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        model.generate(prompts, **settings)


def test_short_clip_codes_are_a_prefix_of_long_clip_codes(
    model: MusicGen, monkeypatch: pytest.MonkeyPatch
) -> None:
    # transformers skips MusicGen's delay pattern (misaligning the codebooks) for very short generations;
    # the wrapper must ask for enough steps. With the same prompt and seed, every code that was sampled
    # before the delay pattern's end padding entered the decoder input (frame f of codebook k, sampled
    # at step f + k <= frames) must equal the longer clip's; the tail codes legitimately differ, and so do
    # the audio prefixes (the codec decoder's output depends on the clip length). Captured through the
    # private codec.
    codec = model._model.audio_encoder
    captured: list[torch.Tensor] = []
    decode = codec.decode

    def capture(codes: torch.Tensor, *args: object, **kwargs: object) -> object:
        captured.append(codes[0, 0].clone())  # [K, frames]
        return decode(codes, *args, **kwargs)

    monkeypatch.setattr(codec, "decode", capture)
    generate_one(model, duration_s=0.001)
    generate_one(model, duration_s=0.3)
    short, long = captured
    num_codebooks, frames = short.shape
    settled = torch.arange(frames)[None, :] + torch.arange(num_codebooks)[:, None] <= frames
    assert frames < long.shape[-1]
    assert torch.equal(short[settled], long[:, :frames][settled])
