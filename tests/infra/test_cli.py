"""The `soundstage` command: model conversion offline, and submit/wait against the running stack."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from demucs.htdemucs import HTDemucs

from deployments.tools.cli import main
from models.demucs import STEMS_4, Demucs
from tests.models.test_demucs import _write_demucs_package


def test_models_convert_demucs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    net = HTDemucs(list(STEMS_4), channels=8, dconv_comp=4, t_layers=2, t_heads=2, segment=2).eval()
    checkpoint = _write_demucs_package(net, tmp_path, monkeypatch)
    assert main(["models", "convert", "demucs", str(checkpoint), str(tmp_path / "out")]) == 0
    assert "converted to" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    assert Demucs.from_pretrained(str(tmp_path / "out"), device="cpu").sources == STEMS_4


@pytest.mark.ray
def test_submit_wait_downloads_the_result(
    base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["submit", "music", "a short test", "--duration", "0.5", "--seed", "3", "--format", "mp3"]
    assert main([*args, "--wait", "--url", base_url, "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "weights debug-random" in out
    (audio,) = tmp_path.glob("*-audio.mp3")
    assert audio.stat().st_size > 0


def test_api_errors_are_reported_not_raised(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "music", " ", "--url", base_url]) == 2  # the API refused it: a usage error
    assert "422" in capsys.readouterr().err
