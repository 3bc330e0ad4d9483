"""Voice replacement's per-line report and replaced regions (pure, no models).

A report entry says, for one replaced line: its original text and times, its slot, how long the new
line was as synthesized and as placed, the playback rate applied (`stretch`, > 1 faster), how far it
ran past its slot into the following silence (`overrun_s`) and past that silence (`overlap_s`), and
`region_samples`, the samples `[start, end)` of the input it replaces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from infra.audio import Audio
from infra.dsp.remix import Placement
from infra.dsp.time_fit import FittedLine
from pipelines.voice.lines import Line


class ReplacedLine(BaseModel):
    """A replaced line's report entry (module docstring): times in seconds, rounded to ms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    start: float
    end: float
    slot_start: float
    slot_end: float
    synthesized_s: float
    new_duration_s: float
    stretch: float
    overrun_s: float
    overlap_s: float
    region_samples: list[int]


def replaced_line(line: Line, fitted: FittedLine, rate: int) -> ReplacedLine:
    """The report entry of `line` re-spoken as `fitted`, its region at the input's `rate` Hz."""
    return ReplacedLine(
        text=line.text,
        start=round(line.start, 3),
        end=round(line.end, 3),
        slot_start=round(line.slot_start, 3),
        slot_end=round(line.slot_end, 3),
        synthesized_s=round(fitted.natural_s, 3),
        new_duration_s=round(fitted.duration_s, 3),
        stretch=round(fitted.rate, 4),
        overrun_s=round(fitted.overrun_s, 3),
        overlap_s=round(fitted.overlap_s, 3),
        region_samples=replaced_region(line, fitted.overrun_s - fitted.overlap_s, rate),
    )


def replaced_region(line: Line, overrun_s: float, rate: int) -> list[int]:
    """Samples `[start, end)` (at `rate` Hz) a line replaces: its slot plus its overrun into the silence
    after it (`overrun_s` without the overlap)."""
    start = round(line.slot_start * rate)
    return [start, max(start + 1, round((line.slot_end + overrun_s) * rate))]


def placements(regions: Sequence[Sequence[int]], clips: Sequence[Audio], total: int) -> list[Placement]:
    """One placement per region `[start, end)` (in time order); a region ends by the next one's start
    and by `total`."""
    starts = [region[0] for region in regions] + [total]
    return [
        Placement(region[0], min(region[1], starts[i + 1]), clip)
        for i, (region, clip) in enumerate(zip(regions, clips, strict=True))
    ]


def debug_weights(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The deployments among `models` (name → id, revision, weights) that ran random-init debug weights."""
    return sorted(name for name, info in models.items() if str(info.get("weights", "")).startswith("debug"))


def transcript_body(lines: Sequence[Line], language: str | None, model: Mapping[str, Any]) -> dict[str, Any]:
    """The transcript JSON: every speaker's lines, the language and the ASR model."""
    return {
        "language": language,
        "lines": [
            {
                "speaker": line.speaker,
                "start": round(line.start, 3),
                "end": round(line.end, 3),
                "text": line.text,
            }
            for line in lines
        ],
        "model": dict(model),
    }
