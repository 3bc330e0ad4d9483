"""`soundstage models fetch`: a synthetic demucs release served over local HTTP is downloaded, its
SHA-256 prefix checked, converted and pushed to the store (SeaweedFS); bad checksums, unreachable hosts
and releases it cannot convert yet fail with exit 2 and a reason."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from demucs.htdemucs import HTDemucs

from deployments.tools.cli import main
from infra.embedded_s3 import EmbeddedS3, free_port
from infra.model_store import pull_model
from infra.settings import Settings
from models.demucs import STEMS_4, Demucs
from tests.models.test_demucs import _write_demucs_package


@pytest.fixture
def release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `SIG-SHA256PREFIX.th` written by demucs' own serializer, in a folder of its own."""
    torch.manual_seed(0)
    net = HTDemucs(list(STEMS_4), channels=8, dconv_comp=4, t_layers=2, t_heads=2, segment=2).eval()
    (tmp_path / "www").mkdir()
    return _write_demucs_package(net, tmp_path / "www", monkeypatch)


@pytest.fixture
def server(release: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(release.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


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


@pytest.mark.parametrize(
    ("name", "reason"), [("htdemucs_ft", "bag of 4"), ("audiogen-medium", "not automated")]
)
def test_releases_not_automated_yet_say_how(
    name: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "fetch", name]) == 2
    err = capsys.readouterr().err
    assert reason in err and "soundstage models convert" in err


def test_an_unknown_name_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "fetch", "htdemucs_6s"]) == 2
    assert "htdemucs, htdemucs_ft, audiogen-medium" in capsys.readouterr().err
