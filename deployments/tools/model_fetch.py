"""`soundstage models fetch NAME`: download an official release, verify its published checksums, convert
it to safetensors (models/convert/) and push it to the model store, for the weights that need converting.

- demucs names its files `SIGNATURE-SHA256PREFIX.th` (dl.fbaipublicfiles.com/demucs); the prefix is
  checked as demucs' own loader checks it. `htdemucs` is one checkpoint; `htdemucs_ft` is a bag of four
  (one per stem, weights as in demucs' `remote/htdemucs_ft.yaml`), converted and pushed as one bag folder.
- AudioGen (audiocraft's `state_dict.bin` + `compression_state_dict.bin` on the Hugging Face hub): the
  hub publishes each LFS file's SHA-256 in the `X-Linked-Etag` header of its resolve URL, and the
  download is checked against it. The T5 text encoder is not in the release: the converter loads the one
  the config names (t5-large), or `--text-encoder`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.model_store import push_model
from infra.settings import Settings

logger = logging.getLogger(__name__)
DEMUCS_ROOT = "https://dl.fbaipublicfiles.com/demucs/"
HUB_ROOT = "https://huggingface.co/"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class FetchError(RuntimeError):
    """A release could not be downloaded, verified or converted; the message names what was tried."""


@dataclass(frozen=True)
class Release:
    """`urls`: the official files, in the order the converter takes them; `family`: the converter
    (`soundstage models convert FAMILY`); `bag_weights`: for a demucs bag, one row per file, one column
    per stem (drums, bass, other, vocals)."""

    name: str
    family: str
    urls: tuple[str, ...]
    bag_weights: tuple[tuple[float, ...], ...] = ()


def _one_hot(n: int) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(1.0 if i == j else 0.0 for j in range(n)) for i in range(n))


_FT_MEMBERS = ("f7e0c4bc-ba3fe64a.th", "d12395a8-e57c48e6.th", "92cfc3b6-ef3bcb9c.th", "04573f0d-f3cf25b2.th")
RELEASES = {
    "htdemucs": Release("htdemucs", "demucs", (DEMUCS_ROOT + "hybrid_transformer/955717e8-8726e21a.th",)),
    "htdemucs_ft": Release(
        "htdemucs_ft",
        "demucs",
        tuple(DEMUCS_ROOT + "hybrid_transformer/" + name for name in _FT_MEMBERS),
        bag_weights=_one_hot(len(_FT_MEMBERS)),  # member i is the one for stem i
    ),
    "audiogen-medium": Release(
        "audiogen-medium",
        "audiogen",
        tuple(
            f"{HUB_ROOT}facebook/audiogen-medium/resolve/main/{name}"
            for name in ("state_dict.bin", "compression_state_dict.bin")
        ),
    ),
}


def find_release(name: str) -> Release:
    """The release called `name`; an unknown name raises `FetchError` listing the known ones."""
    release = RELEASES.get(name)
    if release is None:
        raise FetchError(f"unknown release {name!r}; known: {', '.join(RELEASES)}")
    return release


def fetch_model(
    name: str,
    to: str,
    settings: Settings,
    *,
    urls: tuple[str, ...] = (),
    text_encoder: str | None = None,
) -> str:
    """Download, verify, convert and push release `name` to `to` (s3://bucket/prefix); returns `to`.

    `urls`: mirrors of the release's files, as many as it has and in its order (default: the official
    ones). `text_encoder`: AudioGen's T5 (hub id, folder or "debug"; default: the config's). Raises
    `FetchError`.
    """
    release = find_release(name)
    urls = urls or release.urls
    if len(urls) != len(release.urls):
        official = ", ".join(url.rsplit("/", 1)[-1] for url in release.urls)
        raise FetchError(f"{name} has {len(release.urls)} files ({official}); got {len(urls)} --url")
    if text_encoder is not None and release.family != "audiogen":
        raise FetchError("--text-encoder only applies to audiogen releases")
    with tempfile.TemporaryDirectory(prefix=f"soundstage-fetch-{name}-") as work:
        out_dir = _FETCHERS[release.family](release, urls, Path(work), text_encoder)
        push_model(out_dir, to, settings)
    return to


def _fetch_demucs(release: Release, urls: tuple[str, ...], work: Path, _: str | None) -> Path:
    checkpoints = [download_verified(url, work) for url in urls]
    out_dir = work / release.name
    if not release.bag_weights:
        return _converting(lambda: _convert_demucs(checkpoints[0], out_dir), checkpoints[0].name)
    return _converting(lambda: _convert_demucs_bag(checkpoints, release, out_dir), release.name)


def _fetch_audiogen(release: Release, urls: tuple[str, ...], work: Path, text_encoder: str | None) -> Path:
    from models.convert.audiocraft_checkpoint import COMPRESSION_FILE, LM_FILE

    files = work / "release"
    files.mkdir()
    lm_file = download_hub_verified(urls[0], files / LM_FILE)
    codec_file = download_hub_verified(urls[1], files / COMPRESSION_FILE)
    return _converting(
        lambda: _convert_audiogen(lm_file, codec_file, work / release.name, text_encoder), release.name
    )


_FETCHERS: dict[str, Callable[[Release, tuple[str, ...], Path, str | None], Path]] = {
    "demucs": _fetch_demucs,
    "audiogen": _fetch_audiogen,
}


def download_verified(url: str, folder: Path, timeout_s: float = 60.0) -> Path:
    """Stream `url` into `folder` and check the SHA-256 prefix its file name carries (`SIG-PREFIX.th`)."""
    file_name = url.rsplit("/", 1)[-1]
    stem, _, expected = file_name.rsplit(".", 1)[0].partition("-")
    if not stem or not expected:
        raise FetchError(f"{url}: the file name carries no checksum (want SIGNATURE-SHA256PREFIX.th)")
    path = folder / file_name
    actual, _ = _stream(url, path, timeout_s)
    _check_digest(url, path, actual[: len(expected)], expected, "the release name says")
    logger.info("release downloaded and verified", extra={"url": url, "sha256_prefix": expected})
    return path


def download_hub_verified(url: str, path: Path, timeout_s: float = 60.0) -> Path:
    """Stream a hub file into `path` and check it against the SHA-256 the hub publishes for it (the
    `X-Linked-Etag` of an LFS file's resolve URL, before any redirect to the CDN)."""
    actual, published = _stream(url, path, timeout_s)
    if published is None:
        path.unlink()
        raise FetchError(
            f"{url}: the server publishes no SHA-256 for the file (no X-Linked-Etag header, as the "
            "Hugging Face hub sends for LFS files); not converted"
        )
    _check_digest(url, path, actual, published, "the hub publishes")
    logger.info("hub file downloaded and verified", extra={"url": url, "sha256": published})
    return path


def _stream(url: str, path: Path, timeout_s: float) -> tuple[str, str | None]:
    """Download `url` to `path`; its SHA-256 and the SHA-256 any response on the way published."""
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            response.raise_for_status()
            with path.open("wb") as f:
                for block in response.iter_bytes(1 << 20):
                    digest.update(block)
                    f.write(block)
            published = [_published_sha256(r.headers) for r in (*response.history, response)]
    except httpx.HTTPError as e:
        raise FetchError(
            f"cannot download {url}: {e} (no network here? download it elsewhere, serve it on this machine "
            f"and pass --url, or run `soundstage models convert`)"
        ) from e
    return digest.hexdigest(), next((p for p in published if p is not None), None)


def _published_sha256(headers: httpx.Headers) -> str | None:
    value = headers.get("x-linked-etag", "").removeprefix("W/").strip('"').lower()
    return value if SHA256_HEX.fullmatch(value) else None


def _check_digest(url: str, path: Path, actual: str, expected: str, source: str) -> None:
    if actual != expected:
        os.unlink(path)
        raise FetchError(f"{url}: SHA-256 starts {actual[:16]}, {source} {expected}; not converted")


def _converting(convert: Callable[[], Path], what: str) -> Path:
    """Run a converter (offline, as `soundstage models convert`); its input errors become `FetchError`."""
    from models.convert.audiocraft_checkpoint import CheckpointFileError
    from models.types import ModelLoadingError

    try:
        return convert()
    except (ModelLoadingError, CheckpointFileError) as e:
        raise FetchError(f"{what}: {e}") from e


# The converters: the one place the CLI reaches into models/ (offline tools, imported when used).


def _convert_demucs(checkpoint: Path, out_dir: Path) -> Path:
    from models.convert.demucs import convert_checkpoint

    return convert_checkpoint(checkpoint, out_dir)


def _convert_demucs_bag(checkpoints: list[Path], release: Release, out_dir: Path) -> Path:
    from models.convert.demucs import convert_bag

    weights = [list(row) for row in release.bag_weights]
    return convert_bag(checkpoints, weights, out_dir)


def _convert_audiogen(lm_file: Path, codec_file: Path, out_dir: Path, text_encoder: str | None) -> Path:
    from models.convert.audiocraft_checkpoint import read_audiocraft_release
    from models.convert.audiogen import convert_audiocraft_checkpoint

    release = read_audiocraft_release(lm_file, codec_file)
    return convert_audiocraft_checkpoint(
        release.state_dict, release.config, out_dir, text_encoder=text_encoder
    )
