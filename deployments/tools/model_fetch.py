"""`soundstage models fetch NAME`: download an official release, verify its published checksum, convert
it to safetensors (models/convert/) and push it to the model store, for the weights that need converting.

demucs names its files `SIGNATURE-SHA256PREFIX.th` (dl.fbaipublicfiles.com/demucs); the prefix is checked
as demucs' own loader checks it. Bags of models (htdemucs_ft: four checkpoints, one per stem) and AudioGen
(audiocraft's two `.bin` files plus a T5 text encoder) are refused with the commands that do it by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.model_store import push_model
from infra.settings import Settings

logger = logging.getLogger(__name__)
DEMUCS_ROOT = "https://dl.fbaipublicfiles.com/demucs/"


class FetchError(RuntimeError):
    """A release could not be downloaded, verified or converted; the message names what was tried."""


@dataclass(frozen=True)
class Release:
    """`urls`: the official files; `family`: the converter (`soundstage models convert FAMILY`)."""

    name: str
    family: str
    urls: tuple[str, ...]


RELEASES = {
    "htdemucs": Release("htdemucs", "demucs", (DEMUCS_ROOT + "hybrid_transformer/955717e8-8726e21a.th",)),
    "htdemucs_ft": Release(
        "htdemucs_ft",
        "demucs",
        tuple(
            DEMUCS_ROOT + "hybrid_transformer/" + name
            for name in (
                "f7e0c4bc-ba3fe64a.th",
                "d12395a8-e57c48e6.th",
                "92cfc3b6-ef3bcb9c.th",
                "04573f0d-f3cf25b2.th",
            )
        ),
    ),
    "audiogen-medium": Release(
        "audiogen-medium",
        "audiogen",
        tuple(
            f"https://huggingface.co/facebook/audiogen-medium/resolve/main/{name}"
            for name in ("state_dict.bin", "compression_state_dict.bin")
        ),
    ),
}


def fetch_model(name: str, to: str, settings: Settings, *, url: str | None = None) -> str:
    """Download, verify, convert and push release `name` (or the single file at `url`) to `to`
    (s3://bucket/prefix); returns `to`. Raises `FetchError`."""
    release = RELEASES.get(name)
    if release is None:
        raise FetchError(f"unknown release {name!r}; known: {', '.join(RELEASES)}")
    urls = (url,) if url else release.urls
    if release.family != "demucs" or len(urls) != 1:
        raise FetchError(_by_hand(release, to))
    with tempfile.TemporaryDirectory(prefix=f"soundstage-fetch-{name}-") as work:
        checkpoint = download_verified(urls[0], Path(work))
        out_dir = _convert_demucs(checkpoint, Path(work) / name)
        push_model(out_dir, to, settings)
    return to


def download_verified(url: str, folder: Path, timeout_s: float = 60.0) -> Path:
    """Stream `url` into `folder` and check the SHA-256 prefix its file name carries (`SIG-PREFIX.th`)."""
    file_name = url.rsplit("/", 1)[-1]
    stem, _, expected = file_name.rsplit(".", 1)[0].partition("-")
    if not stem or not expected:
        raise FetchError(f"{url}: the file name carries no checksum (want SIGNATURE-SHA256PREFIX.th)")
    path = folder / file_name
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            response.raise_for_status()
            with path.open("wb") as f:
                for block in response.iter_bytes(1 << 20):
                    digest.update(block)
                    f.write(block)
    except httpx.HTTPError as e:
        raise FetchError(
            f"cannot download {url}: {e} (no network here? download it elsewhere and run "
            f"`soundstage models convert`)"
        ) from e
    actual = digest.hexdigest()[: len(expected)]
    if actual != expected:
        os.unlink(path)
        raise FetchError(f"{url}: SHA-256 starts {actual}, the release name says {expected}; not converted")
    logger.info("release downloaded and verified", extra={"url": url, "sha256_prefix": expected})
    return path


def _convert_demucs(checkpoint: Path, out_dir: Path) -> Path:
    # Offline conversion, as `soundstage models convert`: the one place the CLI reaches into models/.
    from models.convert.demucs import convert_checkpoint
    from models.types import ModelLoadingError

    try:
        return convert_checkpoint(checkpoint, out_dir)
    except ModelLoadingError as e:
        raise FetchError(f"{checkpoint.name}: {e}") from e


def _by_hand(release: Release, to: str) -> str:
    files = " ".join(release.urls)
    if release.family == "demucs":
        return (
            f"{release.name} is a bag of {len(release.urls)} models, which the converter does not combine "
            f"yet; convert one checkpoint of {files} with "
            f"`soundstage models convert demucs FILE OUT --push {to}`"
        )
    return (
        f"{release.name}: fetch is not automated yet; download {files} into a folder, then "
        f"`soundstage models convert audiogen FOLDER OUT --push {to}`"
    )
