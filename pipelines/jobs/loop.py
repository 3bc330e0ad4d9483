"""Loop jobs: extend a clip to a target duration (up to 10 h) by repeating a seamless loop of it.

Stages:
1. `analyse` — find the loop points (`infra/dsp/loop_points.py`: beat period from the onset
   autocorrelation, loop end near a multiple of it where spectrum and waveform best match the loop
   start; pure similarity search for clips without a beat). Commits only facts: the points, the beat
   period, the score, the source's format.
2. `render` — stream the output (`infra/dsp/loop_render.py`: intro, then the loop body with a
   crossfade at every seam, exactly `target_duration_s * rate` samples, faded out over the last
   second) through the incremental encoder (`infra/audio_stream.py`) into a multipart upload at
   `outputs/{job_id}/loop.{format}`, in constant memory. Size and SHA-256 are computed while
   streaming and recorded in the result, so the output stays verifiable without re-reading it. A
   resumed job re-renders to the same key, which the completed upload replaces whole.

The source is an upload or an audio output of a finished job (`job_id` + `output`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.audio import MEDIA_TYPES, Audio, AudioFormat, decode
from infra.audio_stream import check_streamable, encode_stream
from infra.dsp.loop_points import LoopPoints, find_loop_points
from infra.dsp.loop_render import BLOCK_FRAMES, FADE_OUT_S, render_blocks
from infra.jobs import JobRecord, JobStatus, JobStore
from infra.storage import Storage, output_key, upload_key
from pipelines.engine.stages import Stage, StageContext, StageResult

LOOP_JOB = "loop"
MAX_TARGET_S = 36000.0
MIN_SOURCE_S = 2.0
_OUTPUT_NAME = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class LoopSourceError(ValueError):
    """The loop's source cannot be used; `code` says why (the ingress maps it to 404/409/422)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class LoopJobRequest(BaseModel):
    """`POST /v1/jobs/loop` (after the ingress turned a direct file into an upload)."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str | None = Field(default=None, pattern="^[0-9a-f]{32}$")
    job_id: str | None = Field(default=None, pattern="^[0-9a-f]{32}$", description="A succeeded job.")
    output: str | None = Field(default=None, pattern=_OUTPUT_NAME, description="Its audio result's name.")
    target_duration_s: float = Field(gt=0.0, le=MAX_TARGET_S, description="Output length, seconds.")
    crossfade_s: float = Field(default=0.05, ge=0.0, le=1.0, description="Crossfade at every seam.")
    format: AudioFormat = "wav"

    @field_validator("format")
    @classmethod
    def _streamable(cls, value: AudioFormat) -> AudioFormat:
        return check_streamable(value)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.upload_id is None) == (self.job_id is None):
            raise ValueError("give exactly one source: upload_id or job_id")
        if self.output is not None and self.job_id is None:
            raise ValueError("output names a result of job_id")
        return self


def job_audio_output(record: JobRecord, output: str | None) -> tuple[str, dict[str, Any]]:
    """The name and result entry of `record`'s audio output `output` (default: its only/`audio` one)."""
    if record.status is not JobStatus.SUCCEEDED:
        raise LoopSourceError("source_job_not_succeeded", f"job {record.id} is {record.status.value}")
    audio = {
        name: entry
        for name, entry in (record.result or {}).items()
        if isinstance(entry, dict)
        and "key" in entry
        and str(entry.get("media_type", "")).startswith("audio/")
    }
    if not audio:
        raise LoopSourceError("source_has_no_audio", f"job {record.id} has no audio result")
    if output is None:
        if "audio" not in audio and len(audio) > 1:
            raise LoopSourceError(
                "output_required", f"job {record.id} has several: choose one of {sorted(audio)}"
            )
        output = "audio" if "audio" in audio else next(iter(audio))
    if output not in audio:
        raise LoopSourceError(
            "unknown_output", f"job {record.id} has no audio output {output!r}: {sorted(audio)}"
        )
    if not re.fullmatch(rf"outputs/{record.id}/[A-Za-z0-9._-]+", str(audio[output]["key"])):
        raise LoopSourceError("source_has_no_audio", f"job {record.id}'s output {output!r} has no stored key")
    return output, audio[output]


