"""`soundstage models convert svc`: an RVC-layout `.pth` (exported from the debug voice) -> a voice folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.tools.cli import main
from models.convert.svc import export_rvc_checkpoint
from models.svc import VoiceModel


def test_convert_svc_writes_a_loadable_voice_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pth = export_rvc_checkpoint(VoiceModel.load("debug"), tmp_path / "singer.pth")
    assert main(["models", "convert", "svc", str(pth), str(tmp_path / "out")]) == 0
    assert "converted to" in capsys.readouterr().out
    loaded = VoiceModel.load(str(tmp_path / "out"))
    assert loaded.sample_rate == 40000 and loaded.info.weights == "debug-random"


def test_convert_svc_exits_2_on_a_file_that_is_no_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["models", "convert", "svc", str(tmp_path / "junk.pth"), str(tmp_path / "out")]) == 2
    assert "not an RVC checkpoint" in capsys.readouterr().err
