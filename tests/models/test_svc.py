"""Singing voice conversion on the debug models (random-init HuBERT + RVC v2 synthesizer): shapes and
labels, determinism, the F0 path driving the output pitch (measured with SwiftF0), and the converter's
round trip through an RVC-layout `.pth`."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from infra.audio import Audio
from models.convert.svc import convert_rvc_checkpoint, export_rvc_checkpoint
from models.pitch import PitchDetector
from models.svc import SingingVoiceConverter, VoiceModel, coarse_pitch, frame_f0
from models.svc_net import SynthConfig, Synthesizer
from models.types import ModelInfo, ModelLoadingError, PitchContour

RATE = 16000
DEBUG = ModelInfo(model_id="debug", revision=None, weights="debug-random")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Small convolutions: two intra-op threads on the busy 2-core host made a conversion 10x slower
    (0.67 s against 0.06 s of CPU for 0.6 s of audio); deployments run one thread per replica CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def converter() -> SingingVoiceConverter:
    return SingingVoiceConverter.from_pretrained("debug", device="cpu")


@pytest.fixture(scope="module")
def voice(converter: SingingVoiceConverter) -> VoiceModel:
    return converter.load_voice("debug")


def vocals(duration_s: float = 0.6, hz: float = 220.0) -> Audio:
    t = np.arange(round(duration_s * RATE)) / RATE
    return Audio((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None], RATE)


def steady(hz: float, duration_s: float, hop_s: float = 0.016) -> PitchContour:
    times = np.arange(0.0, duration_s, hop_s)
    n = len(times)
    return PitchContour(times, np.full(n, hz), np.ones(n), np.ones(n, dtype=bool), hop_s)


def test_debug_conversion_has_the_voice_rate_the_input_length_and_debug_labels(
    converter: SingingVoiceConverter, voice: VoiceModel
) -> None:
    out = converter.convert(vocals(0.6), voice=voice, pitch=steady(220, 0.6), seed=3)
    assert (voice.sample_rate, out.audio.sample_rate) == (40000, 40000)
    assert out.audio.samples.shape == (1, 24000)
    assert out.audio.samples.dtype == np.float32 and np.isfinite(out.audio.samples).all()
    assert np.abs(out.audio.samples).max() > 0
    assert (out.encoder, out.voice, out.seed) == (DEBUG, DEBUG, 3)
    assert converter.sample_rate == 16000 and converter.info == DEBUG


def test_same_seed_same_samples_other_seed_other_samples(
    converter: SingingVoiceConverter, voice: VoiceModel
) -> None:
    first = converter.convert(vocals(), voice=voice, pitch=steady(220, 0.6), seed=1).audio.samples
    again = converter.convert(vocals(), voice=voice, pitch=steady(220, 0.6), seed=1).audio.samples
    other = converter.convert(vocals(), voice=voice, pitch=steady(220, 0.6), seed=2).audio.samples
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("hz", [150.0, 300.0])
def test_the_f0_contour_sets_the_output_pitch(
    converter: SingingVoiceConverter, voice: VoiceModel, hz: float
) -> None:
    """The same 220 Hz input sung along a 150 or 300 Hz contour comes out at that pitch (SwiftF0)."""
    out = converter.convert(vocals(1.0), voice=voice, pitch=steady(hz, 1.0), seed=0).audio
    level = Audio(out.samples / np.abs(out.samples).max() * 0.5, out.sample_rate)  # random weights: quiet
    contour = PitchDetector.from_pretrained().detect(level)
    assert contour.voiced.mean() > 0.8
    assert np.median(contour.f0_hz[contour.voiced]) == pytest.approx(hz, rel=0.01)


def test_coarse_pitch_spans_rvc_bins() -> None:
    bins = coarse_pitch(np.array([0.0, 20.0, 50.0, 220.0, 440.0, 1100.0, 3000.0]))
    assert bins.tolist()[:3] == [1, 1, 1] and bins.tolist()[-2:] == [255, 255]
    assert 1 < bins[3] < bins[4] < 255


def test_unvoiced_frames_stay_unvoiced_on_the_frame_grid() -> None:
    contour = steady(200, 1.0)
    voiced = contour.voiced.copy()
    voiced[(contour.times_s > 0.4) & (contour.times_s < 0.6)] = False
    f0 = frame_f0(PitchContour(contour.times_s, contour.f0_hz, contour.confidence, voiced, 0.016), 100)
    assert f0.shape == (100,)
    assert (f0[45:55] == 0).all() and np.allclose(f0[:38], 200) and np.allclose(f0[62:], 200)


def test_a_speaker_beyond_the_voice_model_is_refused(
    converter: SingingVoiceConverter, voice: VoiceModel
) -> None:
    with pytest.raises(ValueError, match="speaker 4"):
        converter.convert(vocals(), voice=voice, pitch=steady(220, 0.6), speaker=voice.speakers)


def test_rvc_checkpoint_round_trip_gives_the_same_output(
    converter: SingingVoiceConverter, voice: VoiceModel, tmp_path: Path
) -> None:
    pth = export_rvc_checkpoint(voice, tmp_path / "singer.pth", half=False)
    raw = torch.load(pth, weights_only=True)
    assert raw["version"] == "v2" and raw["sr"] == "40k" and len(raw["config"]) == 18
    assert {"dec.ups.0.weight_g", "dec.ups.0.weight_v", "flow.flows.6.enc.cond_layer.weight_v"} <= set(
        raw["weight"]
    )
    assert raw["weight"]["enc_p.encoder.attn_layers.0.emb_rel_k"].shape == (1, 21, 16)
    folder = convert_rvc_checkpoint(pth, tmp_path / "singer")
    loaded = converter.load_voice(str(folder))
    assert loaded.info.weights == "debug-random"  # a debug voice stays labelled through the conversion
    assert str(loaded.info.revision).startswith("sha256:")  # the .pth file's hash
    expected = converter.convert(vocals(), voice=voice, pitch=steady(220, 0.6), seed=5).audio.samples
    actual = converter.convert(vocals(), voice=loaded, pitch=steady(220, 0.6), seed=5).audio.samples
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_half_precision_checkpoints_convert_to_float32(voice: VoiceModel, tmp_path: Path) -> None:
    folder = convert_rvc_checkpoint(export_rvc_checkpoint(voice, tmp_path / "v.pth"), tmp_path / "v")
    loaded = VoiceModel.load(str(folder))
    assert all(p.dtype == torch.float32 for p in loaded.synth.parameters())


class _Payload:
    """Not plain data: `weights_only` loading must refuse it."""


@pytest.mark.parametrize(
    ("package", "message"),
    [
        ({"config": []}, "needs the entries"),
        ({"weight": {}, "config": [], "version": "v1"}, "only v2 models with pitch"),
        ({"weight": {}, "config": [1, 2], "version": "v2"}, "config list"),
        ({"weight": {}, "config": [], "extra": "x"}, "not allowed"),
    ],
)
def test_checkpoints_that_are_not_rvc_v2_are_refused(
    package: dict[str, object], message: str, tmp_path: Path
) -> None:
    torch.save(package, tmp_path / "bad.pth")
    with pytest.raises(ModelLoadingError, match=message):
        convert_rvc_checkpoint(tmp_path / "bad.pth", tmp_path / "out")


def test_a_pickled_object_is_never_unpickled(tmp_path: Path) -> None:
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"weight": _Payload(), "config": []}))
    with pytest.raises(ModelLoadingError, match="tensors and plain data"):
        convert_rvc_checkpoint(tmp_path / "evil.pth", tmp_path / "out")


def test_weights_that_do_not_fit_the_config_are_refused(voice: VoiceModel, tmp_path: Path) -> None:
    pth = export_rvc_checkpoint(voice, tmp_path / "v.pth")
    package = torch.load(pth, weights_only=True)
    package["config"][3] = 48  # hidden channels the weights do not have
    torch.save(package, pth)
    with pytest.raises(ModelLoadingError, match="does not load"):
        convert_rvc_checkpoint(pth, tmp_path / "out")


def test_a_folder_without_a_converted_voice_names_the_converter(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadingError, match="soundstage models convert svc"):
        VoiceModel.load(str(tmp_path))


def test_the_released_40k_layout_builds() -> None:
    """The v2 40 kHz hyper-parameters RVC releases use: hop 400 (100 frames per second at 40 kHz)."""
    config = SynthConfig.from_rvc_list(
        [1025, 32, 192, 192, 768, 2, 6, 3, 0, "1", [3, 7, 11], [[1, 3, 5]] * 3, [10, 10, 2, 2], 512,
         [16, 16, 4, 4], 109, 256, 40000]
    )  # fmt: skip
    synth = Synthesizer(config)
    assert config.hop == 400 and synth.emb_g.weight.shape == (109, 256)
    assert synth.enc_p.emb_phone.weight.shape == (192, 768)
