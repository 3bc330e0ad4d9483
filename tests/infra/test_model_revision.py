"""A hub URI without a commit is resolved to one (infra/model_store.py `hub_commit`), so the model
records exactly which weights it loaded. The hub cache is built here as the hub client lays it out."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.model_store import resolve_model_uri
from infra.settings import Settings

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A hub cache holding facebook/musicgen-small at COMMIT (main) and OTHER (branch `v2`); hub offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "models--facebook--musicgen-small"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "refs" / "v2").write_text(OTHER)
    for commit in (COMMIT, OTHER):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    return Settings(model_cache_dir=tmp_path)


@pytest.mark.parametrize("uri", ["hf://facebook/musicgen-small", "facebook/musicgen-small"])
def test_the_default_branch_becomes_its_commit(cached: Settings, uri: str) -> None:
    resolved = resolve_model_uri(uri, cached)
    assert (resolved.source, resolved.revision) == ("facebook/musicgen-small", COMMIT)


def test_a_branch_becomes_its_commit_and_a_commit_stays(cached: Settings) -> None:
    assert resolve_model_uri("hf://facebook/musicgen-small@v2", cached).revision == OTHER
    assert resolve_model_uri(f"hf://facebook/musicgen-small@{OTHER}", cached).revision == OTHER


def test_unknown_offline_is_left_to_the_loader(cached: Settings) -> None:
    assert resolve_model_uri("hf://facebook/musicgen-medium", cached).revision is None
    assert resolve_model_uri("hf://facebook/musicgen-small@v9", cached).revision is None


def test_a_model_loaded_from_the_hub_cache_records_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The debug MusicGen saved as a hub snapshot, loaded by `hf://` URI through the deployments' loader."""
    from deployments.families.model_host import ModelHost
    from models.musicgen import MusicGen

    repo = tmp_path / "models--soundstage--tiny-musicgen"
    MusicGen.from_pretrained("debug", device="cpu").save_pretrained(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SOUNDSTAGE_MODEL_CACHE_DIR", str(tmp_path))
    host = ModelHost()
    host.model = host.load_model(MusicGen.from_pretrained, "hf://soundstage/tiny-musicgen", device="cpu")
    info = host.model.info  # (host.info() adds the replica's GPU share, which needs Ray)
    assert (info.model_id, info.revision) == ("soundstage/tiny-musicgen", COMMIT)