def _source(ctx: StageContext, request: LoopJobRequest) -> tuple[str, dict[str, Any]]:
    """The source's object key and a description of it for the result."""
    if request.upload_id is not None:
        return upload_key(request.upload_id, "source"), {"upload_id": request.upload_id}
    assert request.job_id is not None
    record = JobStore(ctx.storage).get(request.job_id)
    name, entry = job_audio_output(record, request.output)
    described = {"job_id": record.id, "output": name}
    weights = (record.result or {}).get("metadata", {}).get("weights")
    return str(entry["key"]), {**described, **({"weights": weights} if weights else {})}


def load_source(ctx: StageContext, request: LoopJobRequest) -> tuple[Audio, dict[str, Any]]:
    key, described = _source(ctx, request)
    limit = ctx.storage.settings.max_input_duration_s
    return decode(ctx.storage.get_bytes(key), max_duration_s=limit), described


async def analyse(ctx: StageContext) -> StageResult:
    """Find the loop points; commit them as facts."""
    request = LoopJobRequest.model_validate(ctx.request)
    audio, source = await asyncio.to_thread(load_source, ctx, request)
    crossfade = round(request.crossfade_s * audio.sample_rate)
    points = await asyncio.to_thread(find_loop_points, audio, crossfade=crossfade)
    source |= {
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": round(audio.duration_s, 6),
    }
    return StageResult(facts={"loop": points.facts(), "crossfade": crossfade, "source": source})


async def render(ctx: StageContext) -> StageResult:
    """Stream the looped output into `outputs/{job_id}/loop.{format}`; the result describes it."""
    request = LoopJobRequest.model_validate(ctx.request)
    return await asyncio.to_thread(_render, ctx, request)


def _render(ctx: StageContext, request: LoopJobRequest) -> StageResult:
    facts = ctx.facts("analyse")
    audio, _ = load_source(ctx, request)
    loop = facts["loop"]
    points = LoopPoints(
        loop["start"], loop["end"], audio.sample_rate, loop["method"], loop["beat_period_s"], loop["score"]
    )
    total = round(request.target_duration_s * audio.sample_rate)
    key = output_key(ctx.job.id, f"loop.{request.format}")
    stored = stream_loop(
        ctx.storage, key, audio, points, crossfade=facts["crossfade"], total=total, fmt=request.format
    )
    entry = {
        "key": key,
        "media_type": MEDIA_TYPES[request.format],
        "sample_rate": audio.sample_rate,
        "channels": audio.channels,
        "duration_s": round(total / audio.sample_rate, 6),
        "samples": total,
        "bytes": stored.size,
        "sha256": stored.sha256,
    }
    metadata = {
        "loop": loop,
        "crossfade_s": round(facts["crossfade"] / audio.sample_rate, 6),
        "fade_out_s": FADE_OUT_S,
        "source": facts["source"],
    }
    return StageResult(facts={"result": {"audio": entry, "metadata": metadata}})


@dataclass
class StreamDigest:
    """Size and SHA-256 of a byte stream, updated as it passes."""

    size: int = 0
    _hash: Any = field(default_factory=hashlib.sha256)

    def tap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.size += len(chunk)
            self._hash.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return str(self._hash.hexdigest())


def stream_loop(
    storage: Storage,
    key: str,
    audio: Audio,
    points: LoopPoints,
    *,
    crossfade: int,
    total: int,
    fmt: AudioFormat,
    block_frames: int = BLOCK_FRAMES,
) -> StreamDigest:
    """Render, encode and upload the loop in one pass; the multipart upload is aborted on any failure."""
    blocks = render_blocks(audio, points, crossfade=crossfade, total=total, block_frames=block_frames)
    encoded = encode_stream(
        blocks, sample_rate=audio.sample_rate, channels=audio.channels, total_frames=total, fmt=fmt
    )
    digest = StreamDigest()
    written = storage.upload_stream(key, digest.tap(encoded), MEDIA_TYPES[fmt])
    assert written == digest.size
    return digest


LOOP_STAGES = (Stage("analyse", analyse), Stage("render", render))
