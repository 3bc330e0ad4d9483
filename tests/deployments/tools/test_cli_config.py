"""The CLI's API key (environment or a config file whose mode is checked, never argv) and its exit codes
for auth, usage and an unreachable API, against the real HTTP app served by uvicorn over the real
embedded store with two tenants' keys (no Ray: no job is run, so no runner is needed)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.http.api import build_http_app
from deployments.http.services import Services
from deployments.tools.cli import main
from deployments.tools.cli_common import ExitCode
from infra.embedded_s3 import free_port
from infra.jobs import JobStore
from infra.settings import Settings
from infra.storage import Storage
from tests.deployments.http.conftest import KEYS, RecordingRunner, keyed
from tests.deployments.http.live_server import live_server
from tests.pipelines.test_stages import models_with


@pytest.fixture(scope="module")
def keyed_api(settings: Settings) -> Iterator[str]:
    # A bucket of its own: other tests' jobs of the same tenants live in the session bucket.
    own = settings.model_copy(update={"s3_bucket": f"cli-config-{uuid.uuid4().hex[:12]}"})
    storage = Storage(own)
    storage.ensure_bucket()
    services = Services(keyed(own), storage, JobStore(storage), models_with(), RecordingRunner())
    with live_server(build_http_app(services)) as base:
        yield base


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No key in the environment; the config file at a path of the test's own (not written yet)."""
    for name in ("SOUNDSTAGE_API_KEY", "SOUNDSTAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "soundstage" / "config.toml"
    monkeypatch.setenv("SOUNDSTAGE_CONFIG_FILE", str(path))
    return path


def write_config(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def test_key_from_the_environment(keyed_api: str, no_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["jobs", "list", "--url", keyed_api]) == ExitCode.AUTH
    monkeypatch.setenv("SOUNDSTAGE_API_KEY", KEYS["alice"])
    assert main(["jobs", "list", "--url", keyed_api]) == ExitCode.OK
    monkeypatch.setenv("SOUNDSTAGE_API_KEY", "not-a-key")
    assert main(["jobs", "list", "--url", keyed_api]) == ExitCode.AUTH


def test_key_and_url_from_a_private_config_file(
    keyed_api: str, no_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(no_key, f'url = "{keyed_api}"\napi_key = "{KEYS["bob"]}"\n', 0o600)
    assert main(["jobs", "list", "--json"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["jobs"] == []  # bob has no jobs: the key was bob's


def test_a_config_file_others_can_read_is_refused(
    keyed_api: str, no_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(no_key, f'api_key = "{KEYS["bob"]}"\n', 0o644)
    assert main(["jobs", "list", "--url", keyed_api, "--json"]) == ExitCode.AUTH
    captured = capsys.readouterr()
    assert f"chmod 600 {no_key}" in captured.err
    assert json.loads(captured.out)["exit_code"] == ExitCode.AUTH


def test_a_malformed_config_file_is_a_usage_error(no_key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(no_key, "api_key = \n", 0o600)
    assert main(["jobs", "list"]) == ExitCode.USAGE
    write_config(no_key, 'token = "x"\n', 0o600)
    assert main(["jobs", "list"]) == ExitCode.USAGE
    assert "unknown keys ['token']" in capsys.readouterr().err


def test_the_key_is_not_an_argument(no_key: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["jobs", "list", "--api-key", KEYS["alice"]])
    assert exited.value.code == ExitCode.USAGE


def test_not_found_and_unreachable(keyed_api: str, no_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDSTAGE_API_KEY", KEYS["alice"])
    assert main(["jobs", "show", "0" * 32, "--url", keyed_api]) == ExitCode.NOT_FOUND
    assert main(["voices", "delete", "f" * 32, "--url", keyed_api]) == ExitCode.NOT_FOUND
    assert main(["jobs", "list", "--url", f"http://127.0.0.1:{free_port()}"]) == ExitCode.UNAVAILABLE


def test_bad_arguments_exit_2_before_any_request(no_key: Path, tmp_path: Path) -> None:
    for argv in (
        ["submit", "music", "x", "--duration-s", "long"],
        ["submit", "separate", "--mode", "6stems"],
        ["submit", "pitch-shift", "in.wav"],  # --semitones is required
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == ExitCode.USAGE, argv
    missing = str(tmp_path / "missing.wav")
    assert main(["submit", "separate", missing, "--url", f"http://127.0.0.1:{free_port()}"]) == ExitCode.USAGE
