"""Model URIs → something a wrapper's `from_pretrained` can load (ARCHITECTURE.md, conventions).

- `debug`: the wrapper's tiny random-init model (never chosen implicitly).
- `pkg://name`: weights shipped inside an installed Python package (the wrapper knows where).
- `hf://org/name[@revision]` or `org/name`: a hub id, downloaded by the wrapper into the cache.
- `s3://bucket/prefix`: the model store: synced into the cache, every file checked against the
  SHA-256 `manifest.json` that `push_model` wrote next to it.
- anything else must be a local folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from infra.settings import Settings
from infra.storage import make_client

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"


class ModelStoreError(RuntimeError):
    """A model URI could not be resolved, downloaded or verified."""


@dataclass(frozen=True)
class ResolvedModel:
    """`source` is what to hand to `from_pretrained`: `debug`, `pkg://…`, a hub id or a local folder."""

    uri: str
    source: str
    revision: str | None = None


def resolve_model_uri(uri: str, settings: Settings) -> ResolvedModel:
    """Resolve `uri`; `s3://` models are synced into `settings.model_cache_dir` first."""
    if uri == "debug" or uri.startswith("pkg://"):
        return ResolvedModel(uri=uri, source=uri)
    if uri.startswith("hf://"):
        name, _, revision = uri.removeprefix("hf://").partition("@")
        return ResolvedModel(uri=uri, source=name, revision=revision or None)
    if uri.startswith("s3://"):
        return ResolvedModel(uri=uri, source=str(pull_model(uri, settings)))
    local = Path(uri).expanduser()
    if local.is_dir():
        return ResolvedModel(uri=uri, source=str(local.resolve()))
    if uri.count("/") == 1 and not uri.startswith((".", "/")):
        return ResolvedModel(uri=uri, source=uri)
    raise ModelStoreError(
        f"model {uri!r} is neither 'debug', pkg://, hf://org/name, s3://bucket/prefix nor an existing folder"
    )


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket or not prefix:
        raise ModelStoreError(f"model store URI {uri!r} must look like s3://bucket/prefix")
    return bucket, prefix.rstrip("/") + "/"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def push_model(folder: Path, uri: str, settings: Settings) -> dict[str, str]:
    """Upload every file of `folder` to `uri`, then its SHA-256 manifest (last, so readers see whole sets)."""
    bucket, prefix = _split_s3(uri)
    client = make_client(settings)
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = {name: file_sha256(path) for name, path in files.items()}
    for name, path in files.items():
        client.upload_file(str(path), bucket, prefix + name)
    client.put_object(Bucket=bucket, Key=prefix + MANIFEST, Body=json.dumps({"files": manifest}).encode())
    return manifest


def pull_model(uri: str, settings: Settings) -> Path:
    """Sync `uri` into the cache (only files whose hash differs) and return the local folder."""
    bucket, prefix = _split_s3(uri)
    target = settings.model_cache_dir / "s3" / bucket / prefix
    client = make_client(settings)
    try:
        body = client.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read()
    except ClientError as e:
        raise ModelStoreError(f"no readable {MANIFEST} at {uri}: {e}") from e
    manifest: dict[str, str] = json.loads(body)["files"]
    for name, expected in manifest.items():
        _sync_file(client, bucket, prefix + name, _safe_join(target, name), expected)
    logger.info("model synced", extra={"uri": uri, "files": len(manifest), "path": str(target)})
    return target


def _safe_join(root: Path, name: str) -> Path:
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ModelStoreError(f"manifest entry {name!r} escapes the model folder")
    return path


def _sync_file(client: object, bucket: str, key: str, path: Path, expected: str) -> None:
    if path.is_file() and file_sha256(path) == expected:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        client.download_file(bucket, key, str(partial))  # type: ignore[attr-defined]
    except ClientError as e:
        raise ModelStoreError(f"cannot download s3://{bucket}/{key}: {e}") from e
    actual = file_sha256(partial)
    if actual != expected:
        partial.unlink()
        raise ModelStoreError(f"s3://{bucket}/{key}: sha256 {actual} does not match manifest {expected}")
    os.replace(partial, path)
