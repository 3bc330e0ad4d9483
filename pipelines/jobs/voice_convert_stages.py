"""The voice-convert job's stages: split → pitch → convert → store (see `voice_convert.py`).

The instrumental is never processed beyond resampling to the output rate: where the input vocals are
silent (below `SILENT_DBFS`) the converted vocals are exactly zero, so the output there is the
instrumental itself, sample for sample.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.audio import Audio, decode, encode, resample, to_mono
from infra.dsp.remix import match_layout
from infra.dsp.segments import Segment, cut, join, plan_segments
from infra.dsp.stems import two_stems
from infra.storage import output_key
from infra.uploads import load_upload
from models.types import PitchContour
from pipelines.engine.clients import ModelClient, Models
from pipelines.engine.stages import Stage, StageContext, StageOutput, StageResult, Stored
from pipelines.jobs.separation import separate_in_segments

if TYPE_CHECKING:
    from pipelines.jobs.voice_convert import VoiceConvertJobRequest

SILENT_DBFS = -50.0  # a 10 ms frame of input vocals quieter than this carries no singing
_FRAME_S = 0.01
_HOLD_FRAMES = 3  # singing frames extend the gate by 30 ms either side
_RAMP_S = 0.005  # the gate opens and closes over 5 ms
_MEDIA = {"wav": "audio/wav", "flac": "audio/flac"}

Ctx = StageContext["VoiceConvertJobRequest"]


class Split(StageOutput):
    """`split`: vocals.wav and instrumental.wav; whether HTDemucs made them, and its weights if so."""

    separated: bool
    segments: int
    duration_s: float
    model: dict[str, Any] | None


class Pitched(StageOutput):
    """`pitch`: the transposed contour (f0.json), its voiced share and median F0 (Hz), the detector."""

    semitones: float
    voiced_share: float
    median_f0_hz: float | None
    model: dict[str, Any]


class Converted(StageOutput):
    """`convert`: vocals.wav at the output rate, gated to the sung frames; the weights that made it."""

    segments: int
    sample_rate: int
    encoder: dict[str, Any]
    voice: dict[str, Any]


def wav(audio: Audio) -> bytes:
    return encode(audio, "wav")


async def split_vocals(ctx: Ctx) -> StageResult:
    """The song's vocals and instrumental: separated (HTDemucs, fanned out), or the two uploads as given."""
    request = ctx.request
    song = await asyncio.to_thread(load_upload, ctx.storage, request.upload_id)
    if request.instrumental_upload_id is not None:
        instrumental = await asyncio.to_thread(load_upload, ctx.storage, request.instrumental_upload_id)
        record = Split(separated=False, segments=0, duration_s=song.duration_s, model=None)
        return StageResult(record, {"vocals.wav": wav(song), "instrumental.wav": wav(instrumental)})
    card = await ctx.models.separation.info()
    mix = await asyncio.to_thread(resample, song, card.sample_rate)
    stems, segments = await separate_in_segments(
        ctx, ctx.models.separation, mix, request.segment_length_s, request.overlap_s
    )
    pair = two_stems(stems, keep="vocals")
    record = Split(separated=True, segments=segments, duration_s=song.duration_s, model=card.identity)
    return StageResult(
        record, {"vocals.wav": wav(pair["vocals"]), "instrumental.wav": wav(pair["no_vocals"])}
    )


def transpose(contour: PitchContour, semitones: float) -> PitchContour:
    """The contour `semitones` higher (F0 * 2^(semitones/12)); unvoiced frames stay 0."""
    factor = 2.0 ** (semitones / 12.0)
    return PitchContour(
        contour.times_s,
        contour.f0_hz * factor,
        contour.confidence,
        contour.voiced,
        contour.hop_s,
        contour.model,
    )


async def track_pitch(ctx: Ctx) -> StageResult:
    """SwiftF0 over the whole vocal stem (one call to the pitch deployment), transposed by `semitones`."""
    vocals = decode(ctx.object(Split, "vocals.wav"))
    contour = await ctx.models.pitch.detect(
        audio=vocals, fmin_hz=46.875, fmax_hz=2093.75, confidence_threshold=0.2
    )
    moved = transpose(contour, ctx.request.semitones)
    voiced = moved.f0_hz[moved.voiced]
    record = Pitched(
        semitones=ctx.request.semitones,
        voiced_share=float(moved.voiced.mean()) if len(moved.voiced) else 0.0,
        median_f0_hz=float(np.median(voiced)) if len(voiced) else None,
        model=(await ctx.models.pitch.info()).identity,
    )
    return StageResult(record, {"f0.json": json.dumps(moved.to_dict()).encode()})


def contour_window(contour: PitchContour, start_s: float, end_s: float) -> PitchContour:
    """The frames of `[start_s, end_s)` (one hop of margin either side), timed from `start_s`."""
    keep = (contour.times_s >= start_s - contour.hop_s) & (contour.times_s < end_s + contour.hop_s)
    return PitchContour(
        contour.times_s[keep] - start_s,
        contour.f0_hz[keep],
        contour.confidence[keep],
        contour.voiced[keep],
        contour.hop_s,
        contour.model,
    )


