"""Shared fixtures: the embedded S3 store (SeaweedFS) over real HTTP, and one real local Ray cluster with
the app.

The Ray cluster is started with three *logical* GPUs (`num_gpus=3`), so the fractional GPU shares
of serve_config.yaml (0.25 for MusicGen, MusicGenMelody, AudioGen, ASR, Separation, VoiceClone; 0.5 for
StableAudio; 0.125 for the Diarizer: 2.125 GPUs at one replica each) are really placed by Ray, on a
machine that has no GPU.
"""

from __future__ import annotations

import os

# Ray reads RAY_AUTH_MODE at import time: set it before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")

from collections.abc import Iterator

import pytest

from infra.embedded_s3 import EmbeddedS3, free_port
from infra.settings import Settings, load_settings
from infra.storage import Storage

# Short leases so that a killed runner's job is re-claimed within seconds.
TEST_ENV = {
    "SOUNDSTAGE_JOB_LEASE_S": "3",
    "SOUNDSTAGE_JOB_RECLAIM_INTERVAL_S": "1",
    "SOUNDSTAGE_MAX_GENERATION_S": "60",
    "SOUNDSTAGE_MAX_LONG_MUSIC_S": "60",  # long-form music on the debug stack: 2 windows at most
    "SOUNDSTAGE_MAX_INPUT_DURATION_S": "400",
    "SOUNDSTAGE_MAX_SYNC_AUDIO_S": "120",
    # Inputs by `url` come from the embedded S3 server on 127.0.0.1 (tests/deployments/test_url_inputs.py
    # checks the guard that is on by default).
    "SOUNDSTAGE_ALLOW_PRIVATE_URLS": "1",
}


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    """SeaweedFS (`weed mini`) in a child process on 127.0.0.1, data in a temp dir, bucket created."""
    server = EmbeddedS3(Settings(), data_dir=tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(s3: EmbeddedS3) -> Settings:
    return s3.settings


@pytest.fixture(scope="session")
def storage(settings: Settings) -> Storage:
    return Storage(settings)


@pytest.fixture(scope="session")
def stack(s3: EmbeddedS3) -> Iterator[object]:
    """Ray (2 CPUs, 3 logical GPUs) + the soundstage app from serve_config.yaml's local profile."""
    from deployments.tools.local_stack import LocalStack, LocalStackOptions

    saved = dict(os.environ)
    os.environ.update({**s3.env, **TEST_ENV})
    options = LocalStackOptions(
        port=free_port(), logical_gpus=3, num_cpus=2, dashboard_port=free_port(), metrics_port=free_port()
    )
    local = LocalStack(options)
    try:
        local.start()
        yield local
    finally:
        local.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def base_url(stack: object) -> str:
    return str(stack.base_url)  # type: ignore[attr-defined]


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings from an environment with no SOUNDSTAGE_* variables."""
    for key in list(os.environ):
        if key.startswith("SOUNDSTAGE_"):
            monkeypatch.delenv(key)
    return load_settings()
