"""Fixtures shared by the deployment tests (the Ray stack and S3 fixtures are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.dialog import Dialog, build_dialog


@pytest.fixture(scope="session")
def dialog() -> Dialog:
    """The synthetic two-speaker dialog (real offline TTS), built once per session."""
    from models.tts import StockTTS

    return build_dialog(StockTTS.from_pretrained())
