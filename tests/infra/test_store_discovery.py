"""`soundstage models push/pull` find the local stack's embedded store by themselves: the running one
through the state file it leaves in its data dir (mode 0600), the last one by starting it on the same
folder for the command; SOUNDSTAGE_S3_ENDPOINT_URL still wins. Real SeaweedFS servers, no Ray."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.tools.cli import main
from infra.embedded_s3 import EmbeddedS3
from infra.model_store import MANIFEST
from infra.settings import Settings
from infra.storage import make_client
from infra.store_host import store_dir, store_running
from infra.store_state import STATE_FILE, read_state


@pytest.fixture
def no_store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in [k for k in os.environ if k.startswith("SOUNDSTAGE_S3_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SOUNDSTAGE_MODEL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def own_store(tmp_path: Path, no_store_env: None) -> Iterator[EmbeddedS3]:
    """A store of this test's own, on the data dir `tmp_path / "data"`, as `soundstage serve` runs it."""
    server = EmbeddedS3(Settings(), data_dir=store_dir(tmp_path / "data")).start()
    yield server
    server.stop()


def _has(settings: Settings, uri: str) -> bool:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    listed = make_client(settings).list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{MANIFEST}")
    return int(listed.get("KeyCount", 0)) == 1


def test_push_finds_the_running_store_and_pull_restarts_the_last_one(
    own_store: EmbeddedS3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_path = own_store.data_dir / STATE_FILE
    assert stat.S_IMODE(state_path.stat().st_mode) == 0o600
    state = read_state(own_store.data_dir)
    assert state is not None and state.endpoint_url == own_store.endpoint_url
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    uri = "s3://soundstage-models/mine"  # a bucket the fresh store does not have yet
    data = str(tmp_path / "data")

    assert main(["models", "push", str(folder), uri, "--data-dir", data]) == 0
    assert _has(own_store.settings, uri)
    own_store.stop()  # the stack has stopped: pull starts its store again, and stops it after
    assert not store_running(own_store.data_dir)
    capsys.readouterr()
    assert main(["models", "pull", uri, "--data-dir", data]) == 0
    pulled = Path(capsys.readouterr().out.strip())
    assert (pulled / "config.json").read_text() == "{}"
    assert not store_running(own_store.data_dir)


def test_the_environment_wins_over_the_state_file(
    own_store: EmbeddedS3, s3: EmbeddedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 8)
    uri = f"s3://{s3.settings.s3_bucket}/env-wins-{tmp_path.name}"
    assert main(["models", "push", str(folder), uri, "--data-dir", str(tmp_path / "data")]) == 0
    assert _has(s3.settings, uri)
    assert not _has(own_store.settings, uri)


def test_no_store_anywhere_says_what_to_do(
    no_store_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    assert main(["models", "push", str(folder), "s3://b/m", "--data-dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "no embedded store has run on" in err and "soundstage serve" in err
