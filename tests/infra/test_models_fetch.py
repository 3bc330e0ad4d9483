"""`soundstage models fetch`: synthetic releases in the real file formats, served over local HTTP (the
real hosts are unreachable here), are downloaded, checked against their published checksums, converted
and pushed to the store (SeaweedFS), and the pushed folders load in the wrappers the deployments use:
htdemucs (one demucs `.th`), htdemucs_ft (a bag of four), audiogen-medium (audiocraft's two `.bin` files
from a stand-in for the hub, which publishes each file's SHA-256 in `X-Linked-Etag`). Bad checksums,
unreachable hosts and wrong file counts fail with exit 2 and a reason."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from demucs.htdemucs import HTDemucs

from deployments.tools.cli import main
from infra.audio import Audio
from infra.embedded_s3 import EmbeddedS3, free_port
from infra.model_store import pull_model
from infra.settings import Settings
from models.audiogen import AudioGen
from models.demucs import STEMS_4, Demucs
from tests.infra.test_cli_convert import write_release
from tests.models.test_audiogen import PROMPT, save_tiny_t5
from tests.models.test_demucs import _write_demucs_package


def _tiny_htdemucs(seed: int) -> HTDemucs:
    torch.manual_seed(seed)
    return HTDemucs(list(STEMS_4), channels=8, dconv_comp=4, t_layers=2, t_heads=2, segment=2).eval()


@pytest.fixture
def release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `SIG-SHA256PREFIX.th` written by demucs' own serializer, in a folder of its own."""
    (tmp_path / "www").mkdir()
    return _write_demucs_package(_tiny_htdemucs(0), tmp_path / "www", monkeypatch)


@pytest.fixture
def server(release: Path) -> Iterator[str]:
    with _serving(release.parent) as url:
        yield url


