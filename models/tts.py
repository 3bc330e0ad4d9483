"""Stock-voice text to speech with hibari-tts: a voice catalogue and a synthesizer returning 24 kHz mono.

hibari (Apache-2.0, weights included) is a 6 M-parameter ONNX model distilled from Kokoro-82M, with its own
grapheme-to-phoneme front end. Every voice is one complete ONNX file of the same architecture; the default
voice, `heart` (American English, female), ships inside the wheel. The ONNX graph has its batch dimension
fixed to 1, so a "batch" here is one call that runs the sentences one after another (about 100x realtime
per CPU core); deployments get parallelism from replicas and concurrent requests, not from this loop.

Voice folder layout (`VoiceCatalogue.from_folder`), the one hibari itself uses:
- `voices.json` in hibari's registry schema, `{name: {"file": "x.onnx", "language": "en-US",
  "sha256": "...", ...}}` (`file` relative to the folder; `sha256` optional but verified when given;
  other keys ignored), next to the ONNX files it names; or
- no `voices.json`: the folder is a hibari download cache (`HIBARI_HOME`), holding voice files named as in
  hibari's own registry (`bf_emma.int8.onnx`, ...); each is verified against the registry's sha256.
The spelling-to-sound rules follow the voice's language: British for `en-GB`, American otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infra.audio import Audio
from models.types import ModelInfo, ModelLoadingError

PACKAGE_URI = "pkg://hibari-tts"
MIN_SPEED, MAX_SPEED = 0.25, 4.0
# Pause between sentences at speed 1.0, in seconds (divided by the speed). hibari renders every sentence
# with ~0.3 s of lead-in and ~0.5 s of tail; joins are trimmed or padded to exactly this gap.
SENTENCE_PAUSE_S = 0.4
_SILENCE_PEAK = 0.01  # -40 dBFS: 10 ms frames whose peak stays below this are silence
_CLAUSE_BREAK = re.compile("(?<=[,;:\u2014\u2013])\\s+")


class UnknownVoiceError(KeyError):
    """A voice name that is not in the catalogue; the message names the known voices."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Voice:
    """One stock voice: `language` is a BCP 47 tag (`en-US`), `source` the path of its ONNX weights."""

    name: str
    language: str
    sample_rate: int
    source: str


class VoiceCatalogue:
    """The stock voices available to a `StockTTS`, by name (insertion order is listing order)."""

    def __init__(self, voices: Mapping[str, Voice]) -> None:
        self._voices = dict(voices)

    @classmethod
    def bundled(cls) -> VoiceCatalogue:
        """The voices inside the hibari-tts wheel (today only `heart`); no download, no network."""
        from hibari import voices as registry

        return cls(
            {
                name: _voice_from_entry(name, entry, Path(registry.ASSETS))
                for name, entry in registry.VOICES.items()
                if entry.get("bundled")
            }
        )

    @classmethod
    def from_folder(cls, path: Path) -> VoiceCatalogue:
        """The voices in `path` (layout in the module docstring); each file's sha256 is verified.

        Raises `ModelLoadingError` when the folder holds no voice or a file is missing or corrupt.
        """
        path = Path(path)
        manifest = path / "voices.json"
        if manifest.is_file():
            entries: dict[str, dict[str, Any]] = json.loads(manifest.read_text(encoding="utf-8"))
        else:
            from hibari import voices as registry

            entries = {n: e for n, e in registry.VOICES.items() if (path / e["file"]).is_file()}
        if not entries:
            raise ModelLoadingError(
                f"no hibari voices in {path}: expected a voices.json next to its ONNX files, "
                "or voice files named as in hibari's registry (a HIBARI_HOME cache)"
            )
        for name, entry in entries.items():
            _verify_voice_file(name, path / entry["file"], entry.get("sha256"))
        return cls({name: _voice_from_entry(name, entry, path) for name, entry in entries.items()})

    def merged(self, other: VoiceCatalogue) -> VoiceCatalogue:
        """Both catalogues' voices; a name defined in both raises `ModelLoadingError`."""
        clashes = sorted(set(self._voices) & set(other._voices))
        if clashes:
            raise ModelLoadingError(f"voice names defined twice: {clashes}")
        return VoiceCatalogue({**self._voices, **other._voices})

    def names(self) -> list[str]:
        return list(self._voices)

    def get(self, name: str) -> Voice:
        """The voice called `name`; `UnknownVoiceError` (a `KeyError`) names the known ones."""
        try:
            return self._voices[name]
        except KeyError:
            raise UnknownVoiceError(f"unknown voice {name!r}; available voices: {self.names()}") from None

    def __len__(self) -> int:
        return len(self._voices)