def singing_gate(vocals: Audio) -> np.ndarray:
    """Weights `[T]` in [0, 1]: 0 where the vocals are silent (10 ms frames below `SILENT_DBFS`, held
    30 ms), 1 where sung, 5 ms ramps between; exactly 0 away from any singing."""
    mono = to_mono(vocals).samples[0].astype(np.float64)
    hop = max(round(_FRAME_S * vocals.sample_rate), 1)
    frames = -(-mono.size // hop)
    padded = np.pad(mono, (0, frames * hop - mono.size)).reshape(frames, hop)
    sung = np.sqrt((padded**2).mean(axis=1)) > 10 ** (SILENT_DBFS / 20)
    held = np.convolve(sung.astype(float), np.ones(2 * _HOLD_FRAMES + 1), mode="same") > 0
    gate = np.repeat(held.astype(float), hop)[: mono.size]
    ramp = max(round(_RAMP_S * vocals.sample_rate), 1)
    smoothed = np.convolve(gate, np.ones(2 * ramp + 1) / (2 * ramp + 1), mode="same")
    return np.where(gate + smoothed > 0, np.clip(smoothed, 0.0, 1.0), 0.0)


async def convert_segments(ctx: Ctx) -> StageResult:
    """Vocals cut into overlapping segments at the output rate, each converted on an SVC replica (at most
    the profile's `concurrency` at once, each retried on its own), crossfaded back, gated to the singing."""
    request = ctx.request
    rate = request.settings.sample_rate
    vocals = await asyncio.to_thread(resample, decode(ctx.object(Split, "vocals.wav")), rate)
    contour = PitchContour.from_dict(json.loads(ctx.object(Pitched, "f0.json")))
    segments = plan_segments(
        vocals.num_samples, rate, segment_s=request.segment_length_s, overlap_s=request.overlap_s
    )
    limit = asyncio.Semaphore(request.settings.concurrency)

    async def convert(segment: Segment) -> tuple[Audio, dict[str, Any], dict[str, Any]]:
        piece = cut(vocals, segment)
        window = contour_window(contour, segment.start / rate, segment.end / rate)
        async with limit:
            result = await ctx.models.svc.convert(
                audio=piece,
                pitch=window,
                voice_uri=str(request.voice_uri),
                speaker=request.speaker,
                seed=int(request.seed or 0) + segment.index,
            )
        fitted = await asyncio.to_thread(match_layout, result.audio, rate, 1, segment.num_samples)
        return fitted, result.encoder.as_dict(), result.voice.as_dict()

    pieces = await ctx.map(convert, segments)
    joined = await asyncio.to_thread(join, [p[0] for p in pieces], segments, vocals.num_samples)
    gated = Audio((joined.samples * singing_gate(vocals)).astype(np.float32), rate)
    encoder, voice = pieces[0][1], pieces[0][2]
    record = Converted(segments=len(segments), sample_rate=rate, encoder=encoder, voice=voice)
    return StageResult(record, {"vocals.wav": wav(gated)})


async def store_conversion(ctx: Ctx) -> StageResult:
    """The mix (converted vocals over the instrumental) and the converted vocals, in the profile's format."""
    return StageResult(await asyncio.to_thread(_store, ctx))


def _store(ctx: Ctx) -> Stored:
    settings = ctx.request.settings
    vocals = decode(ctx.object(Converted, "vocals.wav"))
    source = decode(ctx.object(Split, "instrumental.wav"))
    instrumental = match_layout(source, vocals.sample_rate, source.channels, vocals.num_samples)
    mix = Audio((instrumental.samples + vocals.samples).astype(np.float32), vocals.sample_rate)
    converted, split, pitched = ctx.output(Converted), ctx.output(Split), ctx.output(Pitched)
    weights = (
        "debug-random"
        if "debug-random" in {converted.encoder["weights"], converted.voice["weights"]}
        else "pretrained"
    )
    return Stored(
        result={
            "audio": _put(ctx, "audio", mix),
            "vocals": _put(ctx, "vocals", vocals),
            "metadata": {
                "weights": weights,
                "encoder": converted.encoder,
                "voice": converted.voice,
                "separation": split.model,
                "pitch": pitched.model,
                "profile": ctx.request.profile,
                "semitones": pitched.semitones,
                "median_f0_hz": pitched.median_f0_hz,
                "segments": converted.segments,
                "bits": settings.bits,
            },
        }
    )


def _put(ctx: Ctx, name: str, audio: Audio) -> dict[str, Any]:
    settings = ctx.request.settings
    fmt = settings.container
    key = output_key(ctx.job.id, f"{name}.{fmt}", ctx.job.attempt)
    ctx.storage.put_bytes(key, encode(audio, fmt, bits=settings.bits), _MEDIA[fmt])
    return {
        "key": key,
        "media_type": _MEDIA[fmt],
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": round(audio.duration_s, 6),
    }


def _separation(request: VoiceConvertJobRequest, models: Models) -> Sequence[ModelClient]:
    return () if request.instrumental_upload_id is not None else (models.separation,)


def _pitch(request: VoiceConvertJobRequest, models: Models) -> Sequence[ModelClient]:
    return (models.pitch,)


def _svc(request: VoiceConvertJobRequest, models: Models) -> Sequence[ModelClient]:
    return (models.svc,)


VOICE_CONVERT_STAGES: tuple[Stage[VoiceConvertJobRequest], ...] = (
    Stage("split", split_vocals, output=Split, models=_separation),
    Stage("pitch", track_pitch, output=Pitched, models=_pitch),
    Stage("convert", convert_segments, output=Converted, models=_svc),
    Stage("store", store_conversion, output=Stored),
)