@contextmanager
def _serving(root: Path, handler: type[http.server.SimpleHTTPRequestHandler] | None = None) -> Iterator[str]:
    factory = functools.partial(handler or http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def store_env(s3: EmbeddedS3, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3.settings


def test_fetch_verifies_converts_and_pushes(
    server: str, release: Path, store_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    to = f"s3://{store_env.s3_bucket}/fetched-{tmp_path.name}/htdemucs"
    assert main(["models", "fetch", "htdemucs", "--url", f"{server}/{release.name}", "--to", to]) == 0
    assert capsys.readouterr().out.strip() == to
    folder = pull_model(to, store_env)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert Demucs.from_pretrained(str(folder), device="cpu").sources == STEMS_4


def test_a_wrong_checksum_is_refused(
    server: str, release: Path, store_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = release.with_name(release.name.split("-")[0] + "-00000000.th")
    release.rename(forged)
    assert main(["models", "fetch", "htdemucs", "--url", f"{server}/{forged.name}"]) == 2
    assert "the release name says 00000000" in capsys.readouterr().err


def test_an_unreachable_host_is_named(store_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/955717e8-8726e21a.th"
    assert main(["models", "fetch", "htdemucs", "--url", url]) == 2
    assert f"cannot download {url}" in capsys.readouterr().err


def test_a_bag_needs_one_url_per_member(store_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "fetch", "htdemucs_ft", "--url", "http://127.0.0.1:1/a-12345678.th"]) == 2
    assert "htdemucs_ft has 4 files (f7e0c4bc-ba3fe64a.th, " in capsys.readouterr().err


def test_fetch_bag_pushes_one_folder_the_separation_loader_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """htdemucs_ft: four checkpoints, each verified and converted, pushed as one bag; the bag separates
    each stem with its own member (demucs' one-hot bag weights), as demucs' BagOfModels does."""
    www = tmp_path / "www"
    members = []
    for seed in range(4):
        (www / f"m{seed}").mkdir(parents=True)
        members.append(_write_demucs_package(_tiny_htdemucs(seed), www / f"m{seed}", monkeypatch))
    to = f"s3://{store_env.s3_bucket}/fetched-{tmp_path.name}/htdemucs_ft"
    with _serving(www) as base:
        urls = [arg for m in members for arg in ("--url", f"{base}/{m.parent.name}/{m.name}")]
        assert main(["models", "fetch", "htdemucs_ft", *urls, "--to", to]) == 0
    assert capsys.readouterr().out.strip() == to

    folder = pull_model(to, store_env.model_copy(update={"model_cache_dir": tmp_path / "cache"}))
    bag = Demucs.from_pretrained(str(folder), device="cpu")
    assert (bag.sources, bag.segment_s, bag.info.weights) == (STEMS_4, 2.0, "pretrained")
    assert bag.info.revision == "+".join(m.stem for m in members)
    clip = Audio(np.random.default_rng(3).uniform(-0.5, 0.5, (2, 22050)).astype(np.float32), 44100)
    stems = bag.separate(clip)
    for index, member in enumerate(members):
        alone = Demucs.from_pretrained(str(folder / member.stem), device="cpu").separate(clip)
        name = STEMS_4[index]
        np.testing.assert_allclose(stems[name].samples, alone[name].samples, rtol=0, atol=1e-6)


class HubStandIn(http.server.SimpleHTTPRequestHandler):
    """`/resolve/main/NAME` answers as the hub does for an LFS file: a redirect to the file's CDN URL
    carrying its SHA-256 in `X-Linked-Etag` (`FORGED` replaces it, to test the check)."""

    forged: str | None = None

    def do_GET(self) -> None:
        if not self.path.startswith("/resolve/main/"):
            return super().do_GET()
        name = self.path.rsplit("/", 1)[-1]
        digest = hashlib.sha256((Path(self.directory) / name).read_bytes()).hexdigest()
        self.send_response(302)
        self.send_header("Location", f"/{name}")
        self.send_header("X-Linked-Etag", f'"{self.forged or digest}"')
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[str]:
    write_release(tmp_path / "hub")
    HubStandIn.forged = None
    with _serving(tmp_path / "hub", HubStandIn) as url:
        yield url


def _hub_urls(hub: str) -> list[str]:
    return [
        "--url",
        f"{hub}/resolve/main/state_dict.bin",
        "--url",
        f"{hub}/resolve/main/compression_state_dict.bin",
    ]


def test_fetch_audiogen_verifies_converts_pushes_and_generates(
    hub: str, tmp_path: Path, store_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    t5 = save_tiny_t5(tmp_path / "t5")  # stands in for t5-large, which the release does not contain
    to = f"s3://{store_env.s3_bucket}/fetched-{tmp_path.name}/audiogen-medium"
    args = ["models", "fetch", "audiogen-medium", *_hub_urls(hub), "--text-encoder", str(t5), "--to", to]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == to
    folder = pull_model(to, store_env.model_copy(update={"model_cache_dir": tmp_path / "cache"}))
    model = AudioGen.from_pretrained(str(folder), device="cpu")
    assert (model.sample_rate, model.info.weights) == (16000, "pretrained")
    (audio,) = model.generate([PROMPT], duration_s=0.2, seed=1)
    assert audio.samples.shape == (1, round(0.2 * 16000)) and np.isfinite(audio.samples).all()


def test_audiogen_with_a_wrong_published_checksum_is_refused(
    hub: str, store_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    HubStandIn.forged = "0" * 64
    assert main(["models", "fetch", "audiogen-medium", *_hub_urls(hub), "--text-encoder", "debug"]) == 2
    assert f"the hub publishes {'0' * 64}; not converted" in capsys.readouterr().err


def test_audiogen_without_a_published_checksum_is_refused(
    hub: str, store_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = [url.replace("/resolve/main/", "/") for url in _hub_urls(hub)]  # no redirect, no header
    assert main(["models", "fetch", "audiogen-medium", *plain, "--text-encoder", "debug"]) == 2
    assert "publishes no SHA-256" in capsys.readouterr().err


def test_an_unknown_name_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "fetch", "htdemucs_6s"]) == 2
    assert "htdemucs, htdemucs_ft, audiogen-medium" in capsys.readouterr().err
