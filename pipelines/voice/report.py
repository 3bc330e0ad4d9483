"""Voice replacement's per-line report and replaced regions (pure, no models).

A report entry says, for one replaced line: its original text and times, its slot, how long the new
line was as synthesized and as placed, the playback rate applied (`stretch`, > 1 faster), how far it
ran past its slot into the following silence (`overrun_s`) and past that silence (`overlap_s`), and
`region_samples`, the samples `[start, end)` of the input it replaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from infra.audio import Audio
from infra.dsp.remix import Placement
from pipelines.voice.lines import Line


def line_entry(
    line: Line, natural: float, new: float, rate: float, overrun: float, overlap: float
) -> dict[str, Any]:
    """A line's report entry (times in seconds, rounded to ms) without its region."""
    return {
        "text": line.text,
        "start": round(line.start, 3),
        "end": round(line.end, 3),
        "slot_start": round(line.slot_start, 3),
        "slot_end": round(line.slot_end, 3),
        "synthesized_s": round(natural, 3),
        "new_duration_s": round(new, 3),
        "stretch": round(rate, 4),
        "overrun_s": round(overrun, 3),
        "overlap_s": round(overlap, 3),
    }


def replaced_region(line: Line, overrun_s: float, rate: int) -> list[int]:
    """Samples `[start, end)` (at `rate` Hz) a line replaces: its slot plus its overrun into the silence
    after it (`overrun_s` without the overlap)."""
    start = round(line.slot_start * rate)
    return [start, max(start + 1, round((line.slot_end + overrun_s) * rate))]


def placements(entries: Sequence[Mapping[str, Any]], clips: Sequence[Audio], total: int) -> list[Placement]:
    """One placement per entry (in time order); a region ends by the next one's start and by `total`."""
    starts = [entry["region_samples"][0] for entry in entries] + [total]
    return [
        Placement(entry["region_samples"][0], min(entry["region_samples"][1], starts[i + 1]), clip)
        for i, (entry, clip) in enumerate(zip(entries, clips, strict=True))
    ]


def debug_weights(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The deployments among `models` (name → id, revision, weights) that ran random-init debug weights."""
    return sorted(name for name, info in models.items() if str(info.get("weights", "")).startswith("debug"))


def transcript_body(lines: Sequence[Line], transcription: Mapping[str, Any]) -> dict[str, Any]:
    """The transcript JSON: every speaker's lines, the language and the ASR model."""
    return {
        "language": transcription["language"],
        "lines": [
            {
                "speaker": line.speaker,
                "start": round(line.start, 3),
                "end": round(line.end, 3),
                "text": line.text,
            }
            for line in lines
        ],
        "model": transcription["model"],
    }
