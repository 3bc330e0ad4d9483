"""Model URIs → something a wrapper's `from_pretrained` can load (ARCHITECTURE.md, conventions).

- `debug`: the wrapper's tiny random-init model (never chosen implicitly).
- `pkg://name`: weights shipped inside an installed Python package (the wrapper knows where).
- `hf://org/name[@revision]` or `org/name`: a hub id, downloaded by the wrapper into the cache; the
  revision (default: the default branch) is resolved to its commit, which the model then records.
- `s3://bucket/prefix`: the model store: synced into the cache, every file checked against the
  SHA-256 `manifest.json` that `push_model` wrote next to it.
- anything else must be a local folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from infra.settings import Settings
from infra.storage import make_client

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"
COMMIT = re.compile(r"[0-9a-f]{40}")


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
        return ResolvedModel(uri=uri, source=name, revision=hub_commit(name, revision or None, settings))
    if uri.startswith("s3://"):
        return ResolvedModel(uri=uri, source=str(pull_model(uri, settings)))
    local = Path(uri).expanduser()
    if local.is_dir():
        return ResolvedModel(uri=uri, source=str(local.resolve()))
    if uri.count("/") == 1 and not uri.startswith((".", "/")):
        return ResolvedModel(uri=uri, source=uri, revision=hub_commit(uri, None, settings))
    raise ModelStoreError(
        f"model {uri!r} is neither 'debug', pkg://, hf://org/name, s3://bucket/prefix nor an existing folder"
    )


def hub_commit(name: str, revision: str | None, settings: Settings) -> str | None:
    """The commit `revision` (default: the repo's default branch) of hub repo `name` resolves to, so that
    it is loaded exactly and recorded in every result and fingerprint (`ModelInfo.revision`).

    A 40-hex revision is already one. Otherwise the hub cache (`settings.model_cache_dir`, where the
    wrappers download) answers when it holds the ref, then the hub itself unless HF_HUB_OFFLINE; None
    when neither knows (the wrapper's load then fails, naming the model).
    """
    if revision is not None and COMMIT.fullmatch(revision):
        return revision
    ref = revision or "main"
    cached = settings.model_cache_dir / f"models--{name.replace('/', '--')}" / "refs" / ref
    if cached.is_file():
        return cached.read_text().strip() or None
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return None
    try:
        return HfApi().model_info(name, revision=revision, timeout=10).sha
    except (HfHubHTTPError, OSError) as e:
        logger.warning("hub revision not resolved", extra={"model": name, "revision": ref, "error": str(e)})
        return None


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
    """Upload every file of `folder` to `uri`, then its SHA-256 manifest (last, so readers see whole sets).
    The bucket is created if it does not exist yet (`s3://soundstage-models/...` in a fresh store)."""
    bucket, prefix = _split_s3(uri)
    if not folder.is_dir():
        raise ModelStoreError(f"{folder} is not a folder")
    client = make_client(settings)
    _ensure_bucket(client, bucket)
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = {name: file_sha256(path) for name, path in files.items()}
    for name, path in files.items():
        client.upload_file(str(path), bucket, prefix + name)
    client.put_object(Bucket=bucket, Key=prefix + MANIFEST, Body=json.dumps({"files": manifest}).encode())
    return manifest


def _ensure_bucket(client: object, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
            raise ModelStoreError(f"cannot use bucket {bucket!r}: {e}") from e
        client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        logger.info("model store bucket created", extra={"bucket": bucket})


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


# Model store prefixes that `soundstage models fetch` makes in one step (deployments/tools/model_fetch.py),
# and those that `soundstage models convert` makes from a released checkpoint.
FETCHED = {"htdemucs", "htdemucs_ft", "audiogen-medium"}
CONVERTED_FAMILIES = {"htdemucs": "demucs", "htdemucs_ft": "demucs", "audiogen": "audiogen"}


def missing_model(uri: str, settings: Settings, *, hub_reachable: bool) -> str | None:
    """None if `uri` can be loaded from here, else the command that makes it loadable.

    Hub ids count as loadable when the hub answers (the replica downloads them) or when the cache
    already holds the revision; `s3://` models when their manifest is in the store; folders when
    they exist. `debug` and `pkg://` are always loadable (a missing package fails at import).
    """
    if uri == "debug" or uri.startswith("pkg://"):
        return None
    if uri.startswith("s3://"):
        return None if _has_manifest(uri, settings) else _store_command(uri)
    if Path(uri).expanduser().is_dir():
        return None
    if uri.startswith("hf://") or (uri.count("/") == 1 and not uri.startswith((".", "/"))):
        name, _, revision = uri.removeprefix("hf://").partition("@")
        if hub_reachable or _in_hub_cache(name, revision or None):
            return None
        return f"huggingface-cli download {name}" + (f" --revision {revision}" if revision else "")
    return f"no folder at {uri}: pass an existing folder, or a hub id or s3:// URI"


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be asked for weights: not HF_HUB_OFFLINE, and its host answers."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname or "", endpoint.port or 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _in_hub_cache(name: str, revision: str | None) -> bool:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(name, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return False
    return True


def _has_manifest(uri: str, settings: Settings) -> bool:
    bucket, prefix = _split_s3(uri)
    try:
        make_client(settings).head_object(Bucket=bucket, Key=prefix + MANIFEST)
    except ClientError:
        return False
    return True


def _store_command(uri: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if name in FETCHED:
        default = f"s3://soundstage-models/{name}"
        return f"soundstage models fetch {name}" + ("" if uri.rstrip("/") == default else f" --to {uri}")
    family = CONVERTED_FAMILIES.get(name) or CONVERTED_FAMILIES.get(name.split("-", 1)[0])
    if family is None:
        return f"soundstage models push FOLDER {uri}"
    return f"soundstage models convert {family} RELEASED_CHECKPOINT OUT_DIR --push {uri}"
