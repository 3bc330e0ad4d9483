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

The source is an upload or an audio output of a finished job (`job_id` + `output`). `admit_loop`
refuses, before the job exists, what the request model alone cannot (limits, sources, lengths).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infra.audio import MEDIA_TYPES, Audio, AudioFormat, decode
from infra.audio_stream import NotStreamableFormatError, check_streamable, encode_stream
from infra.dsp.loop_points import LoopPoints, find_loop_points
from infra.dsp.loop_render import BLOCK_FRAMES, FADE_OUT_S, render_blocks
from infra.jobs import JobNotFoundError, JobRecord, JobStatus, JobStore
from infra.storage import InvalidKeyPartError, Storage, output_key, upload_key
from pipelines.engine.kinds import Admission, AdmissionError, JobKind
from pipelines.engine.stages import Stage, StageContext, StageOutput, StageResult, Stored
from pipelines.jobs.separation import UPLOAD_ID, admit_upload

LOOP_JOB = "loop"
MAX_TARGET_S = 36000.0
MIN_SOURCE_S = 2.0
T = TypeVar("T")
_OUTPUT_NAME = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_SOURCE_STATUS = {"source_job_not_succeeded": 409}


class LoopSourceError(ValueError):
    """The loop's source cannot be used; `code` says why (`admit_loop` maps it to 409 or 422)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class LoopJobRequest(BaseModel):
    """`POST /v1/jobs/loop` (the HTTP layer turns a `file` into the `upload_id`). The 10 h limit, the
    streamable format and `output` only with `job_id` are checked by `admit_loop`, which answers with
    their own error codes."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str | None = Field(default=None, pattern=UPLOAD_ID)
    job_id: str | None = Field(
        default=None, pattern=UPLOAD_ID, description="Loop a succeeded job's audio output."
    )
    output: str | None = Field(
        default=None, pattern=_OUTPUT_NAME, description="Which audio result of `job_id` (default: `audio`)."
    )
    target_duration_s: float = Field(gt=0.0, description=f"Output length, s (at most {MAX_TARGET_S:g}).")
    crossfade_s: float = Field(default=0.05, ge=0.0, le=1.0, description="Crossfade at every seam.")
    format: AudioFormat = Field(default="wav", description="wav, flac or ogg (mp3 cannot stream).")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.upload_id is None) == (self.job_id is None):
            raise ValueError("give exactly one source: upload_id or job_id")
        return self


class LoopFacts(BaseModel):
    """The loop points as the result reports them (`LoopPoints.facts()`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: int
    end: int
    start_s: float
    end_s: float
    loop_s: float
    sample_rate: int
    method: Literal["beat", "similarity"]
    beat_period_s: float | None
    bpm: float | None
    score: float

    def points(self) -> LoopPoints:
        return LoopPoints(self.start, self.end, self.sample_rate, self.method, self.beat_period_s, self.score)


class LoopSource(BaseModel):
    """What was looped: an upload, or a job's audio output (with the weights that made it, if known)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upload_id: str | None = None
    job_id: str | None = None
    output: str | None = None
    weights: str | None = None
    sample_rate: int
    channels: int
    duration_s: float


class LoopAnalysed(StageOutput):
    """The `analyse` stage (facts only): the loop points, the seam crossfade in samples, the source."""

    loop: LoopFacts
    crossfade: int
    source: LoopSource


# Admission ---------------------------------------------------------------------------------------


async def admit_loop(request: LoopJobRequest, admission: Admission) -> LoopJobRequest:
    """Refuse what cannot loop before the job exists: past 10 h or not streamable (422), an unknown
    source job or upload (404), a source job that did not succeed (409), one without that audio output
    (422), `output` with an upload (422), a source shorter than `MIN_SOURCE_S` (422). A job source's
    `output` is resolved (e.g. to `audio`) in the admitted request."""
    check_target(request.target_duration_s, request.format)
    if request.job_id is not None:
        name, duration = await asyncio.to_thread(job_source, admission.jobs, request.job_id, request.output)
        request = request.model_copy(update={"output": name})
    else:
        assert request.upload_id is not None
        if request.output is not None:
            message = "`output` names an audio result of `job_id`; send no `output`"
            raise AdmissionError("invalid_request", message)
        duration = (await admit_upload(admission, request.upload_id)).duration_s
    check_length(duration)
    return request


def check_target(target_duration_s: float, fmt: str) -> None:
    """422 `duration_too_long` past 10 h; 422 `format_not_streamable` for a format with a trailing header."""
    if target_duration_s > MAX_TARGET_S:
        message = f"target_duration_s {target_duration_s:g} exceeds the limit of {MAX_TARGET_S:g} s (10 h)"
        raise AdmissionError("duration_too_long", message)
    try:
        check_streamable(fmt)
    except NotStreamableFormatError as e:
        raise AdmissionError(e.code, str(e)) from e


def job_source(jobs: JobStore, job_id: str, output: str | None) -> tuple[str, object]:
    """The name and stored duration of a succeeded job's audio output: 404 unknown job, 409 not
    succeeded, else 422 with `LoopSourceError`'s code."""
    try:
        record = jobs.get(job_id)
    except (JobNotFoundError, InvalidKeyPartError):
        raise AdmissionError("source_job_not_found", f"no job with id {job_id!r}", status=404) from None
    try:
        name, entry = job_audio_output(record, output)
    except LoopSourceError as e:
        raise AdmissionError(e.code, str(e), status=_SOURCE_STATUS.get(e.code, 422)) from e
    return name, entry.get("duration_s")