def _voice_from_entry(name: str, entry: Mapping[str, Any], folder: Path) -> Voice:
    from hibari import SAMPLE_RATE

    return Voice(name, str(entry["language"]), int(SAMPLE_RATE), str(folder / entry["file"]))


def _holds_voices(path: Path) -> bool:
    """Whether `path` looks like a voice folder: a voices.json, or a file named in hibari's registry."""
    from hibari import voices as registry

    if (path / "voices.json").is_file():
        return True
    return any((path / entry["file"]).is_file() for entry in registry.VOICES.values())


def _verify_voice_file(name: str, path: Path, sha256: str | None) -> None:
    if not path.is_file():
        raise ModelLoadingError(f"voice {name!r}: weights file {path} does not exist")
    if sha256 is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ModelLoadingError(
            f"voice {name!r}: {path} has sha256 {digest[:12]}…, the registry expects {sha256[:12]}…"
        )


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Cut `text` into sentences (hibari's rules: end punctuation and line breaks, not after titles or
    initials), then cut any sentence longer than `max_chars` at clause punctuation, then between words.

    Whitespace inside a piece is collapsed to single spaces. A piece exceeds `max_chars` only when one
    word does. Empty or blank text gives `[]`.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    from hibari import Hibari

    pieces: list[str] = []
    for sentence in Hibari.split_sentences(text):
        sentence = " ".join(sentence.split())
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        for clause in _pack(_CLAUSE_BREAK.split(sentence), max_chars):
            pieces.extend([clause] if len(clause) <= max_chars else _pack(clause.split(" "), max_chars))
    return pieces


