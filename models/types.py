"""The light value types of the model families: what crosses a process boundary to or from a model.

Nothing here imports a heavy library (torch, transformers, demucs, onnxruntime), so the CPU-only
processes (ingress, job runner) and the job kinds can use these records without loading a model stack.
`Sampling` states the generation defaults once, for the model wrappers, deployments and job requests;
`TranscribeOptions` is the same for transcription.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from infra.audio import Audio, AudioError, validate

# Generation defaults, stated once (model wrappers, deployments, clients and job requests use these).
TOP_K = 250
TEMPERATURE = 1.0
DELAYED_CODEBOOK_GUIDANCE = 3.0  # MusicGen, MusicGen-Melody, AudioGen
STABLE_AUDIO_GUIDANCE = 7.0
STABLE_AUDIO_STEPS = 100


class Sampling(BaseModel):
    """How a generator samples: MusicGen-family settings (`guidance_scale`, `top_k`, `temperature`) and
    Stable Audio's (`guidance_scale`, `steps`, `negative_prompt`). `guidance_scale` None means the model's
    own default (3 for the MusicGen family, 7 for Stable Audio)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    guidance_scale: float | None = Field(
        default=None, ge=1.0, le=20.0, description="Classifier-free guidance (default 3, Stable Audio 7)."
    )
    top_k: int = Field(default=TOP_K, ge=1, le=4096, description="MusicGen/AudioGen sampling.")
    temperature: float = Field(default=TEMPERATURE, gt=0.0, le=5.0, description="MusicGen/AudioGen sampling.")
    steps: int = Field(default=STABLE_AUDIO_STEPS, ge=1, le=500, description="Stable Audio denoising steps.")
    negative_prompt: str | None = Field(default=None, max_length=2000, description="Stable Audio only.")

    def delayed_codebook_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a MusicGen-family `generate`."""
        guidance = DELAYED_CODEBOOK_GUIDANCE if self.guidance_scale is None else self.guidance_scale
        return {"guidance_scale": guidance, "top_k": self.top_k, "temperature": self.temperature}

    def stable_audio_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of Stable Audio's `generate`."""
        guidance = STABLE_AUDIO_GUIDANCE if self.guidance_scale is None else self.guidance_scale
        return {"guidance_scale": guidance, "steps": self.steps, "negative_prompt": self.negative_prompt}


WeightsKind = Literal["pretrained", "debug-random"]


TranscribeTask = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class TranscribeOptions:
    """How a recording is transcribed, one record from the ASR client through its deployment (where calls
    with equal options share a batch) to Whisper. `language`: ISO 639-1 code, None to detect it;
    `word_timestamps`: per-word times (seconds); `temperature`: 0 decodes with fallback to higher
    temperatures, above 0 samples at it; `prompt` conditions the decoder (Whisper's initial prompt);
    `task`: `translate` writes English text from any language."""

    language: str | None = None
    word_timestamps: bool = False
    temperature: float = 0.0
    prompt: str | None = None
    task: TranscribeTask = "transcribe"

    def whisper_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `Whisper.transcribe`, `stream` and `transcribe_batch`."""
        return {
            "language": self.language,
            "word_timestamps": self.word_timestamps,
            "temperature": self.temperature,
            "prompt": self.prompt,
            "task": self.task,
        }


class ModelLoadingError(RuntimeError):
    """Weights could not be loaded; the message names every location that was tried."""


# Errors of a model call, as data: a deployment returns a `ModelFault` instead of raising, so nothing
# Ray wraps (replica names, pids, addresses, tracebacks) crosses the handle; the typed client raises
# `fault.error()` in the caller's process.
INTERNAL_FAULT_CODE = "model_error"
INTERNAL_FAULT_MESSAGE = "the model failed on this request"


@dataclass(frozen=True)
class ModelFault:
    """Why a model call failed. `internal` False: the input was bad (the message is the model's own
    words, written for the client; `field` names the argument at fault, if known). `internal` True: the
    model itself failed; the message is generic and the details stay in the replica's log."""

    code: str
    message: str
    field: str | None = None
    internal: bool = False

    def error(self, deployment: str) -> ModelCallError:
        """The typed exception this fault is in the caller's process."""
        kind = ModelInternalError if self.internal else ModelInputError
        return kind(deployment, self.code, self.message, self.field)


