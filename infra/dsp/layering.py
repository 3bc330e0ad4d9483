"""Soundscape layering (pure, no models): fit a clip to its span, gain it, and place it on a timeline.

A layer's *span* is `[start, start + length)` of the timeline (samples at the mix's rate). The clip is
resampled to the mix's rate and channel count (`remix.match_layout`), repeated to fill the span when it
loops (the clip is first made loopable: its tail crossfaded into its head, `mastering.make_loopable`, so
the repeats have no seam), cut or zero-padded otherwise, faded in and out over `EDGE_FADE_S` (a span that
starts or stops mid-sound would click), and scaled by its gain in dB. The mix is the sum of the spans;
a stem is one span on an otherwise silent timeline, so the stems add up to the mix, sample for sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from infra.audio import Audio
from infra.dsp.loop_render import raised_cosine
from infra.dsp.mastering import make_loopable
from infra.dsp.remix import match_layout

EDGE_FADE_S = 0.005
LOOP_CROSSFADE_S = 0.25  # at most; never more than a quarter of the clip


@dataclass(frozen=True)
class LayerSpan:
    """Where and how loud one clip plays: from sample `start` for `length` samples, at `gain_db`;
    `loop`: repeat the clip to fill the span (else it is cut, or followed by silence)."""

    start: int
    length: int
    gain_db: float
    loop: bool = False


def loop_crossfade_s(clip: Audio) -> float:
    """The crossfade that makes `clip` loopable: `LOOP_CROSSFADE_S`, at most a quarter of the clip."""
    return min(LOOP_CROSSFADE_S, clip.duration_s / 4)


def fit_span(clip: Audio, span: LayerSpan, sample_rate: int, channels: int) -> npt.NDArray[np.float32]:
    """The samples `[channels, span.length]` that `clip` contributes to its span: at `sample_rate`,
    looped or cut to the span's length, edge-faded and gained."""
    clip = match_layout(clip, sample_rate, channels, clip_samples(clip, sample_rate))
    if span.loop and clip.num_samples < span.length:
        looped = make_loopable(clip, loop_crossfade_s(clip))
        repeats = -(-span.length // looped.num_samples)
        samples = np.tile(looped.samples, (1, repeats))[:, : span.length]
    else:
        samples = match_layout(clip, sample_rate, channels, span.length).samples.copy()
    fade = min(round(EDGE_FADE_S * sample_rate), span.length // 2)
    if fade > 0:
        ramp = raised_cosine(fade)
        samples[:, :fade] *= ramp
        samples[:, span.length - fade :] *= ramp[::-1]
    gain = np.float32(10.0 ** (span.gain_db / 20.0))
    return np.ascontiguousarray(samples * gain, dtype=np.float32)


def clip_samples(clip: Audio, sample_rate: int) -> int:
    """How many samples `clip` lasts at `sample_rate`."""
    return round(clip.num_samples * sample_rate / clip.sample_rate)


def mix_layers(
    clips: Sequence[Audio], spans: Sequence[LayerSpan], *, total: int, sample_rate: int, channels: int
) -> Audio:
    """The sum `[channels, total]` of every clip fitted to its span (`fit_span`). Raises `ValueError` if a
    span does not lie within the timeline."""
    if len(clips) != len(spans):
        raise ValueError(f"{len(clips)} clips for {len(spans)} spans")
    mix = np.zeros((channels, total), dtype=np.float32)
    for clip, span in zip(clips, spans, strict=True):
        _check_span(span, total)
        mix[:, span.start : span.start + span.length] += fit_span(clip, span, sample_rate, channels)
    return Audio(mix, sample_rate)


def stem(clip: Audio, span: LayerSpan, *, total: int, sample_rate: int, channels: int) -> Audio:
    """One layer alone on the timeline `[channels, total]`: silence outside its span."""
    return mix_layers([clip], [span], total=total, sample_rate=sample_rate, channels=channels)


def _check_span(span: LayerSpan, total: int) -> None:
    if span.start < 0 or span.length <= 0 or span.start + span.length > total:
        raise ValueError(f"span [{span.start}, {span.start + span.length}) is not within [0, {total})")
