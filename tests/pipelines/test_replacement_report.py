"""The voice-replacement report's entries, regions and debug-weights summary (pure)."""

from __future__ import annotations

import numpy as np

from infra.audio import Audio
from infra.dsp.time_fit import FittedLine
from pipelines.voice.lines import Line
from pipelines.voice.report import ReplacedLine, debug_weights, placements, replaced_line, replaced_region

CLIP = Audio(np.zeros((1, 10), np.float32), 1000)


def test_region_is_the_slot_plus_the_overrun_into_the_silence() -> None:
    line = Line("SPEAKER_01", 1, 1.1, 1.9, 1.0, 2.0, "hi")
    assert replaced_region(line, 0.25, 1000) == [1000, 2250]
    assert replaced_region(line, 0.0, 16000) == [16000, 32000]


def test_placements_never_overlap_the_next_region_or_pass_the_end() -> None:
    regions = [[0, 120], [100, 300], [400, 900]]
    placed = placements(regions, [CLIP] * 3, total=800)
    assert [(p.start, p.end) for p in placed] == [(0, 100), (100, 300), (400, 800)]


def test_debug_weights_lists_the_deployments_that_ran_random_weights() -> None:
    models = {
        "ASR": {"model_id": "tiny.en", "weights": "pretrained"},
        "Separation": {"model_id": "htdemucs", "weights": "debug-random"},
    }
    assert debug_weights(models) == ["Separation"]


def test_a_replaced_line_entry_rounds_its_times_and_carries_its_region() -> None:
    line = Line("SPEAKER_01", 1, 1.1004, 1.9, 1.0, 2.0, "hi")
    fitted = FittedLine(Audio(np.zeros((1, 1100), np.float32), 1000), 1.23456, 1.012345, 0.3, 0.1)
    entry = replaced_line(line, fitted, 1000)
    assert entry.model_dump() == {
        "text": "hi",
        "start": 1.1,
        "end": 1.9,
        "slot_start": 1.0,
        "slot_end": 2.0,
        "synthesized_s": 1.235,
        "new_duration_s": 1.1,
        "stretch": 1.0123,
        "overrun_s": 0.3,
        "overlap_s": 0.1,
        "region_samples": [1000, 2200],
    }
    assert ReplacedLine.model_validate(entry.model_dump(mode="json")) == entry
