"""HTDemucs wrapper on the tiny `debug` model: stems, shapes, mono input, two-stem view, save/load,
conversion of a real-layout demucs `.th` package, loading errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from demucs.api import Separator
from demucs.htdemucs import HTDemucs
from demucs.pretrained import demucs_unittest
from demucs.states import save_with_checksum, serialize_model

from infra.audio import Audio, resample
from infra.dsp.stems import two_stems
from models.convert.demucs import convert_checkpoint
from models.demucs import STEMS_4, Demucs
from models.types import ModelInfo, ModelLoadingError

RATE = 44100


@pytest.fixture(scope="module")
def model() -> Demucs:
    return Demucs.from_pretrained("debug", device="cpu")


@pytest.fixture(scope="module")
def stereo_clip() -> Audio:
    """3 s at 44.1 kHz: a 110 Hz sine on the left, 440 Hz on the right, plus a little noise."""
    t = np.arange(3 * RATE) / RATE
    rng = np.random.default_rng(0)
    left = 0.5 * np.sin(2 * np.pi * 110 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    return Audio(np.stack([left, right]).astype(np.float32), RATE)


@pytest.fixture(scope="module")
def stems(model: Demucs, stereo_clip: Audio) -> dict[str, Audio]:
    return model.separate(stereo_clip)


def test_debug_model_describes_itself(model: Demucs) -> None:
    assert (model.sample_rate, model.channels, model.sources) == (RATE, 2, STEMS_4)
    assert model.segment_s == 2.0
    assert model.info == ModelInfo(model_id="debug", revision=None, weights="debug-random")
    assert model.device == "cpu"


def test_stereo_clip_longer_than_a_segment_gives_four_stems(
    model: Demucs, stereo_clip: Audio, stems: dict[str, Audio]
) -> None:
    assert stereo_clip.duration_s > model.segment_s  # exercises apply_model's split + overlap path
    assert tuple(stems) == STEMS_4
    for audio in stems.values():
        assert audio.sample_rate == RATE
        assert audio.samples.shape == stereo_clip.samples.shape
        assert audio.samples.dtype == np.float32
        assert np.isfinite(audio.samples).all()
        assert np.abs(audio.samples).max() > 0
    assert not np.allclose(stems["vocals"].samples, stems["drums"].samples)


def test_separation_is_deterministic(model: Demucs, stereo_clip: Audio, stems: dict[str, Audio]) -> None:
    again = model.separate(stereo_clip)
    for name in STEMS_4:
        np.testing.assert_array_equal(again[name].samples, stems[name].samples)


def test_mono_input_is_resampled_and_separated_as_duplicated_stereo(model: Demucs) -> None:
    t = np.arange(16000) / 16000
    mono = Audio((0.3 * np.sin(2 * np.pi * 220 * t))[None].astype(np.float32), 16000)
    resampled = resample(mono, RATE)
    duplicated = Audio(np.repeat(resampled.samples, 2, axis=0), RATE)

    from_mono = model.separate(mono)
    from_stereo = model.separate(duplicated)

    for name in STEMS_4:
        assert from_mono[name].samples.shape == (2, resampled.num_samples)
        assert from_mono[name].sample_rate == RATE
        np.testing.assert_array_equal(from_mono[name].samples, from_stereo[name].samples)


def test_two_stems_splits_vocals_from_the_sum_of_the_rest(stems: dict[str, Audio]) -> None:
    pair = two_stems(stems)

    assert tuple(pair) == ("vocals", "no_vocals")
    np.testing.assert_array_equal(pair["vocals"].samples, stems["vocals"].samples)
    total = sum(audio.samples for audio in stems.values())
    np.testing.assert_allclose(pair["vocals"].samples + pair["no_vocals"].samples, total, rtol=0, atol=1e-6)
    expected_rest = stems["drums"].samples + stems["bass"].samples + stems["other"].samples
    np.testing.assert_allclose(pair["no_vocals"].samples, expected_rest, rtol=0, atol=1e-6)


def test_two_stems_rejects_a_missing_stem(stems: dict[str, Audio]) -> None:
    with pytest.raises(ValueError, match="guitar"):
        two_stems(stems, keep="guitar")


def test_negative_shifts_raise(model: Demucs, stereo_clip: Audio) -> None:
    with pytest.raises(ValueError, match="shifts"):
        model.separate(stereo_clip, shifts=-1)


def test_save_and_load_round_trip(
    model: Demucs, stereo_clip: Audio, stems: dict[str, Audio], tmp_path: Path
) -> None:
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]

    loaded = Demucs.from_pretrained(str(tmp_path), device="cpu")

    assert loaded.info.weights == "debug-random"
    assert (loaded.sample_rate, loaded.channels, loaded.sources, loaded.segment_s) == (RATE, 2, STEMS_4, 2.0)
    separated = loaded.separate(stereo_clip)
    for name in STEMS_4:
        np.testing.assert_array_equal(separated[name].samples, stems[name].samples)


def _omegaconf_double() -> types.ModuleType:
    """Test double for `omegaconf` (a demucs training dependency, not installed): `serialize_model` only
    calls `OmegaConf.to_container(training_args, resolve=True)`, which for a plain dict is the dict."""
    module = types.ModuleType("omegaconf")
    module.OmegaConf = type(  # type: ignore[attr-defined]
        "OmegaConf", (), {"to_container": staticmethod(lambda cfg, resolve=False: dict(cfg))}
    )
    return module


def _write_demucs_package(net: torch.nn.Module, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `.th` written by demucs' own `serialize_model` + `save_with_checksum` (float16 state as released)."""
    monkeypatch.setitem(sys.modules, "omegaconf", _omegaconf_double())
    package: dict[str, Any] = serialize_model(net, {"dset": {"segment": 2}}, half=True)
    save_with_checksum(package, folder / "tinyht.th")
    (checkpoint,) = folder.glob("tinyht-*.th")
    return checkpoint


