"""Non-English speech made offline with espeak-ng (formant synthesis: robotic, but real speech in the
language asked for). The system package is required, not optional: without it the tests that use it fail
with the command that installs it, so a CI image that lacks it cannot pass by skipping them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

INSTALL = "apt-get install -y espeak-ng"


@dataclass(frozen=True)
class Utterance:
    """A sentence in `language` (ISO 639-1), spoken with the espeak-ng voice `voice`."""

    language: str
    voice: str
    text: str


class EspeakMissingError(RuntimeError):
    """espeak-ng is not on PATH."""


def espeak_wav(utterance: Utterance, words_per_minute: int = 150) -> bytes:
    """A WAV file (22.05 kHz mono, 16-bit) of `utterance` spoken by espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakMissingError(
            f"espeak-ng is not installed; the non-English speech tests need it. Debian/Ubuntu: `{INSTALL}`"
        )
    # A file, not --stdout: on a pipe espeak-ng cannot seek back, so its WAV header keeps a placeholder size.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        args = [exe, "-v", utterance.voice, "-s", str(words_per_minute), "-w", str(path), utterance.text]
        subprocess.run(args, capture_output=True, check=True, timeout=60)
        wav = path.read_bytes()
    if wav[:4] != b"RIFF":
        raise EspeakMissingError(f"espeak-ng -v {utterance.voice} wrote no WAV (espeak-ng-data missing?)")
    return wav
