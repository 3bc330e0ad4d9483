"""The voice-replacement report's regions and debug-weights summary (pure)."""

from __future__ import annotations

import numpy as np

from infra.audio import Audio
from pipelines.voice.lines import Line
from pipelines.voice.report import debug_weights, placements, replaced_region

CLIP = Audio(np.zeros((1, 10), np.float32), 1000)


def test_region_is_the_slot_plus_the_overrun_into_the_silence() -> None:
    line = Line("SPEAKER_01", 1, 1.1, 1.9, 1.0, 2.0, "hi")
    assert replaced_region(line, 0.25, 1000) == [1000, 2250]
    assert replaced_region(line, 0.0, 16000) == [16000, 32000]


def test_placements_never_overlap_the_next_region_or_pass_the_end() -> None:
    entries = [{"region_samples": [0, 120]}, {"region_samples": [100, 300]}, {"region_samples": [400, 900]}]
    placed = placements(entries, [CLIP] * 3, total=800)
    assert [(p.start, p.end) for p in placed] == [(0, 100), (100, 300), (400, 800)]


def test_debug_weights_lists_the_deployments_that_ran_random_weights() -> None:
    models = {
        "ASR": {"model_id": "tiny.en", "weights": "pretrained"},
        "Separation": {"model_id": "htdemucs", "weights": "debug-random"},
    }
    assert debug_weights(models) == ["Separation"]
