"""Python access through DeploymentHandles, and how the MusicGen deployment batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from infra.audio import Audio
from models.types import GeneratedAudio, TranscribeOptions

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def music(stack: object) -> object:
    from ray import serve

    return serve.get_deployment_handle("MusicGen", app_name="soundstage")


def test_generate_through_a_handle(music: object) -> None:
    result: GeneratedAudio = music.generate.remote("strings swell", 1.5, 11).result()  # type: ignore[attr-defined]
    assert result.audio.samples.shape == (1, 48000) and result.audio.sample_rate == 32000
    assert result.seed == 11 and result.model.weights == "debug-random"
    info = music.info.remote().result()  # type: ignore[attr-defined]
    assert info["gpu_share"] == 0.25 and info["device"] == "cpu"


def test_concurrent_calls_batch_without_changing_results(music: object) -> None:
    prompts = [("rain on a roof", 1), ("city at night", 2), ("rain on a roof", 3)]
    alone = [music.generate.remote(p, 0.5, s).result() for p, s in prompts]  # type: ignore[attr-defined]
    together = [music.generate.remote(p, 0.5, s) for p, s in prompts]  # type: ignore[attr-defined]
    batched = [r.result() for r in together]
    for a, b in zip(alone, batched, strict=True):
        # Same seed, same audio whatever the request was batched with (floating-point noise aside).
        np.testing.assert_allclose(a.audio.samples, b.audio.samples, atol=1e-5)
    assert not np.allclose(batched[0].audio.samples, batched[2].audio.samples)


def test_every_model_deployment_answers_its_handle(stack: object) -> None:
    import math

    from ray import serve

    rate = 16000
    t = np.arange(rate * 2) / rate
    tone = Audio((0.5 * np.sin(2 * math.pi * 220.0 * t))[None].astype(np.float32), rate)

    def handle(name: str) -> Any:
        return serve.get_deployment_handle(name, app_name="soundstage")

    stems = handle("Separation").separate.remote(tone).result()
    assert set(stems) == {"drums", "bass", "other", "vocals"} and stems["vocals"].sample_rate == 44100
    contour = handle("Pitch").detect.remote(tone).result()
    assert abs(float(np.median(contour.f0_hz[contour.voiced])) - 220.0) < 2.2
    assert handle("Pitch").shift.remote(tone, 12.0).result().num_samples == tone.num_samples
    assert handle("VAD").detect.remote(tone).result() == []
    assert handle("Diarizer").diarize.remote(tone).result() == []
    assert handle("ASR").transcribe.remote(tone).result().duration_s == 2.0
    streamed = list(
        handle("ASR").options(stream=True).transcribe_stream.remote(tone, TranscribeOptions(language="en"))
    )
    assert [(p.language, p.duration_s, p.segments) for p in streamed] == [("en", 2.0, ())]  # the head only
    melody = handle("MusicGenMelody").generate.remote("strings", 0.5, 1, melody=tone).result()
    assert melody.audio.samples.shape == (1, 16000) and melody.model.weights == "debug-random"
    continued = handle("MusicGen").continue_audio.remote(tone, "strings", 2.5, 2).result()
    assert continued.audio.samples.shape == (1, 80000) and continued.seed == 2
    names = ("Separation", "ASR", "Diarizer", "MusicGenMelody")
    shares = {name: handle(name).info.remote().result()["gpu_share"] for name in names}
    assert shares == {"Separation": 0.25, "ASR": 0.25, "Diarizer": 0.125, "MusicGenMelody": 0.25}
