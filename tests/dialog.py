"""A synthetic two-speaker dialog with known turns, made with the project's own offline TTS.

Speaker A is the bundled neural voice (hibari "heart"); speaker B is the same voice pitched down
6 semitones *without* formant preservation (infra/dsp/vocoder.shift_pitch), which moves pitch and formants
together: a clearly different, lower voice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.audio import Audio
from infra.dsp.vocoder import shift_pitch
from models.tts import StockTTS

LINES = (
    ("A", "Good morning, did you bring the maps for the walk today?"),
    ("B", "I did, and I also packed some water and a few sandwiches."),
    ("A", "Great, the weather report says it will stay dry until evening."),
    ("B", "Then we should start at the river and climb the hill after lunch."),
    ("A", "That sounds perfect, I would love to see the view from the top."),
    ("B", "Me too, let us leave in ten minutes so we catch the early bus."),
    ("A", "Should we take the camera, or will our phones be good enough?"),
    ("B", "Take the camera, the light on the water is lovely in the morning."),
    ("A", "All right, I will pack it now and meet you at the front door."),
)


@dataclass(frozen=True)
class Dialog:
    audio: Audio
    turns: tuple[tuple[float, float, str], ...]  # (start_s, end_s, speaker) of the speech itself

    @property
    def text(self) -> str:
        return " ".join(line for _, line in LINES)


def _speech_extent(samples: np.ndarray, rate: int, floor_db: float = -40.0) -> tuple[int, int]:
    """First and last sample louder than `floor_db` below the clip's peak (the TTS pads with silence)."""
    level = np.abs(samples[0])
    loud = np.flatnonzero(level > level.max() * 10 ** (floor_db / 20))
    return int(loud[0]), int(loud[-1]) + 1


def build_dialog(tts: StockTTS, gap_s: float = 0.5) -> Dialog:
    rate = tts.sample_rate
    pieces: list[np.ndarray] = []
    turns: list[tuple[float, float, str]] = []
    offset = 0
    for i, (speaker, line) in enumerate(LINES):
        (clip,) = tts.synthesize([line], seed=i)
        if speaker == "B":
            clip = shift_pitch(clip, -6.0, preserve_formants=False)
        start, end = _speech_extent(clip.samples, rate)
        speech = clip.samples[:, start:end]
        turns.append((offset / rate, (offset + speech.shape[1]) / rate, speaker))
        pieces += [speech, np.zeros((1, int(gap_s * rate)), dtype=np.float32)]
        offset += speech.shape[1] + int(gap_s * rate)
    return Dialog(Audio(np.concatenate(pieces, axis=1), rate), tuple(turns))
