"""S3-compatible object storage through boto3: keys from validated ids, conditional writes, presigned URLs."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import boto3
import tenacity
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from infra.keys import (
    InvalidKeyPartError,
    active_job_key,
    cache_key,
    check_id,
    check_name,
    job_key,
    output_key,
    stage_prefix,
    upload_key,
)
from infra.s3_metrics import observe_s3_calls
from infra.settings import Settings

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


__all__ = [  # the key builders are re-exported: callers build keys and store objects from one module
    "InvalidKeyPartError",
    "ObjectNotFoundError",
    "PreconditionFailedError",
    "Storage",
    "StorageError",
    "TransientStorageError",
    "active_job_key",
    "cache_key",
    "check_id",
    "check_name",
    "job_key",
    "output_key",
    "part_size_for",
    "retrying",
    "stage_prefix",
    "upload_key",
]
T = TypeVar("T")
MAX_PARTS = 10_000  # S3's limit on the parts of one multipart upload
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling"}


class StorageError(RuntimeError):
    """An S3 call failed for a reason other than the ones below (a refused request)."""


class TransientStorageError(StorageError):
    """The store was unreachable, timed out or answered 5xx/throttling: worth retrying later."""


class ObjectNotFoundError(StorageError):
    """The key does not exist."""


class PreconditionFailedError(StorageError):
    """A create-only (`If-None-Match: *`) or compare-and-swap (`If-Match`) write lost the race."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    etag: str
    body: bytes


def make_client(settings: Settings, endpoint_url: str | None = None) -> S3Client:
    """A boto3 S3 client set up for S3-compatible servers (checksums only when required), with bounded
    connect/read timeouts; botocore's own retries stay short, `retrying` covers longer outages."""
    config = Config(
        region_name=settings.s3_region,
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": settings.s3_addressing_style},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
    )
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url or settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret,
        config=config,
    )
    observe_s3_calls(client)  # request latency and errors (infra/metrics.py)
    return client


def _error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _translate(e: ClientError | BotoCoreError, key: str) -> StorageError:
    """The typed error for a failed S3 call: not found, lost race, transient (retry) or refused."""
    if isinstance(e, BotoCoreError):  # connection refused/reset, DNS, connect or read timeout
        return TransientStorageError(f"S3 endpoint unreachable on {key!r}: {type(e).__name__}")
    code = _error_code(e)
    if code in ("NoSuchKey", "404", "NotFound"):
        return ObjectNotFoundError(f"no object at {key!r}")
    if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
        return PreconditionFailedError(f"conditional write to {key!r} failed ({code})")
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in _TRANSIENT_CODES or status >= 500:
        return TransientStorageError(f"S3 error on {key!r}: {code or status}")
    return StorageError(f"S3 error on {key!r}: {code} {e}")


def retrying(call: Callable[[], T], tolerance_s: float) -> T:
    """`call()`, retried on `TransientStorageError` with exponential backoff and full jitter for up to
    `tolerance_s` seconds (then the last error is raised). Other errors are raised at once."""
    retry = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientStorageError),
        wait=tenacity.wait_random_exponential(multiplier=0.25, max=8.0),
        stop=tenacity.stop_after_delay(tolerance_s),
        reraise=True,
    )
    return retry(call)


def part_size_for(expected_bytes: int | None, minimum: int) -> int:
    """Multipart part size: `minimum`, or larger (whole MiB) so `expected_bytes` fits in 10,000 parts
    with room to spare (S3's limit; a 110 GB output needs parts of ~12 MiB)."""
    if not expected_bytes:
        return minimum
    mib = 1024 * 1024
    needed = math.ceil(expected_bytes * 1.25 / MAX_PARTS)
    return max(minimum, math.ceil(needed / mib) * mib)


