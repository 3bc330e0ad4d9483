"""What makes a stage checkpoint valid and a failure worth retrying: fingerprints, digests, retry policy."""

from __future__ import annotations

import hashlib
import json
import resource
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra import metrics
from infra.jobs import StageRecord
from infra.storage import check_name


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures: `tries` attempts, waits `base_s * 2**n`."""

    tries: int = 3
    base_s: float = 0.5
    is_transient: Callable[[BaseException], bool] = lambda e: isinstance(e, (TimeoutError, ConnectionError))


def fingerprint(
    stage: str,
    request_hash: str,
    previous: Sequence[StageRecord],
    models: Mapping[str, Mapping[str, Any]] | None = None,
    version: int = 1,
) -> str:
    """Hash of the stage name, the job kind's version, the job's request (its parameters), every earlier
    stage's object digests and facts, and the identity (id, revision, weights kind) of each model the
    stage runs."""
    parts = [
        stage,
        f"version={version}",
        request_hash,
        json.dumps(models or {}, sort_keys=True),
        *(json.dumps({"objects": r.objects, "facts": r.facts}, sort_keys=True) for r in previous),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def describe(error: BaseException) -> str:
    """One bounded line for an error in a job record."""
    return f"{type(error).__name__}: {error}"[:500]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


_RESERVED = frozenset({"manifest.json", "facts.json"})  # what the runner itself writes beside the objects


def object_name(name: str) -> str:
    if name in _RESERVED:
        raise ValueError(f"stage object name {name!r} is reserved for the checkpoint itself")
    return check_name(name)


def record_stage_metrics(kind: str, record: StageRecord, errors: list[str]) -> None:
    """The stage's duration, and each retried error by its type (`describe`'s `Type: message`)."""
    metrics.record(metrics.STAGE_DURATION, record.duration_s, kind=kind, stage=record.name)
    for error in errors:
        cause = error.partition(":")[0]
        metrics.record(metrics.STAGE_RETRIES, kind=kind, stage=record.name, cause=cause)