def check_length(duration_s: object) -> None:
    """422 `source_too_short` for a source (of known duration) shorter than `MIN_SOURCE_S`."""
    if isinstance(duration_s, int | float) and duration_s < MIN_SOURCE_S:
        message = f"the source lasts {duration_s:g} s; a loop needs at least {MIN_SOURCE_S:g} s"
        raise AdmissionError("source_too_short", message)


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
    if not re.fullmatch(rf"outputs/{record.id}/(a\d+/)?[A-Za-z0-9._-]+", str(audio[output]["key"])):
        raise LoopSourceError("source_has_no_audio", f"job {record.id}'s output {output!r} has no stored key")
    return output, audio[output]


# Stages ------------------------------------------------------------------------------------------


def _source(storage: Storage, request: LoopJobRequest) -> tuple[str, dict[str, Any]]:
    """The source's object key and a description of it for the result."""
    if request.upload_id is not None:
        return upload_key(request.upload_id, "source"), {"upload_id": request.upload_id}
    assert request.job_id is not None
    record = JobStore(storage).get(request.job_id)
    name, entry = job_audio_output(record, request.output)
    weights = (record.result or {}).get("metadata", {}).get("weights")
    return str(entry["key"]), {"job_id": record.id, "output": name, "weights": weights or None}


def load_source(storage: Storage, request: LoopJobRequest) -> tuple[Audio, dict[str, Any]]:
    key, described = _source(storage, request)
    limit = storage.settings.max_input_duration_s
    return decode(storage.get_bytes(key), max_duration_s=limit), described


async def analyse(ctx: StageContext[LoopJobRequest]) -> StageResult:
    """Find the loop points; commit them as facts."""
    audio, described = await asyncio.to_thread(load_source, ctx.storage, ctx.request)
    crossfade = round(ctx.request.crossfade_s * audio.sample_rate)
    points = await asyncio.to_thread(find_loop_points, audio, crossfade=crossfade)
    source = LoopSource(
        **described,
        sample_rate=audio.sample_rate,
        channels=audio.channels,
        duration_s=round(audio.duration_s, 6),
    )
    record = LoopAnalysed(loop=LoopFacts(**points.facts()), crossfade=crossfade, source=source)
    return StageResult(record=record)


async def render(ctx: StageContext[LoopJobRequest]) -> StageResult:
    """Stream the looped output into `outputs/{job_id}/loop.{format}`; the result describes it."""
    return StageResult(record=await asyncio.to_thread(_render, ctx))


def _render(ctx: StageContext[LoopJobRequest]) -> Stored:
    request, analysed = ctx.request, ctx.output(LoopAnalysed)
    audio, _ = load_source(ctx.storage, request)
    total = round(request.target_duration_s * audio.sample_rate)
    key = output_key(ctx.job.id, f"loop.{request.format}", ctx.job.attempt)
    stored = stream_loop(
        ctx.storage,
        key,
        audio,
        analysed.loop.points(),
        crossfade=analysed.crossfade,
        total=total,
        fmt=request.format,
        check_cancelled=ctx.check_cancelled,
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
        "loop": analysed.loop.model_dump(),
        "crossfade_s": round(analysed.crossfade / audio.sample_rate, 6),
        "fade_out_s": FADE_OUT_S,
        "source": analysed.source.model_dump(exclude_none=True),
    }
    return Stored(result={"audio": entry, "metadata": metadata})


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
    check_cancelled: Callable[[], None] = lambda: None,
) -> StreamDigest:
    """Render, encode and upload the loop in one pass; the multipart upload is aborted on any failure,
    including `check_cancelled` raising between blocks (a cancelled or superseded job)."""
    blocks = render_blocks(audio, points, crossfade=crossfade, total=total, block_frames=block_frames)
    encoded = encode_stream(
        _checked(blocks, check_cancelled),
        sample_rate=audio.sample_rate,
        channels=audio.channels,
        total_frames=total,
        fmt=fmt,
    )
    digest = StreamDigest()
    # Parts grow with the output: 32-bit float samples bound every format's size from above.
    expected = total * audio.channels * 4
    written = storage.upload_stream(key, digest.tap(encoded), MEDIA_TYPES[fmt], expected_bytes=expected)
    assert written == digest.size
    return digest


def _checked(blocks: Iterable[T], check: Callable[[], None]) -> Iterator[T]:
    for block in blocks:
        check()
        yield block


LOOP_STAGES: tuple[Stage[LoopJobRequest], ...] = (
    Stage("analyse", analyse, output=LoopAnalysed),
    Stage("render", render, output=Stored),
)

LOOP_KIND = JobKind(
    name=LOOP_JOB,
    request=LoopJobRequest,
    stages=LOOP_STAGES,
    admit=admit_loop,
    inputs=frozenset({"file", "upload_id"}),
    other_sources=("job_id",),
    summary="Extend a clip to `target_duration_s` (up to 10 h) by repeating a seamless loop of it, found "
    "by beat and similarity analysis and crossfaded at every seam; the output is streamed to S3.",
)