def test_convert_checkpoint_matches_demucs_own_separator(
    stereo_clip: Audio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(1)
    # `sources` positional, as a released package may store it in `args`.
    net = HTDemucs(list(STEMS_4), channels=8, dconv_comp=4, t_layers=2, t_heads=2, segment=2).eval()
    checkpoint = _write_demucs_package(net, tmp_path, monkeypatch)
    # demucs' own facade on the .th (its loader unpickles; fine in a test, on a file the test wrote).
    reference = Separator(model=checkpoint.stem.split("-")[0], repo=tmp_path, device="cpu", shifts=0)

    out_dir = convert_checkpoint(checkpoint, tmp_path / "converted")
    converted = Demucs.from_pretrained(str(out_dir), device="cpu")

    assert converted.info == ModelInfo(str(out_dir), checkpoint.stem, "pretrained")
    assert (converted.sample_rate, converted.sources, converted.segment_s) == (RATE, STEMS_4, 2.0)
    _, expected = reference.separate_tensor(torch.from_numpy(stereo_clip.samples), RATE)
    separated = converted.separate(stereo_clip)
    assert tuple(expected) == STEMS_4
    for name in STEMS_4:
        np.testing.assert_allclose(separated[name].samples, expected[name].numpy(), rtol=0, atol=1e-6)


def test_convert_rejects_other_architectures_and_bags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = _write_demucs_package(demucs_unittest(), tmp_path, monkeypatch)  # an HDemucs (v3)
    with pytest.raises(ModelLoadingError, match="HDemucs"):
        convert_checkpoint(checkpoint, tmp_path / "out")
    bag = tmp_path / "htdemucs_ft.yaml"
    bag.write_text("models: ['f7e0c4bc', 'd12395a8', '92cfc3b6', '04573f0d']\n")
    with pytest.raises(ModelLoadingError, match="bag of models"):
        convert_checkpoint(bag, tmp_path / "out")


@pytest.mark.parametrize("uri", ["htdemucs", "hf://adefossez/HTDemucs", "/no/such/folder"])
def test_unknown_uri_raises_naming_what_was_tried(uri: str) -> None:
    with pytest.raises(ModelLoadingError, match=r"config\.json"):
        Demucs.from_pretrained(uri, device="cpu")


def test_folder_with_broken_weights_raises(model: Demucs, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadingError, match="safetensors only"):
        Demucs.from_pretrained(str(tmp_path), device="cpu")


def test_a_bag_round_trips_and_bad_bags_are_refused(tmp_path: Path) -> None:
    from models.demucs_folder import write_bag_folder

    debug = Demucs.from_pretrained("debug", device="cpu")
    for name in ("a", "b"):
        debug.save_pretrained(tmp_path / "bag" / name)
    with pytest.raises(ModelLoadingError, match="weights must be 2 rows of 4"):
        write_bag_folder(tmp_path / "bag", ["a", "b"], [[1.0, 0.0, 0.0, 0.0]], "debug-random", None)
    with pytest.raises(ModelLoadingError, match="plain folder names"):
        write_bag_folder(tmp_path / "bag", ["../a"], [[1.0] * 4], "debug-random", None)
    write_bag_folder(tmp_path / "bag", ["a", "b"], [[1.0] * 4, [1.0] * 4], "debug-random", "r1")
    bag = Demucs.from_pretrained(str(tmp_path / "bag"), device="cpu")
    assert (bag.info.weights, bag.info.revision, bag.segment_s) == ("debug-random", "r1", 2.0)
    bag.save_pretrained(tmp_path / "again")  # a loaded bag saves as a bag
    assert Demucs.from_pretrained(str(tmp_path / "again"), device="cpu").sources == STEMS_4
