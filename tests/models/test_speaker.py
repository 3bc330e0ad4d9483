"""Resemblyzer speaker embeddings (real packaged weights) on two voices made with the stock TTS.

The two voices: `heart`, hibari's bundled neural voice, and a second voice made from it by shifting
the pitch down 6 semitones *without* formant preservation (`shift_pitch(..., -6, preserve_formants=
False)`): F0 and every formant drop by 2^(-6/12) = 0.71, as from a larger vocal tract. The offline TTS
has one voice only; this is the strongest "other speaker" we can make from it. The tests check that
the encoder really separates the two (same-voice pairs of different sentences are closer than any
cross-voice pair, by a wide margin).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from infra.audio import Audio, EmptyAudioError, resample
from infra.dsp.regions import SpeechRegion
from infra.dsp.vocoder import shift_pitch
from models.speaker import SAFETENSORS_FILE, SpeakerEncoder, _mel_frames
from models.tts import StockTTS
from models.types import ModelLoadingError

SEMITONES = -6.0
SENTENCES_A = (
    "The weather is lovely this morning in the valley.",
    "Please bring the blue folder to my office tomorrow.",
    "We should leave before the traffic gets worse tonight.",
)
SENTENCES_B = (
    "I think the old bridge was built a very long time ago.",
    "Could you tell me where the nearest train station is?",
    "My sister plays the violin in a small orchestra.",
)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The encoder's LSTM with 2 intra-op threads on a busy 2-core host is 10-100x slower (see
    models/speaker.py); deployments run it single-threaded, and so do these tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def voices(stock_tts: StockTTS) -> dict[str, list[Audio]]:
    """Three sentences in voice A (`heart`) and three other sentences in voice B (A shifted -6 st)."""
    a = stock_tts.synthesize(list(SENTENCES_A))
    b = [shift_pitch(x, SEMITONES, preserve_formants=False) for x in stock_tts.synthesize(list(SENTENCES_B))]
    return {"A": a, "B": b}


def test_model_identity(speaker_encoder: SpeakerEncoder) -> None:
    assert (speaker_encoder.sample_rate, speaker_encoder.channels, speaker_encoder.dim) == (16000, 1, 256)
    assert speaker_encoder.info.model_id == "resemblyzer"
    assert speaker_encoder.info.revision == "0.1.4"
    assert speaker_encoder.info.weights == "pretrained"
    assert speaker_encoder.device == "cpu"


def test_embeddings_are_256d_unit_vectors(
    speaker_encoder: SpeakerEncoder, voices: dict[str, list[Audio]]
) -> None:
    for clip in voices["A"] + voices["B"]:
        e = speaker_encoder.embed(clip)
        assert e.shape == (256,) and e.dtype == np.float32
        assert float(np.linalg.norm(e)) == pytest.approx(1.0, abs=1e-5)


def test_same_voice_is_closer_than_the_other_voice(
    speaker_encoder: SpeakerEncoder, voices: dict[str, list[Audio]]
) -> None:
    a = np.stack([speaker_encoder.embed(x) for x in voices["A"]])
    b = np.stack([speaker_encoder.embed(x) for x in voices["B"]])
    upper = np.triu_indices(len(a), 1)
    same = np.concatenate([(a @ a.T)[upper], (b @ b.T)[upper]])
    cross = (a @ b.T).ravel()
    # Measured: same voice 0.84-0.92, across voices 0.54-0.67.
    assert same.min() > cross.max() + 0.1, (same, cross)
    # The shift alone, same sentence, is as far as a different speaker.
    shifted = speaker_encoder.embed(shift_pitch(voices["A"][0], SEMITONES, preserve_formants=False))
    assert float(a[0] @ shifted) < same.min() - 0.1


def test_rate_channels_and_level_do_not_matter(
    speaker_encoder: SpeakerEncoder, voices: dict[str, list[Audio]]
) -> None:
    clip = voices["A"][0]
    reference = speaker_encoder.embed(clip)
    at_16k = speaker_encoder.embed(resample(clip, 16000))
    stereo = speaker_encoder.embed(Audio(np.concatenate([clip.samples, clip.samples]), clip.sample_rate))
    quiet = speaker_encoder.embed(Audio(clip.samples * np.float32(0.05), clip.sample_rate))  # -26 dB
    quieter = speaker_encoder.embed(Audio(clip.samples * np.float32(0.01), clip.sample_rate))  # -40 dB
    np.testing.assert_allclose(stereo, reference, atol=1e-5)
    assert float(reference @ at_16k) > 0.999
    # Input quieter than -30 dBFS RMS is raised to it (as Resemblyzer does), so any such level gives
    # the same embedding; the clip itself (about -26 dBFS) is left as it is, and is still close.
    np.testing.assert_allclose(quiet, quieter, atol=1e-4)
    assert float(reference @ quiet) > 0.98


def test_embed_windows_inside_speech_regions(
    speaker_encoder: SpeakerEncoder, voices: dict[str, list[Audio]]
) -> None:
    clip = resample(voices["A"][1], 16000)
    regions = [SpeechRegion(0.3, 2.0), SpeechRegion(2.05, 2.3), SpeechRegion(2.3, 2.95)]
    embeddings, windows = speaker_encoder.embed_windows(clip, regions)
    # 1.7 s -> windows at 0.3 and 0.5 (the last ends at the region's end); 0.25 s -> none; 0.65 s -> itself.
    assert windows == [(0.3, 1.8), (0.5, 2.0), (2.3, 2.95)]
    assert embeddings.shape == (3, 256) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    for (start, end), row in zip(windows, embeddings, strict=True):
        piece = Audio(clip.samples[:, round(start * 16000) : round(end * 16000)], 16000)
        np.testing.assert_allclose(row, speaker_encoder.embed(piece), atol=1e-5)


def test_embed_windows_hops_through_long_regions(
    speaker_encoder: SpeakerEncoder, voices: dict[str, list[Audio]]
) -> None:
    clip = voices["B"][0]
    region = SpeechRegion(0.25, clip.duration_s - 0.25)
    _, windows = speaker_encoder.embed_windows(clip, [region], window_s=1.0, hop_s=0.5)
    starts = [s for s, _ in windows]
    assert all(e - s == pytest.approx(1.0) for s, e in windows)
    assert starts[0] == region.start and windows[-1][1] == pytest.approx(region.end)
    assert np.all(np.diff(starts) <= 0.5 + 1e-6) and np.all(np.diff(starts) > 0)
    assert all(region.start <= s and e <= region.end + 1e-6 for s, e in windows)


def test_embed_windows_edge_cases(speaker_encoder: SpeakerEncoder, voices: dict[str, list[Audio]]) -> None:
    clip = voices["A"][0]
    embeddings, windows = speaker_encoder.embed_windows(clip, [])
    assert embeddings.shape == (0, 256) and windows == []
    # A region reaching past the end is clipped to the audio.
    _, windows = speaker_encoder.embed_windows(
        clip, [SpeechRegion(clip.duration_s - 1.0, clip.duration_s + 5)]
    )
    assert windows == [(pytest.approx(clip.duration_s - 1.0), pytest.approx(clip.duration_s))]
    for bad in ({"window_s": 0.2}, {"hop_s": 0.0}, {"window_s": 1.0, "hop_s": 1.5}):
        with pytest.raises(ValueError):
            speaker_encoder.embed_windows(clip, [SpeechRegion(0.0, 1.0)], **bad)
    with pytest.raises(EmptyAudioError):
        speaker_encoder.embed(Audio(np.zeros((1, 0), np.float32), 16000))


def test_mel_front_end_matches_librosa() -> None:
    """The numpy front end equals librosa's melspectrogram as Resemblyzer calls it."""
    librosa = pytest.importorskip("librosa")
    wav = (np.random.default_rng(0).normal(size=24_321) * 0.1).astype(np.float32)
    expected = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    np.testing.assert_allclose(_mel_frames(wav), expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


def test_loads_safetensors_from_a_local_folder(
    speaker_encoder: SpeakerEncoder, voices: dict[str, list[Audio]], tmp_path: Path
) -> None:
    from safetensors.numpy import save_file

    save_file(speaker_encoder.weights(), str(tmp_path / SAFETENSORS_FILE))
    local = SpeakerEncoder.from_pretrained(str(tmp_path), device="cpu")
    assert local.info.revision is not None and local.info.revision.startswith("sha256:")
    clip = voices["B"][1]
    np.testing.assert_allclose(local.embed(clip), speaker_encoder.embed(clip), atol=1e-6)


def test_loading_errors(speaker_encoder: SpeakerEncoder, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    with pytest.raises(ModelLoadingError, match="not found"):
        SpeakerEncoder.from_pretrained(str(tmp_path), device="cpu")
    with pytest.raises(ModelLoadingError):
        SpeakerEncoder.from_pretrained("hf://resemble-ai/resemblyzer", device="cpu")
    weights = speaker_encoder.weights()
    del weights["linear.bias"]
    save_file(weights, str(tmp_path / SAFETENSORS_FILE))
    with pytest.raises(ModelLoadingError, match=r"lack parameters \['linear.bias'\]"):
        SpeakerEncoder.from_pretrained(str(tmp_path), device="cpu")
    (tmp_path / SAFETENSORS_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelLoadingError, match="safetensors"):
        SpeakerEncoder.from_pretrained(str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="device"):
        SpeakerEncoder.from_pretrained(device="tpu")
