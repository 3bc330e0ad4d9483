"""The soundscape job's `store` stage: the mastered mix, every take as generated, a ZIP of stems, and
the metadata (`outputs/{job_id}/…`).

The stems ZIP (`stems.zip`, uncompressed: WAV barely compresses) holds one 32-bit float WAV per layer
(`layer-00.wav`, …, and `bed.wav`), each the layer alone on the whole timeline at the mix's rate, scaled
by the master's gain: laid side by side in an editor they add up to `audio` (before its encoding).
Stems are rendered one at a time into a temporary file that is streamed to the store, so memory holds
one stem, not all of them.
"""

from __future__ import annotations

import asyncio
import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO, Any

from infra.audio import MEDIA_TYPES, Audio, decode, encode, loudness_lufs, peak_dbfs
from infra.dsp.layering import stem
from infra.dsp.mastering import apply_gain
from infra.storage import output_key
from pipelines.engine.outputs import store_audio, store_json
from pipelines.engine.stages import StageContext, StageResult, Stored
from pipelines.jobs.soundscape_mix import (
    AUDIO,
    LayersGenerated,
    Mixed,
    SoundscapeMastered,
    span_at,
    take_object,
    timeline,
)
from pipelines.jobs.soundscape_request import SoundscapeJobRequest

STEMS, ZIP_MEDIA_TYPE = "stems.zip", "application/zip"
CHUNK_BYTES = 8 << 20


async def store_soundscape(ctx: StageContext[SoundscapeJobRequest]) -> StageResult:
    """Stage `store`: `audio.{format}`, `layer-NN.{format}` (and `bed.{format}`) as generated, `stems.zip`,
    `metadata.json`."""
    return await asyncio.to_thread(_store, ctx)


def _store(ctx: StageContext[SoundscapeJobRequest]) -> StageResult:
    request = ctx.request
    audio = decode(ctx.object(SoundscapeMastered, AUDIO))
    layers = [
        {**_take_facts(ctx, take.index), "audio": _store_take(ctx, take.index)}
        for take in ctx.output(LayersGenerated).takes
    ]
    metadata = soundscape_metadata(ctx, audio)
    result: dict[str, Any] = {
        "audio": store_audio(ctx, "audio", audio, request.format),
        "layers": layers,
        "stems": store_stems(ctx),
        "metadata": {**store_json(ctx, "metadata", metadata), **metadata},
    }
    return StageResult(record=Stored(result=result))


def stem_name(ctx: StageContext[SoundscapeJobRequest], index: int) -> str:
    """`layer-NN` for a layer, `bed` for the bed."""
    return "bed" if index == len(ctx.request.layers) else f"layer-{index:02d}"


def _store_take(ctx: StageContext[SoundscapeJobRequest], index: int) -> dict[str, Any]:
    take = decode(ctx.object(LayersGenerated, take_object(index)))
    return store_audio(ctx, stem_name(ctx, index), take, ctx.request.format)


def _take_facts(ctx: StageContext[SoundscapeJobRequest], index: int) -> dict[str, Any]:
    request = ctx.request
    take = next(t for t in ctx.output(LayersGenerated).takes if t.index == index)
    facts = take.model_dump(include={"index", "prompt", "seed", "deployment"})
    facts |= {
        "model": take.model.as_dict(),
        "weights": take.model.weights,
        "clip_s": round(take.duration_s, 6),
    }
    if index < len(request.layers):
        facts |= request.layers[index].model_dump(include={"start_s", "duration_s", "gain_db", "loop"})
    else:
        facts |= {"bed": True, "start_s": 0.0, "duration_s": request.duration_s, "loop": True}
    return facts


def store_stems(ctx: StageContext[SoundscapeJobRequest]) -> dict[str, Any]:
    """`stems.zip`: every layer (and the bed) alone on the timeline at the master's gain."""
    key = output_key(ctx.job.id, STEMS, ctx.job.attempt)
    names = []
    with tempfile.TemporaryFile() as spool:
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, audio in _stems(ctx):
                ctx.check_cancelled()
                archive.writestr(f"{name}.wav", encode(audio, "wav"))
                names.append(f"{name}.wav")
        size = spool.tell()
        spool.seek(0)
        ctx.storage.upload_stream(key, _chunks(spool), ZIP_MEDIA_TYPE, expected_bytes=size)
    return {"key": key, "media_type": ZIP_MEDIA_TYPE, "files": names, "bytes": size}


def _stems(ctx: StageContext[SoundscapeJobRequest]) -> Iterator[tuple[str, Audio]]:
    mixed = ctx.output(Mixed)
    gain_db = float(ctx.output(SoundscapeMastered).mastering["gain_db"] or 0.0)
    rate, channels = mixed.sample_rate, mixed.channels
    total = round(mixed.duration_s * rate)
    clips, spans = timeline(ctx)
    for index, (clip, span) in enumerate(zip(clips, spans, strict=True)):
        alone = stem(clip, span_at(span, rate, total), total=total, sample_rate=rate, channels=channels)
        yield stem_name(ctx, index), apply_gain(alone, gain_db)


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    while chunk := spool.read(CHUNK_BYTES):
        yield chunk


def soundscape_metadata(ctx: StageContext[SoundscapeJobRequest], audio: Audio) -> dict[str, Any]:
    """What `metadata.json` says: the takes' models and weights (`weights` is `debug-random` when any
    take was made with debug weights), seeds, the placement, loudness before and after mastering."""
    request, takes = ctx.request, ctx.output(LayersGenerated).takes
    mastering = ctx.output(SoundscapeMastered).mastering
    models = {t.deployment: t.model.as_dict() for t in takes}
    kinds = sorted({t.model.weights for t in takes})
    return {
        "job_id": ctx.job.id,
        "models": models,
        "weights": next((k for k in kinds if k.startswith("debug")), kinds[0]),
        "seed": request.seed,
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": round(audio.duration_s, 6),
        "format": request.format,
        "layers": [_take_facts(ctx, t.index) for t in takes],
        "bed": None if request.bed is None else request.bed.model_dump(mode="json"),
        "loudness_lufs": _finite(loudness_lufs(audio)),
        "peak_dbfs": _finite(peak_dbfs(audio)),
        "mastering": mastering,
        "media_type": MEDIA_TYPES[request.format],
    }


def _finite(value: float) -> float | None:
    return round(value, 3) if value == value and abs(value) != float("inf") else None
