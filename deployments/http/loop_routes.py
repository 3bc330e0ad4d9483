"""The ingress's checks for `POST /v1/jobs/loop`: what can be refused before a job exists.

The route itself is a method of `Ingress` (deployments/ingress.py): Serve binds `self` only for routes
defined on the decorated class.
"""

from __future__ import annotations

from typing import Any

from deployments.http.audio_inputs import upload_info
from deployments.http.errors import ApiError
from infra.audio_stream import NotStreamableFormatError, check_streamable
from infra.jobs import JobNotFoundError, JobStore
from infra.storage import InvalidKeyPartError, Storage
from pipelines.jobs.loop import MAX_TARGET_S, MIN_SOURCE_S, LoopJobRequest, LoopSourceError, job_audio_output

_SOURCE_STATUS = {"source_job_not_succeeded": 409}


def check_target(target_duration_s: float, fmt: str) -> None:
    """422 `duration_too_long` past 10 h; 422 `format_not_streamable` for a format with a trailing header."""
    if target_duration_s > MAX_TARGET_S:
        raise ApiError(
            422,
            "duration_too_long",
            f"target_duration_s {target_duration_s:g} exceeds the limit of {MAX_TARGET_S:g} s (10 h)",
        )
    try:
        check_streamable(fmt)
    except NotStreamableFormatError as e:
        raise ApiError(422, e.code, str(e)) from e


def job_source(jobs: JobStore, job_id: str, output: str | None) -> dict[str, Any]:
    """`{job_id, output}` for a succeeded job's audio output: 404 unknown job, 409 not finished, else 422."""
    try:
        record = jobs.get(job_id)
    except (JobNotFoundError, InvalidKeyPartError):
        raise ApiError(404, "source_job_not_found", f"no job with id {job_id!r}") from None
    try:
        name, entry = job_audio_output(record, output)
    except LoopSourceError as e:
        raise ApiError(_SOURCE_STATUS.get(e.code, 422), e.code, str(e)) from e
    _check_length(entry.get("duration_s"))
    return {"job_id": job_id, "output": name}


def upload_source(storage: Storage, upload_id: str, output: str | None) -> dict[str, Any]:
    """`{upload_id}` for a stored upload long enough to loop (404 if unknown)."""
    if output is not None:
        raise ApiError(422, "invalid_request", "`output` names an audio result of `job_id`; send no `output`")
    _check_length(upload_info(storage, upload_id).duration_s)
    return {"upload_id": upload_id}


def _check_length(duration_s: object) -> None:
    if isinstance(duration_s, int | float) and duration_s < MIN_SOURCE_S:
        raise ApiError(
            422,
            "source_too_short",
            f"the source lasts {duration_s:g} s; a loop needs at least {MIN_SOURCE_S:g} s",
        )


def loop_request(source: dict[str, Any], **fields: Any) -> LoopJobRequest:
    """The job's request; anything the form checks missed is a 422."""
    try:
        return LoopJobRequest(**source, **fields)
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e)) from e
