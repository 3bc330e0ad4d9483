"""The soundscape job's stage records, and its `mix` and `master` stages (`pipelines/jobs/soundscape.py`
makes the takes; `soundscape_store.py` publishes the result).

The mix runs at the highest sample rate and channel count (at most stereo) among its clips: AudioGen's
16 kHz mono takes are resampled (soxr) and copied to both channels when a Stable Audio take or a stereo
bed upload is in the mix. Each clip is fitted to its span by `infra/dsp/layering.py`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from infra.audio import Audio, decode, encode
from infra.dsp.layering import LayerSpan, mix_layers
from infra.dsp.mastering import master
from infra.uploads import load_upload
from models.types import ModelInfo
from pipelines.engine.stages import StageContext, StageOutput, StageResult
from pipelines.jobs.soundscape_request import SoundscapeJobRequest

MIX, AUDIO = "mix.wav", "audio.wav"
MAX_CHANNELS = 2


def take_object(index: int) -> str:
    """The `generate` stage's object of take `index`."""
    return f"take-{index:02d}.wav"


class TakeRecord(StageOutput):
    """A take as made: the weights that made it, its seed, rate, channels and length."""

    index: int
    prompt: str
    model: ModelInfo
    deployment: str
    seed: int
    sample_rate: int
    channels: int
    duration_s: float


class LayersGenerated(StageOutput):
    """The `generate` stage: one `take-{index}.wav` object per take (layers, then a prompt bed)."""

    takes: list[TakeRecord]


class Mixed(StageOutput):
    """The `mix` stage: `mix.wav` at `sample_rate` with `channels`, and where each take was placed."""

    sample_rate: int
    channels: int
    duration_s: float
    spans: list[dict[str, Any]]


class SoundscapeMastered(StageOutput):
    """The `master` stage: `audio.wav` and `MasteringReport.as_dict()`."""

    mastering: dict[str, Any]


# Stages `mix` and `master` ------------------------------------------------------------------------


async def mix_soundscape(ctx: StageContext[SoundscapeJobRequest]) -> StageResult:
    """Stage `mix`: every take (and an uploaded bed) fitted to its span and summed, at the highest rate
    and channel count (at most stereo) among them."""
    return await asyncio.to_thread(_mix, ctx)


def _mix(ctx: StageContext[SoundscapeJobRequest]) -> StageResult:
    clips, spans = timeline(ctx)
    rate = max(clip.sample_rate for clip in clips)
    channels = min(MAX_CHANNELS, max(clip.channels for clip in clips))
    total = round(ctx.request.duration_s * rate)
    placed = [span_at(span, rate, total) for span in spans]
    mix = mix_layers(clips, placed, total=total, sample_rate=rate, channels=channels)
    record = Mixed(
        sample_rate=rate,
        channels=channels,
        duration_s=mix.duration_s,
        spans=[{"start": s.start, "length": s.length, "gain_db": s.gain_db, "loop": s.loop} for s in placed],
    )
    return StageResult(record=record, objects={MIX: encode(mix, "wav")})


@dataclass(frozen=True)
class TimedSpan:
    """A span in seconds, before the mix's rate is known."""

    start_s: float
    duration_s: float
    gain_db: float
    loop: bool


def span_at(span: TimedSpan, rate: int, total: int) -> LayerSpan:
    """`span` in samples at `rate`, kept within a timeline of `total` samples (rounding)."""
    start = min(round(span.start_s * rate), total - 1)
    length = max(1, min(round(span.duration_s * rate), total - start))
    return LayerSpan(start=start, length=length, gain_db=span.gain_db, loop=span.loop)


def timeline(ctx: StageContext[SoundscapeJobRequest]) -> tuple[list[Audio], list[TimedSpan]]:
    """Every clip of the soundscape with its span: the layers' takes, then the bed (take or upload)."""
    request, generated = ctx.request, ctx.output(LayersGenerated)
    takes = {t.index: decode(ctx.object(LayersGenerated, take_object(t.index))) for t in generated.takes}
    clips = [takes[i] for i in range(len(request.layers))]
    spans = [TimedSpan(x.start_s, x.duration_s, x.gain_db, x.loop) for x in request.layers]
    bed = request.bed
    if bed is not None:
        bed_clip = takes.get(len(request.layers))
        if bed_clip is None:
            assert bed.upload_id is not None
            bed_clip = load_upload(ctx.storage, bed.upload_id)
        clips.append(bed_clip)
        spans.append(TimedSpan(0.0, request.duration_s, bed.gain_db, True))
    return clips, spans


async def master_soundscape(ctx: StageContext[SoundscapeJobRequest]) -> StageResult:
    """Stage `master`: the mix to `loudness_lufs` under the `true_peak_db` ceiling (a gain, never a
    limiter, so the stems at the same gain still add up to it)."""
    return await asyncio.to_thread(_master, ctx.request, ctx.object(Mixed, MIX))


def _master(request: SoundscapeJobRequest, wav: bytes) -> StageResult:
    mastered, report = master(
        decode(wav), target_lufs=request.loudness_lufs, true_peak_db=request.true_peak_db
    )
    record = SoundscapeMastered(mastering=report.as_dict())
    return StageResult(record=record, objects={AUDIO: encode(mastered, "wav")})