class Storage:
    """One bucket on an S3-compatible server. Thread-safe (boto3 clients are)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = settings.s3_bucket
        self.client = make_client(settings)
        public = settings.s3_public_endpoint_url
        self._presign_client = make_client(settings, public) if public else self.client

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def ping(self) -> None:
        """Raise `StorageError` unless the bucket is reachable."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, self.bucket) from e

    def put_bytes(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        """Write `body` at `key` unconditionally; return the new ETag."""
        return self._put(key, body, content_type)

    def create(self, key: str, body: bytes, content_type: str = "application/json") -> str:
        """Write only if `key` does not exist (`If-None-Match: *`); else `PreconditionFailedError`."""
        return self._put(key, body, content_type, IfNoneMatch="*")

    def replace(self, key: str, body: bytes, etag: str, content_type: str = "application/json") -> str:
        """Compare-and-swap: write only if the current ETag is `etag`; else `PreconditionFailedError`."""
        return self._put(key, body, content_type, IfMatch=etag)

    def _put(self, key: str, body: bytes, content_type: str, **conditions: Any) -> str:
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, **conditions
            )
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, key) from e
        return str(response["ETag"])

    def get(self, key: str) -> StoredObject:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"].read()
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, key) from e
        return StoredObject(key=key, etag=str(response["ETag"]), body=body)

    def get_bytes(self, key: str) -> bytes:
        return self.get(key).body

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            error = _translate(e, key)
            if isinstance(error, ObjectNotFoundError):
                return False
            raise error from e
        return True

    def last_modified(self, key: str) -> float | None:
        """When `key` was last written (seconds since the epoch), or None if it does not exist."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            error = _translate(e, key)
            if isinstance(error, ObjectNotFoundError):
                return None
            raise error from e
        return float(head["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, key) from e

    def list_prefixes(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """The immediate "sub-folders" of `prefix` (each ending in `/`), in lexicographic order."""
        paginator = self.client.get_paginator("list_objects_v2")
        options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/"}
        if start_after:
            options["StartAfter"] = start_after
        try:
            for page in paginator.paginate(**options):
                for item in page.get("CommonPrefixes", []):
                    yield item["Prefix"]
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, prefix) from e

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """Every key under `prefix` (after `start_after`), in lexicographic order, page by page."""
        paginator = self.client.get_paginator("list_objects_v2")
        options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            options["StartAfter"] = start_after
        try:
            for page in paginator.paginate(**options):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, prefix) from e

    def upload_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        content_type: str = "application/octet-stream",
        expected_bytes: int | None = None,
    ) -> int:
        """Stream `chunks` into `key` with a multipart upload, holding at most one part in memory. Parts
        grow with `expected_bytes` (the caller's estimate) so long outputs stay within 10,000 parts.

        Returns the number of bytes written. The upload is aborted if anything fails; S3 errors are
        raised typed (`StorageError` and its subclasses).
        """
        part_size = part_size_for(expected_bytes, self.settings.multipart_chunk_bytes)
        try:
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type
            )
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, key) from e
        upload_id = upload["UploadId"]
        try:
            parts, total = self._upload_parts(key, upload_id, chunks, part_size)
            if not parts:  # S3 wants at least one part, even an empty one.
                parts.append(self._upload_part(key, upload_id, 1, b""))
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except (ClientError, BotoCoreError) as e:
            self._abort(key, upload_id)
            raise _translate(e, key) from e
        except BaseException:
            self._abort(key, upload_id)
            raise
        return total

    def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; if even that fails, the bucket's lifecycle rule cleans it up."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            logger.warning("could not abort multipart upload", extra={"key": key, "upload_id": upload_id})

    def _upload_parts(
        self, key: str, upload_id: str, chunks: Iterable[bytes], part_size: int
    ) -> tuple[list[Any], int]:
        parts: list[Any] = []
        buffer = bytearray()
        total = 0
        for chunk in chunks:
            buffer.extend(chunk)
            total += len(chunk)
            while len(buffer) >= part_size:
                if len(parts) + 1 >= MAX_PARTS:
                    raise StorageError(f"{key!r} needs more than {MAX_PARTS} parts of {part_size} bytes")
                parts.append(self._upload_part(key, upload_id, len(parts) + 1, bytes(buffer[:part_size])))
                del buffer[:part_size]
        if buffer:
            parts.append(self._upload_part(key, upload_id, len(parts) + 1, bytes(buffer)))
        return parts, total

    def _upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        response = self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"ETag": response["ETag"], "PartNumber": number}

    def upload_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        """Upload a local file (boto3 switches to multipart for large files)."""
        try:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, key) from e
        except S3UploadFailedError as e:  # boto3's transfer manager wraps the cause in its message
            raise TransientStorageError(f"upload of {key!r} failed: {type(e).__name__}") from e

    def download_file(self, key: str, path: Path) -> None:
        try:
            self.client.download_file(self.bucket, key, str(path))
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, key) from e

    def open_stream(self, key: str) -> IO[bytes]:
        """A file-like streaming body for `key` (read it in chunks; close it when done)."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, key) from e
        return response["Body"]  # type: ignore[return-value]

    def presigned_url(self, key: str, expires_s: int | None = None, filename: str | None = None) -> str:
        """A presigned GET URL for `key`, valid `expires_s` (default: settings.presign_expiry_s)."""
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{check_name(filename)}"'
        return self._presign_client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_s or self.settings.presign_expiry_s
        )
