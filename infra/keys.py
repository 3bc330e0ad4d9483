"""Object keys, built from validated ids and names only (a key never comes from raw user input)."""

from __future__ import annotations

import re

_ID = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class InvalidKeyPartError(ValueError):
    """A key component is not a validated id or name."""


def check_id(value: str) -> str:
    """A job/upload id: 32 lowercase hex characters (a uuid4 hex)."""
    if not _ID.match(value):
        raise InvalidKeyPartError(f"invalid id {value!r}: expected 32 lowercase hex characters")
    return value


def check_name(value: str) -> str:
    """A file or stage name inside a key: letters, digits, `._-`, no path separators, no leading dot."""
    if not _NAME.match(value) or ".." in value:
        raise InvalidKeyPartError(f"invalid name {value!r}: expected [A-Za-z0-9._-], at most 128 characters")
    return value


def job_key(job_id: str) -> str:
    return f"jobs/{check_id(job_id)}/job.json"


def active_job_key(job_id: str) -> str:
    """Marker present while a job is not finished: runners scan this small prefix, not every job."""
    return f"index/active/{check_id(job_id)}"


def _attempt_part(attempt: int) -> str:
    if not 0 <= attempt < 10_000:
        raise InvalidKeyPartError(f"attempt {attempt} outside 0..9999")
    return f"a{attempt}"


def stage_prefix(job_id: str, index: int, stage: str, attempt: int = 0) -> str:
    """Where attempt `attempt` of the job writes stage `index`'s checkpoint: every attempt has keys of its
    own, so a superseded attempt can never overwrite what a newer one wrote."""
    if not 0 <= index < 100:
        raise InvalidKeyPartError(f"stage index {index} outside 0..99")
    return f"jobs/{check_id(job_id)}/{_attempt_part(attempt)}/stages/{index:02d}-{check_name(stage)}/"


def output_key(job_id: str, name: str, attempt: int = 0) -> str:
    """Where attempt `attempt` of the job publishes output `name`; only the keys its (fenced) final
    record names count as the job's result."""
    return f"outputs/{check_id(job_id)}/{_attempt_part(attempt)}/{check_name(name)}"


def upload_key(upload_id: str, name: str) -> str:
    return f"uploads/{check_id(upload_id)}/{check_name(name)}"


def cache_key(sha256: str, name: str) -> str:
    if not _SHA256.match(sha256):
        raise InvalidKeyPartError(f"invalid sha256 {sha256!r}")
    return f"cache/{sha256}/{check_name(name)}"
