"""Python access through DeploymentHandles, and how the MusicGen deployment batches."""

from __future__ import annotations

import numpy as np
import pytest

from models.common import GeneratedAudio

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