def _pack(parts: list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive `parts` with spaces into strings of at most `max_chars` (when possible)."""
    packed: list[str] = []
    for part in parts:
        if packed and len(packed[-1]) + 1 + len(part) <= max_chars:
            packed[-1] = f"{packed[-1]} {part}"
        else:
            packed.append(part)
    return packed


class StockTTS:
    """Text to 24 kHz mono speech in a stock voice. Runs on CPU (onnxruntime) whatever the host has."""

    def __init__(self, voices: VoiceCatalogue, info: ModelInfo, default_voice: str) -> None:
        self.voices = voices
        self.info = info
        self.default_voice = voices.get(default_voice).name
        self._engines: dict[str, Any] = {}
        self._g2p: dict[bool, Any] = {}
        self._lock = threading.Lock()
        self._engine(self.default_voice)  # load now, so the first request does not pay for it

    @classmethod
    def from_pretrained(
        cls, uri: str = PACKAGE_URI, *, device: str = "auto", cache_dir: Path | None = None
    ) -> StockTTS:
        """Load the stock TTS.

        uri: `pkg://hibari-tts` (the voices in the wheel, plus those already downloaded into `cache_dir`
        in hibari's cache layout, if given), or a local voice folder (bundled voices plus the folder's).
        device: `auto` or `cpu`; hibari runs on onnxruntime's CPU provider only, so `cuda` is refused.
        Nothing is downloaded.
        """
        if device not in ("auto", "cpu"):
            raise ValueError(f"hibari-tts runs on CPU only; device must be 'auto' or 'cpu', got {device!r}")
        import hibari

        voices = VoiceCatalogue.bundled()
        if uri == PACKAGE_URI:
            if cache_dir is not None and _holds_voices(Path(cache_dir)):
                voices = voices.merged(VoiceCatalogue.from_folder(Path(cache_dir)))
        elif "://" not in uri and Path(uri).is_dir():
            voices = voices.merged(VoiceCatalogue.from_folder(Path(uri)))
        else:
            raise ModelLoadingError(
                f"cannot load stock TTS from {uri!r}: it is neither {PACKAGE_URI!r} "
                "nor an existing local voice folder"
            )
        from hibari.voices import DEFAULT

        default = DEFAULT if DEFAULT in voices.names() else voices.names()[0]
        return cls(voices, ModelInfo(uri, hibari.__version__, "pretrained"), default)

    @property
    def sample_rate(self) -> int:
        """24000 Hz, the rate of every hibari voice."""
        return self.voices.get(self.default_voice).sample_rate

    @property
    def channels(self) -> int:
        return 1

    def synthesize(
        self, texts: Sequence[str], *, voice: str | None = None, speed: float = 1.0, seed: int | None = 0
    ) -> list[Audio]:
        """One `Audio` `[1, T]` at `sample_rate` per text.

        Each text is split by `split_sentences`; the sentences are rendered one by one and joined with a
        `SENTENCE_PAUSE_S / speed` pause.
        voice: a name from `voices` (default `heart`).
        speed: 0.25 to 4.0, passed to hibari's own duration control (the model divides every phoneme
        duration by it). hibari documents 0.5 to 2.0; beyond that the effect flattens: measured on a
        62-word paragraph, 2.0 gives 1.8x shorter audio, 3.0 2.1x and 4.0 only 2.2x (the model gives
        every phoneme at least two 12.5 ms frames), while 0.25 gives the full 4x longer.
        seed: the noise component's seed; a given text, voice, speed and seed give bit-identical audio
        whatever else is in the batch. `None` draws fresh noise.
        Raises `ValueError` for a blank text, one without letters or digits, or a speed out of range.
        """
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be within [{MIN_SPEED}, {MAX_SPEED}], got {speed}")
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"text {i} is empty or whitespace")
            if not any(ch.isalnum() for ch in text):
                raise ValueError(f"text {i} has nothing to pronounce (no letters or digits): {text[:80]!r}")
        engine = self._engine(self.voices.get(self.default_voice if voice is None else voice).name)
        pause = round(SENTENCE_PAUSE_S / speed * self.sample_rate)
        out = []
        for text in texts:
            waves = [
                self._render(engine, piece, speed, seed, j) for j, piece in enumerate(split_sentences(text))
            ]
            out.append(Audio(join_with_pauses(waves, pause)[np.newaxis, :], self.sample_rate))
        return out

    def _render(
        self, engine: Any, piece: str, speed: float, seed: int | None, index: int
    ) -> npt.NDArray[np.float32]:
        # One generator per piece, keyed by its position, so the noise does not depend on batch order.
        rng = np.random.default_rng(None if seed is None else (seed, index))
        chunks = [engine.from_ids(engine.ids(ps), speed, rng) for ps in engine.phonemize(piece)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)

    def _engine(self, name: str) -> Any:
        with self._lock:
            if name not in self._engines:
                self._engines[name] = self._load_engine(self.voices.get(name))
            return self._engines[name]

    def _load_engine(self, voice: Voice) -> Any:
        from hibari import Hibari
        from hibari.g2p import G2P

        british = voice.language.lower() == "en-gb"
        if british not in self._g2p:
            self._g2p[british] = G2P(british=british)
        try:
            # `voice=` only picks hibari's G2P variant, which is passed in, so any name of the registry works.
            return Hibari(model=voice.source, g2p=self._g2p[british])
        except Exception as e:  # onnxruntime raises its own untyped errors for unreadable graphs
            raise ModelLoadingError(f"voice {voice.name!r}: cannot load {voice.source}: {e}") from e


def join_with_pauses(waves: Sequence[npt.NDArray[np.float32]], pause: int) -> npt.NDArray[np.float32]:
    """Concatenate mono waves `[T]`, making every gap between speech exactly `pause` samples.

    The silence at each join is trimmed to half the pause per side (padded with zeros where it is
    shorter); the first wave's lead-in and the last one's tail are kept as they are.
    """
    parts: list[npt.NDArray[np.float32]] = []
    half = pause // 2
    waves = [w for w in waves if w.size]
    for i, wave in enumerate(waves):
        start, end = _speech_bounds(wave)
        lead = start if i == 0 else min(start, pause - half)
        tail = wave.size - end if i == len(waves) - 1 else min(wave.size - end, half)
        if i > 0:
            parts.append(np.zeros(pause - half - lead, np.float32))
        parts.append(wave[start - lead : end + tail])
        if i < len(waves) - 1:
            parts.append(np.zeros(half - tail, np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _speech_bounds(wave: npt.NDArray[np.float32], frame: int = 240) -> tuple[int, int]:  # 10 ms at 24 kHz
    """First and last sample (end exclusive) of the 10 ms frames louder than -40 dBFS; all if none is."""
    n = wave.size // frame
    peaks = np.abs(wave[: n * frame]).reshape(n, frame).max(axis=1) if n else np.zeros(0)
    loud = np.flatnonzero(peaks >= _SILENCE_PEAK)
    if loud.size == 0:
        return 0, wave.size
    return int(loud[0]) * frame, min(wave.size, (int(loud[-1]) + 1) * frame)