class ModelCallError(Exception):
    """A model call that failed with a `ModelFault`. `code`: a stable reason; `message`: safe to show."""

    def __init__(self, deployment: str, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.deployment = deployment
        self.code = code
        self.message = message
        self.field = field


class ModelInputError(ModelCallError, ValueError):
    """The model refused its input (text it cannot speak, a language it does not know, a reference too
    short): the caller's fault, a 4xx at the edge, a failed stage (not retried) in a job."""


class ModelInternalError(ModelCallError):
    """The model failed unexpectedly: a 500 at the edge with no detail, a failed stage in a job."""


@dataclass(frozen=True)
class ModelInfo:
    """Which weights produced a result. `weights` is `debug-random` for the tiny test models."""

    model_id: str
    revision: str | None
    weights: WeightsKind

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass(frozen=True)
class GeneratedAudio:
    """One generated clip with the seed that reproduces it and the model that made it."""

    audio: Audio
    seed: int
    model: ModelInfo


_CSV_HEADER = ("time_s", "f0_hz", "confidence", "voiced")


FloatArray = npt.NDArray[np.float64]


BoolArray = npt.NDArray[np.bool_]


PITCH_CONFIDENCE_THRESHOLD = 0.2
"""Default voicing threshold of pitch detection (`/v1/pitch`, the Pitch deployment, `PitchDetector`): a frame
at least this confident is voiced when its signal repeats at the detected period (`models/pitch.py`)."""


@dataclass(frozen=True)
class PitchContour:
    """An F0 contour, one value per frame; all arrays `[N]`.

    `times_s` are frame centres (s), `f0_hz` the fundamental (Hz) and **0.0 where the frame is unvoiced**
    (0, not NaN, so the contour stays plain JSON and CSV), `confidence` the model's voicing score in [0, 1],
    `voiced` the `detect` call's voicing decision (confidence and periodicity, `models/pitch.py`), `hop_s`
    the frame spacing (s), `model` the weights that produced it.
    """

    times_s: FloatArray
    f0_hz: FloatArray
    confidence: FloatArray
    voiced: BoolArray
    hop_s: float
    model: ModelInfo | None = None

    def __post_init__(self) -> None:
        arrays = (self.times_s, self.f0_hz, self.confidence, self.voiced)
        if any(a.ndim != 1 for a in arrays) or len({len(a) for a in arrays}) != 1:
            shapes = [a.shape for a in arrays]
            raise ValueError(f"PitchContour arrays must be 1-D of one length, got shapes {shapes}")
        if not self.hop_s > 0:
            raise ValueError(f"hop_s must be positive, got {self.hop_s}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: the four arrays as lists, `hop_s`, and `model` (or None)."""
        return {
            "times_s": self.times_s.tolist(),
            "f0_hz": self.f0_hz.tolist(),
            "confidence": self.confidence.tolist(),
            "voiced": self.voiced.tolist(),
            "hop_s": self.hop_s,
            "model": None if self.model is None else self.model.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PitchContour:
        """Inverse of `to_dict`."""
        model = data.get("model")
        return cls(
            times_s=np.asarray(data["times_s"], dtype=np.float64),
            f0_hz=np.asarray(data["f0_hz"], dtype=np.float64),
            confidence=np.asarray(data["confidence"], dtype=np.float64),
            voiced=np.asarray(data["voiced"], dtype=np.bool_),
            hop_s=float(data["hop_s"]),
            model=None if model is None else ModelInfo(**model),
        )

    def to_csv(self) -> str:
        """CSV text with header `time_s,f0_hz,confidence,voiced`; voiced is `true`/`false`."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_CSV_HEADER)
        for t, f0, c, v in zip(self.times_s, self.f0_hz, self.confidence, self.voiced, strict=True):
            writer.writerow([f"{t:.6f}", f"{f0:.4f}", f"{c:.6f}", "true" if v else "false"])
        return buffer.getvalue()


@dataclass(frozen=True)
class Word:
    """One recognised word; times in seconds from the start of the audio."""

    start: float
    end: float
    text: str
    probability: float


@dataclass(frozen=True)
class Segment:
    """One decoded segment; times in seconds. The decoder's own facts come with it, as Whisper gives them:
    `seek` (the window's start in 10 ms mel frames from the start of the audio), `tokens` (its text
    token ids), the sampling `temperature` it was decoded at, `avg_logprob`, `compression_ratio` (gzip
    ratio of its text) and `no_speech_prob`."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...]
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class Transcript:
    """`language` is an ISO 639-1 code; an English-only model reports `en` with probability 1.0.
    `language_name`: the model's own English name for it (`german`, as OpenAI's API writes it), or ""."""

    language: str
    language_probability: float
    duration_s: float
    segments: tuple[Segment, ...]
    language_name: str = ""

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)


MIN_REFERENCE_S, MAX_REFERENCE_S = 5.0, 30.0


SILENCE_RMS = 1e-3  # -60 dBFS: a reference quieter than this holds no voice to clone


class InvalidReferenceError(AudioError):
    """A voice reference that cannot be cloned from; `code` says why."""

    code = "invalid_voice_reference"


class ReferenceTooShortError(InvalidReferenceError):
    code = "voice_reference_too_short"


class ReferenceTooLongError(InvalidReferenceError):
    code = "voice_reference_too_long"


class SilentReferenceError(InvalidReferenceError):
    code = "voice_reference_silent"


class EmptyTranscriptError(InvalidReferenceError):
    code = "voice_reference_transcript_empty"


@dataclass(frozen=True)
class VoiceReference:
    """A clip of the voice to clone, `audio` `[C, T]` at any rate (mixed to mono and resampled to the
    model's rate), 5 to 30 s long and not silent, with `transcript`, the words spoken in it.

    Raises a typed `InvalidReferenceError` (a `ValueError`) naming the bad value and the allowed range.
    """

    audio: Audio
    transcript: str

    def __post_init__(self) -> None:
        validate(self.audio)
        duration = self.audio.duration_s
        limits = f"{MIN_REFERENCE_S:g} to {MAX_REFERENCE_S:g} s"
        allowed = f"voice reference lasts {duration:.2f} s; it must last {limits}"
        if duration < MIN_REFERENCE_S:
            raise ReferenceTooShortError(allowed)
        if duration > MAX_REFERENCE_S:
            raise ReferenceTooLongError(allowed)
        rms = float(np.sqrt(np.mean(np.square(self.audio.samples, dtype=np.float64))))
        if rms < SILENCE_RMS:
            raise SilentReferenceError(
                f"voice reference is silent (RMS {rms:.2e}, below the floor of {SILENCE_RMS:g}, -60 dBFS)"
            )
        if not self.transcript.strip():
            raise EmptyTranscriptError(
                "voice reference transcript is empty; give the words spoken in the clip"
            )


@dataclass(frozen=True)
class ConvertedVoice:
    """One singing-voice conversion: the converted vocals `[1, T]` at the voice model's rate, the seed of
    its noise, the content encoder and the voice model that made it (each `debug-random` when so)."""

    audio: Audio
    seed: int
    encoder: ModelInfo
    voice: ModelInfo
