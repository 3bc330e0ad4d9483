"""The start-up probe of the configured S3 store: are conditional writes really honoured?

Job records rest on two conditional PUTs (infra/jobs.py): create-only (`If-None-Match: *`) and
compare-and-swap on the ETag (`If-Match`). Some S3-compatible stores accept those headers and ignore
them, which would let two runners both claim one job, silently. So before anything is served, one
scratch key is written under `system/probe/` and the store must refuse, with 412, a create-only PUT
over it and a compare-and-swap PUT with a wrong ETag, and must leave the object as it was.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from infra.storage import PreconditionFailedError, Storage, StorageError

logger = logging.getLogger(__name__)

PROBE_PREFIX = "system/probe/"
_WRONG_ETAG = '"00000000000000000000000000000000"'


class StoreProbeError(RuntimeError):
    """The store cannot hold soundstage's job records; the message names the endpoint and what it lacks."""


def describe_endpoint(storage: Storage) -> str:
    endpoint = storage.settings.s3_endpoint_url or "AWS S3 (default endpoint)"
    return f"{endpoint} (bucket {storage.bucket!r})"


def probe_conditional_writes(storage: Storage) -> None:
    """Raise `StoreProbeError` unless create-only and compare-and-swap PUTs answer 412 when they should.

    Costs six small requests on one scratch key, which it deletes again.
    """
    where = describe_endpoint(storage)
    key = f"{PROBE_PREFIX}{secrets.token_hex(16)}"
    try:
        lacking = _lacking(storage, key)
    except StorageError as e:
        raise StoreProbeError(f"S3 store at {where} failed the conditional-write probe: {e}") from e
    finally:
        _delete_quietly(storage, key)
    if lacking:
        raise StoreProbeError(
            f"S3 store at {where} does not honour conditional writes, which soundstage's job records "
            f"need (infra/jobs.py): {'; '.join(lacking)}. Use a store that does (AWS S3, SeaweedFS, "
            "MinIO) or upgrade this one."
        )
    logger.info("S3 store at %s honours create-only and compare-and-swap writes", where)


def _lacking(storage: Storage, key: str) -> list[str]:
    """What the store got wrong on `key`, in words (empty: nothing)."""
    lacking: list[str] = []
    original = b"probe: original"
    storage.create(key, original, "text/plain")
    if _accepted(lambda: storage.create(key, b"probe: second create", "text/plain")):
        lacking.append("create-only: a PUT with `If-None-Match: *` on an existing key was accepted, not 412")
    if _accepted(lambda: storage.replace(key, b"probe: stale swap", _WRONG_ETAG, "text/plain")):
        lacking.append("compare-and-swap: a PUT with `If-Match` and a wrong ETag was accepted, not 412")
    current = storage.get(key)
    if not lacking and current.body != original:
        lacking.append("a PUT refused with 412 still changed the object")
    try:
        storage.replace(key, b"probe: swap", current.etag, "text/plain")
    except PreconditionFailedError:
        lacking.append("compare-and-swap: a PUT with `If-Match` and the current ETag was refused")
    return lacking


def _accepted(write: Callable[[], object]) -> bool:
    """Whether the conditional `write()` went through (False: refused with 412, as it should be)."""
    try:
        write()
    except PreconditionFailedError:
        return False
    return True


def _delete_quietly(storage: Storage, key: str) -> None:
    try:
        storage.delete(key)
    except StorageError:
        logger.warning("could not delete the probe key %s", key)
