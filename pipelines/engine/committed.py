"""A stage checkpoint's stored form: reading a committed stage back and verifying it, and moving large
facts out of the job record into an object of their own."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from infra.jobs import StageRecord
from infra.storage import ObjectNotFoundError, Storage, retrying
from pipelines.engine.checkpoints import sha256

T = TypeVar("T")
logger = logging.getLogger(__name__)


def _s3(storage: Storage, call: Callable[[], T]) -> T:
    """Checkpoint reads and writes ride out a store outage of up to `s3_outage_tolerance_s`."""
    return retrying(call, storage.settings.s3_outage_tolerance_s)


def read_committed(storage: Storage, record: StageRecord) -> tuple[dict[str, bytes], dict[str, Any]] | None:
    """The objects and facts of a committed stage; None if one is missing or does not hash to `record`."""
    try:
        objects = {
            n: _s3(storage, functools.partial(storage.get_bytes, record.prefix + n)) for n in record.objects
        }
        facts = _read_facts(storage, record)
    except ObjectNotFoundError:
        return None
    if facts is None or any(sha256(body) != record.objects[n] for n, body in objects.items()):
        logger.warning("checkpoint digest mismatch", extra={"stage": record.name, "prefix": record.prefix})
        return None
    return objects, facts


def _read_facts(storage: Storage, record: StageRecord) -> dict[str, Any] | None:
    """The stage's facts: inline, or read back from its facts object (None if that does not verify)."""
    if record.facts_key is None:
        return record.facts
    body = _s3(storage, functools.partial(storage.get_bytes, record.facts_key))
    if sha256(body) != record.facts_sha256:
        return None
    facts: dict[str, Any] = json.loads(body)
    return facts


def stored_form(storage: Storage, record: StageRecord) -> StageRecord:
    """What the job record holds of `record`: large facts moved to an object of this attempt."""
    body = json.dumps(record.facts, sort_keys=True, separators=(",", ":")).encode()
    if len(body) <= storage.settings.job_facts_inline_max_bytes:
        return record
    key = record.prefix + "facts.json"
    _s3(storage, lambda: storage.put_bytes(key, body, "application/json"))
    update = {"facts": {}, "facts_key": key, "facts_sha256": sha256(body), "facts_bytes": len(body)}
    return record.model_copy(update=update)
