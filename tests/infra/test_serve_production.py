"""`soundstage serve --models production`: what cannot be loaded from here is named, with the command
that fixes it, before Ray starts. That a model folder saved from a debug model really serves is tested
in tests/infra/test_serve_stop.py, on the stack it then stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.embedded_s3 import EmbeddedS3, free_port
from infra.model_store import missing_model, push_model
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SOUNDSTAGE = [sys.executable, "-m", "deployments.tools.cli"]


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No hub, and an empty hub cache (the box's own cache may hold some of the models)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}


def test_a_hub_model_not_in_the_cache_names_the_download(settings: Settings, offline_hub: object) -> None:
    fix = missing_model("hf://facebook/musicgen-small@abc123", settings, hub_reachable=False)
    assert fix == "huggingface-cli download facebook/musicgen-small --revision abc123"
    assert missing_model("facebook/musicgen-small", settings, hub_reachable=True) is None


def test_a_store_model_is_there_once_pushed(settings: Settings, tmp_path: Path) -> None:
    uri = f"s3://{settings.s3_bucket}/models-{tmp_path.name}/htdemucs"
    assert missing_model(uri, settings, hub_reachable=False) == f"soundstage models fetch htdemucs --to {uri}"
    ft = uri + "_ft"
    assert (
        missing_model(ft, settings, hub_reachable=False) == f"soundstage models fetch htdemucs_ft --to {ft}"
    )
    own = uri + "-retrained"  # a demucs checkpoint of the user's own: converted, not fetched
    assert missing_model(own, settings, hub_reachable=False) == (
        f"soundstage models convert demucs RELEASED_CHECKPOINT OUT_DIR --push {own}"
    )
    (tmp_path / "config.json").write_text("{}")
    push_model(tmp_path, uri, settings)
    assert missing_model(uri, settings, hub_reachable=False) is None
    other = f"s3://{settings.s3_bucket}/models-{tmp_path.name}/mine"
    assert missing_model(other, settings, hub_reachable=False) == f"soundstage models push FOLDER {other}"


def test_folders_debug_and_packages(settings: Settings, tmp_path: Path) -> None:
    assert missing_model(str(tmp_path), settings, hub_reachable=False) is None
    assert missing_model("debug", settings, hub_reachable=False) is None
    assert missing_model("pkg://swift-f0", settings, hub_reachable=False) is None
    assert "no folder" in str(missing_model("./nowhere", settings, hub_reachable=False))


def test_production_start_without_the_hub_fails_in_seconds_listing_fixes(
    s3: EmbeddedS3, offline_hub: dict[str, str], tmp_path: Path
) -> None:
    env = {**os.environ, **s3.env, **offline_hub, "RAY_AUTH_MODE": "token"}
    args = [
        *SOUNDSTAGE,
        "serve",
        "--models",
        "production",
        "--port",
        str(free_port()),
        "--dashboard-port",
        "0",
    ]
    run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "soundstage is up" not in run.stdout
    err = run.stderr
    assert "Hugging Face hub is not reachable" in err
    assert "music (hf://facebook/musicgen-small): huggingface-cli download facebook/musicgen-small" in err
    assert "separation (s3://soundstage-models/htdemucs): soundstage models fetch htdemucs\n" in err
    assert "sfx (s3://soundstage-models/audiogen-medium): soundstage models fetch audiogen-medium\n" in err
    assert "pitch" not in err and "tts" not in err  # packaged weights are always there


def test_an_unknown_family_is_refused_with_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from deployments.tools.cli import main

    assert main(["serve", "--model", "musik=debug"]) == 1
    err = capsys.readouterr().err
    assert "musik=debug" in err and "music, " in err and "separation" in err
